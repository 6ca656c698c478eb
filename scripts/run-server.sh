#!/usr/bin/env bash
# Runs todo-app locally: uses $DATABASE_URL when it is reachable, otherwise a
# throwaway PostgreSQL cluster (installed with apt-get when missing), creates
# the database, applies the migrations, and serves the API on
# http://127.0.0.1:3000 (admin on :9000). Ctrl-C stops it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

ensure_cargo
ensure_build_packages

if [ -n "${DATABASE_URL:-}" ] && postgres_reachable "$DATABASE_URL"; then
    log "using DATABASE_URL (reachable)"
else
    if [ -n "${DATABASE_URL:-}" ]; then
        log "DATABASE_URL is set but not reachable; falling back to a local cluster"
    fi
    server_url="$(start_throwaway_postgres)"
    if ! psql "$server_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'todo'" | grep -q 1; then
        log "creating database todo"
        psql "$server_url" -qc 'CREATE DATABASE todo' >/dev/null
    fi
    export DATABASE_URL="${server_url%/postgres}/todo"
    log "DATABASE_URL=$DATABASE_URL"
fi

log "building todo-app (release)"
cargo build --release -p todo-app
binary="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/todo-app"
log "applying migrations"
"$binary" migrate
log "create an API key in another terminal with:"
log "  DATABASE_URL=$DATABASE_URL $binary keys create --owner \$USER"
log "serving on http://127.0.0.1:${PORT:-3000} (admin http://127.0.0.1:9000)"
exec "$binary" serve
