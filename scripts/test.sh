#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need (Debian and
# Python packages), makes sure PostgreSQL runs, then runs the Rust test suites
# of the workspace. Extra arguments go to the test runner.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

ensure_cargo
ensure_build_packages
# Server binaries for the tests that start their own PostgreSQL cluster, and
# pg_dump/pg_restore for the backup tests.
ensure_packages postgresql postgresql-client postgresql-contrib python3 python3-pip
# promtool (metrics checks) and a real Prometheus (remote_write tests);
# kill, mount/umount (tmpfs for disk-full tests) and runuser.
ensure_packages prometheus procps mount util-linux
if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
    log "installing moto[server] (S3-compatible test server)"
    python3 -m pip install --quiet 'moto[server]' 2>&1 | tail -n 2 >&2 \
        || as_root python3 -m pip install --quiet --break-system-packages 'moto[server]' >&2
fi

if [ -z "${TEST_DATABASE_URL:-}" ]; then
    if ensure_system_postgres; then
        # Plain TCP on loopback. With libpq's default (TLS when the server
        # offers it) one test process in about 3,000 aborted at exit with
        # "double free or corruption", most likely OpenSSL's atexit clean-up
        # racing a thread still closing its libpq connection (a database
        # executor's, before issue 14).
        export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    else
        export TEST_DATABASE_URL="$(start_throwaway_postgres)"
    fi
fi
postgres_reachable "$TEST_DATABASE_URL" || {
    echo "PostgreSQL at TEST_DATABASE_URL is not reachable" >&2
    exit 1
}
log "tests use PostgreSQL at ${TEST_DATABASE_URL%%\?*}"

status=0
if cargo nextest --version >/dev/null 2>&1; then
    log "running the workspace tests with cargo nextest"
    cargo nextest run --workspace --no-fail-fast "$@" || status=1
    # nextest does not run doctests.
    cargo test --workspace --doc --quiet || status=1
else
    log "running the workspace tests with cargo test"
    cargo test --workspace --no-fail-fast "$@" || status=1
fi

# The suites outside the Rust crates (tests/<suite>/test_*.py: the chart, the
# images, dashboards and alerts, the whole-pod drills) run with pytest against
# the binaries just built. Each suite's Debian packages are installed by
# tests/<suite>/packages.sh (sourced here, so it can use ensure_packages);
# Python packages come from tests/requirements.txt.
if compgen -G "tests/*/test_*.py" >/dev/null; then
    for packages_script in tests/*/packages.sh; do
        [ -f "$packages_script" ] && source "$packages_script"
    done
    ensure_python_requirements tests/requirements.txt
    cargo build --workspace --bins --quiet
    export TODO_BIN_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug"
    log "running the suites in tests/ with pytest (binaries from $TODO_BIN_DIR)"
    python3 -m pytest tests -q -p no:cacheprovider --ignore=tests/drills || status=1
    # The whole-pod drills (docs/operations.md) mostly wait on outages,
    # alerts and deadlines, so they run two at a time (pytest-xdist).
    log "running the whole-pod drills, two at a time"
    python3 -m pytest tests/drills -q -p no:cacheprovider -n 2 || status=1
fi
exit "$status"
