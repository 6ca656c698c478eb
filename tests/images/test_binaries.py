"""The binaries the images ship are built the way the images need them.

todo-app exports traces with reqwest (through todo-common's telemetry); its
TLS (rustls) must come from todo-app's own dependencies (todo-common's
included), not from the sidecar's through the workspace's feature unification, or `cargo build -p todo-app` (todo-app built alone)
could not reach an https:// collector. app/tests/api/observability.rs
exports to one; this keeps the dependency from regressing silently. Cheap:
`cargo tree` reads the lock file and builds nothing."""

import shutil
import subprocess

import pytest


def features_of(repo_root, package: str, crate: str) -> set[str]:
    """The features of `crate` when `package` alone is built (normal edges)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is not on PATH (scripts/test.sh makes sure it is)")
    result = subprocess.run(
        [cargo, "tree", "--package", package, "--edges", "features,normal", "--prefix", "none",
         "--offline", "--locked"],
        cwd=repo_root, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    prefix = f'{crate} feature "'
    return {
        line[len(prefix):line.index('"', len(prefix))]
        for line in result.stdout.splitlines()
        if line.startswith(prefix)
    }


def test_todo_app_alone_has_reqwest_with_rustls(repo_root):
    features = features_of(repo_root, "todo-app", "reqwest")

    assert "blocking" in features, features
    assert "__rustls" in features, f"reqwest has no TLS in todo-app alone: {sorted(features)}"


def test_todo_app_alone_has_one_rustls_crypto_provider(repo_root):
    # ring, installed by main; a second (aws-lc-rs) makes rustls panic when
    # it builds a configuration without one named (docs/DEPENDENCIES traps).
    features = features_of(repo_root, "todo-app", "rustls")

    assert "ring" in features, features
    assert "aws_lc_rs" not in features and "aws-lc-rs" not in features, features
