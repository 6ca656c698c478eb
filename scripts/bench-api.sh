#!/usr/bin/env bash
# Benchmarks todo-app (release build, everything on: auth, validation,
# metrics, logs) with wrk: GET /api/todos/{id} over random ids of 10,000
# seeded todos, and POST /api/todos. 2 threads, 32 connections, 10 s, three
# runs each; prints requests/s, p50/p99 latency and todo-app's CPU time per
# request (user + kernel, from /proc: steadier than requests/s on a shared
# machine) of every run, and the medians.
# Uses the PostgreSQL at $BENCH_DATABASE_URL (a server URL; default the local
# one) and drops its scratch database at the end. BENCH_BINARY=path measures
# another build of todo-app (an older commit, say) instead of building this one.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

ensure_cargo
ensure_build_packages
ensure_packages wrk

server_url="$(bench_server_url)"
duration="${BENCH_DURATION:-10s}"
runs="${BENCH_RUNS:-3}"
db="todo_bench_$$"
database_url="${server_url%/*}/$db"
work="$(mktemp -d)"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    psql "$server_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

binary="${BENCH_BINARY:-$(build_release_app)}"
token="$(seed_bench_database "$server_url" "$db" "$binary" 10000)"
psql "$database_url" -Atqc "SELECT id FROM todos" > "$work/ids.txt"
export DATABASE_URL="$database_url" APP_CONFIG_DIR="$REPO_ROOT/configuration"

log "starting todo-app (logs to $work/app.log)"
APP__SERVER__PORT=0 APP__ADMIN__PORT=0 "$binary" serve > "$work/app.log" 2>&1 &
server_pid=$!
port="$(wait_for_api_port "$work/app.log" 10)"

cat > "$work/get.lua" <<LUA
local ids = {}
for line in io.lines("$work/ids.txt") do ids[#ids + 1] = line end
math.randomseed(os.time())
wrk.headers["Authorization"] = "Bearer $token"
request = function()
  return wrk.format("GET", "/api/todos/" .. ids[math.random(#ids)])
end
LUA
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.path = "/api/todos"
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title": "benchmark todo", "description": "created by wrk"}'
LUA

# CPU time todo-app has used, in clock ticks (user + kernel).
server_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }

# Prints "rps p50_ms p99_ms non2xx cpu_us_per_request" for one wrk run.
run_wrk() {
    local script="$1" out ticks_before ticks_after
    ticks_before="$(server_ticks)"
    out="$(wrk -t2 -c32 -d"$duration" --latency -s "$script" "http://127.0.0.1:$port" 2>&1)"
    ticks_after="$(server_ticks)"
    echo "$out" >> "$work/wrk.log"
    local rps p50 p99 errors requests cpu
    rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
    p50="$(echo "$out" | awk '$1 == "50%" {print $2}')"
    p99="$(echo "$out" | awk '$1 == "99%" {print $2}')"
    errors="$(echo "$out" | awk '/Non-2xx/ {print $5}')"
    requests="$(echo "$out" | awk '/requests in/ {print $1}')"
    cpu="$(awk -v t="$((ticks_after - ticks_before))" -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN {printf "%.1f", t / hz * 1e6 / n}')"
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") ${errors:-0} $cpu"
}
to_ms() {
    case "$1" in
        *us) awk -v v="${1%us}" 'BEGIN {printf "%.2f", v / 1000}' ;;
        *ms) awk -v v="${1%ms}" 'BEGIN {printf "%.2f", v}' ;;
        *s) awk -v v="${1%s}" 'BEGIN {printf "%.2f", v * 1000}' ;;
        *) echo "$1" ;;
    esac
}
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

for name in get post; do
    log "wrk $name: $runs runs of $duration"
    : > "$work/$name.results"
    for run in $(seq 1 "$runs"); do
        result="$(run_wrk "$work/$name.lua")"
        echo "$result" >> "$work/$name.results"
        read -r rps p50 p99 errors cpu <<< "$result"
        printf '  %-4s run %d: %10s req/s  p50 %6s ms  p99 %6s ms  non-2xx %s  todo-app CPU %5s us/request\n' \
            "$name" "$run" "$rps" "$p50" "$p99" "$errors" "$cpu"
    done
done

echo
build="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -n "${BENCH_BINARY:-}" ] && build="$BENCH_BINARY"
echo "median of $runs runs (wrk -t2 -c32 -d$duration, $(nproc) cores, $build):"
for name in get post; do
    label="GET /api/todos/{id}"
    [ "$name" = post ] && label="POST /api/todos"
    rps="$(awk '{print $1}' "$work/$name.results" | median)"
    p50="$(awk '{print $2}' "$work/$name.results" | median)"
    p99="$(awk '{print $3}' "$work/$name.results" | median)"
    cpu="$(awk '{print $5}' "$work/$name.results" | median)"
    printf '  %-22s %10.0f req/s  p50 %6s ms  p99 %6s ms  todo-app CPU %5s us/request\n' \
        "$label" "$rps" "$p50" "$p99" "$cpu"
done
