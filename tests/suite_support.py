"""What every suite in tests/ shares: where the repository and the built binaries
are, and free loopback ports for the servers a test starts. Import it as
`from suite_support import free_port` (tests/conftest.py puts this folder on
sys.path). It is not named conftest: each suite may have a conftest.py of its
own, and `from conftest import` would get whichever pytest loaded last."""

import os
import pathlib
import socket

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
