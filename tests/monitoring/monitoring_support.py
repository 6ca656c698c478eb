"""Helpers of the monitoring suite (tests/monitoring): the binaries its
packages.sh installs, starting servers that are stopped whatever happens,
and HTTP. A module of its own, not a conftest: several suites have one."""

from __future__ import annotations

import contextlib
import json
import pathlib
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve().parent


from suite_support import free_port  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)


def require_binary(name: str) -> str:
    """The path of a binary tests/monitoring/packages.sh installs; fails (never skips) without it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: tests/monitoring/packages.sh installs it (scripts/test.sh sources it)")
    return path


def http_get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def wait_until_ready(url: str, process: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode} before it was ready")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise AssertionError(f"{what} was not ready at {url} within {timeout} s")


@contextlib.contextmanager
def running(command: list[str], ready_url: str, what: str, log_path: pathlib.Path):
    """Starts `command`, waits for `ready_url` to answer 200, yields the
    process, and stops it (SIGTERM, then SIGKILL) whatever happens."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_until_ready(ready_url, process, what)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log_path.read_text(errors='replace')[-4000:]}") from None
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
