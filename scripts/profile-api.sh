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

server_url="$(bench_server_url)"
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

binary="$(build_release_app)"
token="$(seed_bench_database "$server_url" "$db" "$binary" 1000)"
export DATABASE_URL="${server_url%/*}/$db" APP_CONFIG_DIR="$REPO_ROOT/configuration"
id="$(psql "$DATABASE_URL" -Atc "SELECT id FROM todos LIMIT 1")"

log "starting todo-app under callgrind"
APP__SERVER__PORT=0 APP__ADMIN__PORT=0 valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$binary" serve > "$work/app.log" 2>"$work/valgrind.log" &
server_pid=$!
port="$(wait_for_api_port "$work/app.log" 60)" || { cat "$work/valgrind.log" >&2; exit 1; }

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
