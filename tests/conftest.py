"""Fixtures shared by every suite in tests/: where the repository and the built
binaries are, and free loopback ports for the servers a test starts."""

import os
import pathlib
import socket

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def bin_dir() -> pathlib.Path:
    """The folder holding the debug builds of todo-app and todo-sidecar
    (scripts/test.sh exports TODO_BIN_DIR after building them)."""
    explicit = os.environ.get("TODO_BIN_DIR")
    if explicit:
        return pathlib.Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO_ROOT / "target"))
    return pathlib.Path(target) / "debug"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
