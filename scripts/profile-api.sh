#!/usr/bin/env bash
# Counts the CPU instructions todo-app spends per request with callgrind,
# which repeats exactly whatever else the machine is doing (unlike requests/s
# on a shared machine). Start-up and a 2 s warm-up are left out: counting
# starts when the connections are open and the statements prepared. Prints
# instructions per request and the functions that cost the most. Uses the
# PostgreSQL at $BENCH_DATABASE_URL (a server URL; default the local one) and
# drops its scratch database.
# Variables: ENDPOINT (get: GET /api/todos/{id}, the default; post: POST
# /api/todos), DURATION (wrk run under callgrind, default 15s), TOP (default 25),
# BENCH_BINARY (profile another build of todo-app instead of building this one).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

ensure_cargo
ensure_build_packages
ensure_packages wrk valgrind

server_url="$(bench_server_url)"
duration="${DURATION:-15s}"
top="${TOP:-25}"
endpoint="${ENDPOINT:-get}"
case "$endpoint" in
    get | post) ;;
    *) echo "ENDPOINT must be get or post, not $endpoint" >&2; exit 2 ;;
esac
db="todo_profile_$$"
work="$(mktemp -d)"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill -INT "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    psql "$server_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    [ -n "${PROFILE_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

binary="${BENCH_BINARY:-$(build_release_app)}"
token="$(seed_bench_database "$server_url" "$db" "$binary" 1000)"
export DATABASE_URL="${server_url%/*}/$db" APP_CONFIG_DIR="$REPO_ROOT/configuration"
id="$(psql "$DATABASE_URL" -Atc "SELECT id FROM todos LIMIT 1")"

log "starting todo-app under callgrind"
APP__SERVER__PORT=0 APP__ADMIN__PORT=0 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/callgrind.out" \
    "$binary" serve > "$work/app.log" 2>"$work/valgrind.log" &
server_pid=$!
port="$(wait_for_api_port "$work/app.log" 60)" || { cat "$work/valgrind.log" >&2; exit 1; }

cat > "$work/request.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $token"
if "$endpoint" == "post" then
  wrk.method = "POST"
  wrk.path = "/api/todos"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"title": "benchmark todo", "description": "created by wrk"}'
else
  wrk.path = "/api/todos/$id"
end
LUA
log "warming up for 2 s, then counting"
wrk -t1 -c4 -d2s -s "$work/request.lua" "http://127.0.0.1:$port" > /dev/null
callgrind_control --instr=on "$server_pid" > /dev/null 2>&1

log "wrk -t1 -c4 -d$duration on $endpoint"
requests="$(wrk -t1 -c4 -d"$duration" -s "$work/request.lua" "http://127.0.0.1:$port" \
    | awk '/requests in/ {print $1}')"
callgrind_control --instr=off "$server_pid" > /dev/null 2>&1
kill -INT "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
profile="$work/callgrind.out"

total="$(callgrind_annotate "$profile" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
echo
echo "requests served: $requests"
echo "instructions counted: $total"
awk -v t="$total" -v r="$requests" 'BEGIN {printf "instructions per request: %.0f\n", t / r}'
echo
echo "top $top functions by own instructions:"
callgrind_annotate --inclusive=no "$profile" | sed -n '/file:function/,$p' | sed -n "3,$((top + 2))p" | cut -c1-160
