#!/usr/bin/env bash
# Counts the CPU instructions todo-app spends per GET /api/todos/{id} with
# callgrind, which repeats exactly whatever else the machine is doing (unlike
# requests/s on a shared machine). Prints instructions per request and the
# functions that cost the most. Uses the PostgreSQL at $BENCH_DATABASE_URL
# (a server URL; default the local one) and drops its scratch database.
# Variables: DURATION (wrk run under callgrind, default 15s), TOP (default 25).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

ensure_cargo
ensure_build_packages
ensure_packages wrk valgrind

server_url="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! postgres_reachable "$server_url"; then
    ensure_system_postgres || server_url="$(start_throwaway_postgres)"
fi
duration="${DURATION:-15s}"
top="${TOP:-25}"
db="todo_profile_$$"
work="$(mktemp -d)"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -INT "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    psql "$server_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

log "building todo-app (release)"
cargo build --release -p todo-app --quiet
binary="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/todo-app"

log "seeding $db with 1,000 todos"
psql "$server_url" -qc "CREATE DATABASE $db" >/dev/null
export DATABASE_URL="${server_url%/*}/$db" APP_CONFIG_DIR="$REPO_ROOT/configuration"
"$binary" migrate 2>/dev/null
token="$("$binary" keys create --owner profile 2>/dev/null)"
psql "$DATABASE_URL" -qc "INSERT INTO todos (id, owner, title) SELECT gen_random_uuid(), 'profile', 'todo ' || n FROM generate_series(1, 1000) AS n" >/dev/null
id="$(psql "$DATABASE_URL" -Atc "SELECT id FROM todos LIMIT 1")"

log "starting todo-app under callgrind"
APP__SERVER__PORT=0 APP__ADMIN__PORT=0 valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$binary" serve > "$work/app.log" 2>"$work/valgrind.log" &
server_pid=$!
port=""
for _ in $(seq 1 300); do
    port="$(grep -o '"api_port":[0-9]*' "$work/app.log" 2>/dev/null | head -n 1 | cut -d: -f2 || true)"
    [ -n "$port" ] && break
    sleep 0.2
done
[ -n "$port" ] || { echo "todo-app did not start:"; cat "$work/app.log" "$work/valgrind.log"; exit 1; } >&2

log "wrk -t1 -c4 -d$duration on GET /api/todos/{id}"
requests="$(wrk -t1 -c4 -d"$duration" -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$port/api/todos/$id" | awk '/requests in/ {print $1}')"
kill -INT "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""

total="$(callgrind_annotate "$work/callgrind.out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
echo
echo "requests served: $requests"
echo "instructions in total: $total (start-up included)"
awk -v t="$total" -v r="$requests" 'BEGIN {printf "instructions per request: %.0f\n", t / r}'
echo
echo "top $top functions by own instructions:"
callgrind_annotate --inclusive=no "$work/callgrind.out" | sed -n '/file:function/,$p' | sed -n "3,$((top + 2))p" | cut -c1-160
