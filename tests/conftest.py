"""Fixtures shared by every suite in tests/. The plain helpers live in
suite_support.py (import them from there, not from conftest)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from suite_support import REPO_ROOT, bin_dir  # noqa: E402


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def binaries() -> pathlib.Path:
    path = bin_dir()
    for name in ("todo-app", "todo-sidecar"):
        if not (path / name).exists():
            pytest.fail(f"{path / name} is missing: build the workspace first (scripts/test.sh does)")
    return path
