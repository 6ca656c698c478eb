#!/usr/bin/env bash
# Benchmarks todo-app (release build, everything on: auth, validation,
# metrics, the log line per request, traces exported to an OTLP collector
# that is down) side by side with two anchors, in one run, interleaved:
#   - express: the design todo-app replaces (Express 4 + node-postgres),
#   - actix-proto: the bare calibration (actix-web + 16 SyncArbiter
#     executors + diesel, nothing else),
#   - and, with BENCH_BASELINE=path, another build of todo-app (the
#     "before" of a change), and with BENCH_EXTRA="name=path ..." more
#     (candidates of a design).
# Each round runs wrk (2 threads, 32 connections, BENCH_DURATION, default 8 s)
# on GET /api/todos/{id} (random ids of 10,000 seeded todos) and POST
# /api/todos against every server in turn; BENCH_RUNS rounds (default 3).
# Prints every run (requests/s, p50/p99, the server's CPU time per request,
# user + kernel from /proc) and the medians, the ratios to Express, and each
# server's peak RSS.
# Then the plan-cache phase: on a fresh database without statistics (and
# autovacuum off, as when autoanalyze lags a burst), GET, then POST for 6 s
# and top the owner up to 100,000 todos, then GET again, then GET on a
# restarted server: a lookup by id must cost the same after the growth.
#
# The anchors live outside the repository (ANCHORS_DIR, default
# /var/cache/todo-backend/anchors), copied from ANCHORS_SRC (default
# ../shared/anchors beside the repository, else /work/shared/anchors) and
# built there on first use (npm install; cargo build --release with a target
# directory of their own). BENCH_ANCHORS=0 leaves them out.
# Uses the PostgreSQL at $BENCH_DATABASE_URL (a server URL; default the local
# one) and drops its scratch databases at the end. BENCH_BINARY=path
# measures another build of todo-app instead of building this one.
# BENCH_DB_OPTIONS (e.g. "?sslmode=disable") is appended to todo-app's
# database URL: libpq's default sslmode=prefer uses TLS when the server
# offers it, which node-postgres (the Express anchor) does not.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

ensure_cargo
ensure_build_packages
ensure_packages wrk curl

server_url="$(bench_server_url)"
duration="${BENCH_DURATION:-8s}"
runs="${BENCH_RUNS:-3}"
anchors="${BENCH_ANCHORS:-1}"
anchors_dir="${ANCHORS_DIR:-/var/cache/todo-backend/anchors}"
work="$(mktemp -d)"
databases=()
pids=()
cleanup() {
    local pid db
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
    for db in "${databases[@]}"; do
        psql "$server_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for_http() {
    local url="$1" tries
    for tries in $(seq 1 100); do
        curl -s -o /dev/null "$url" && return 0
        sleep 0.1
    done
    echo "nothing answers at $url" >&2
    return 1
}

# --- the anchors ---
prepare_anchors() {
    local src="${ANCHORS_SRC:-}"
    if [ -z "$src" ]; then
        for src in "$REPO_ROOT/../shared/anchors" /work/shared/anchors; do
            [ -d "$src/express-todo" ] && break
        done
    fi
    mkdir -p "$anchors_dir"
    if [ ! -d "$anchors_dir/express-todo/node_modules" ]; then
        [ -d "$src/express-todo" ] || { echo "no anchors in $src: set ANCHORS_SRC or BENCH_ANCHORS=0" >&2; exit 1; }
        # The machine may have Node.js from elsewhere than Debian (whose npm
        # package then conflicts): only install when there is none.
        command -v npm >/dev/null || ensure_packages nodejs npm
        log "installing the Express anchor in $anchors_dir"
        cp -a "$src/express-todo" "$anchors_dir/"
        (cd "$anchors_dir/express-todo" && npm install --no-audit --no-fund --silent >&2)
    fi
    if [ ! -x "$anchors_dir/actix-proto-target/release/actix-proto" ]; then
        [ -d "$src/actix-proto" ] || { echo "no anchors in $src: set ANCHORS_SRC or BENCH_ANCHORS=0" >&2; exit 1; }
        log "building the actix-proto calibration in $anchors_dir (release)"
        rm -rf "$anchors_dir/actix-proto"
        cp -a "$src/actix-proto" "$anchors_dir/"
        CARGO_TARGET_DIR="$anchors_dir/actix-proto-target" \
            cargo build --release --quiet --manifest-path "$anchors_dir/actix-proto/Cargo.toml"
    fi
}

# --- the servers: NAME -> port, pid, token, ids file ---
declare -A port pid token ids
names=()

start_todo_app() {
    local name="$1" binary="$2" db="todo_bench_${1//-/_}_$$"
    databases+=("$db")
    token[$name]="$(seed_bench_database "$server_url" "$db" "$binary" 10000)"
    ids[$name]="$work/$name.ids"
    psql "${server_url%/*}/$db" -Atqc "SELECT id FROM todos" > "${ids[$name]}"
    log "starting $name (logs in $work/$name.log)"
    # Traces on, to a collector that is down: exporting must not cost throughput.
    DATABASE_URL="${server_url%/*}/$db${BENCH_DB_OPTIONS:-}" APP_CONFIG_DIR="$REPO_ROOT/configuration" \
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$(free_port)" \
        APP__SERVER__PORT=0 APP__ADMIN__PORT=0 "$binary" serve > "$work/$name.log" 2>&1 &
    pid[$name]=$!
    pids+=("${pid[$name]}")
    port[$name]="$(wait_for_api_port "$work/$name.log" 20)"
    names+=("$name")
}

start_anchors() {
    local db="todo_bench_anchor_$$" url
    url="${server_url%/*}/$db"
    databases+=("$db")
    log "seeding $db (the anchors' original todos table) with 10000 todos"
    psql "$server_url" -qc "CREATE DATABASE $db" >/dev/null
    psql "$url" -q -f "$anchors_dir/express-todo/schema.sql" >/dev/null
    psql "$url" -qc "INSERT INTO todos (title, description) SELECT 'todo ' || n, 'seeded'
        FROM generate_series(1, 10000) AS n" -c "VACUUM ANALYZE" >/dev/null
    psql "$url" -Atqc "SELECT id FROM todos" > "$work/anchor.ids"
    local name
    for name in express actix-proto; do
        port[$name]="$(free_port)"
        token[$name]=""
        ids[$name]="$work/anchor.ids"
        case "$name" in
            express) (cd "$anchors_dir/express-todo" && DATABASE_URL="$url" PORT="${port[$name]}" POOL_MAX=16 \
                exec node server.js) > "$work/$name.log" 2>&1 & ;;
            actix-proto) DATABASE_URL="$url" PORT="${port[$name]}" EXECUTORS=16 \
                "$anchors_dir/actix-proto-target/release/actix-proto" > "$work/$name.log" 2>&1 & ;;
        esac
        pid[$name]=$!
        pids+=("${pid[$name]}")
        wait_for_http "http://127.0.0.1:${port[$name]}/api/todos/$(head -n 1 "$work/anchor.ids")"
        names+=("$name")
    done
}

write_scripts() {
    local name="$1"
    cat > "$work/$name.get.lua" <<LUA
local ids = {}
for line in io.lines("${ids[$name]}") do ids[#ids + 1] = line end
math.randomseed(os.time())
local token = "${token[$name]}"
if token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
request = function()
  return wrk.format("GET", "/api/todos/" .. ids[math.random(#ids)])
end
LUA
    cat > "$work/$name.post.lua" <<LUA
wrk.method = "POST"
wrk.path = "/api/todos"
local token = "${token[$name]}"
if token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title": "benchmark todo", "description": "created by wrk"}'
LUA
}

# CPU time a process has used, in clock ticks (user + kernel, its threads included).
# User and kernel CPU ticks of a process so far.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

to_ms() {
    case "$1" in
        *us) awk -v v="${1%us}" 'BEGIN {printf "%.2f", v / 1000}' ;;
        *ms) awk -v v="${1%ms}" 'BEGIN {printf "%.2f", v}' ;;
        *s) awk -v v="${1%s}" 'BEGIN {printf "%.2f", v * 1000}' ;;
        *) echo "$1" ;;
    esac
}
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# Prints "rps p50_ms p99_ms non2xx cpu_us_per_request kernel_percent" for one wrk run of
# script $2 against server $1 for $3.
run_wrk() {
    local name="$1" script="$2" length="$3" out before after user_before kernel_before user_after kernel_after
    read -r user_before kernel_before <<< "$(cpu_ticks "${pid[$name]}")"
    out="$(wrk -t2 -c32 -d"$length" --latency -s "$script" "http://127.0.0.1:${port[$name]}" 2>&1)"
    read -r user_after kernel_after <<< "$(cpu_ticks "${pid[$name]}")"
    before=$((user_before + kernel_before))
    after=$((user_after + kernel_after))
    echo "== $name $script" >> "$work/wrk.log"
    echo "$out" >> "$work/wrk.log"
    local rps p50 p99 errors requests cpu kernel_share
    rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
    p50="$(echo "$out" | awk '$1 == "50%" {print $2}')"
    p99="$(echo "$out" | awk '$1 == "99%" {print $2}')"
    errors="$(echo "$out" | awk '/Non-2xx/ {print $5}')"
    requests="$(echo "$out" | awk '/requests in/ {print $1}')"
    cpu="$(awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN {printf "%.1f", t / hz * 1e6 / n}')"
    # The kernel's share of that CPU time (system calls, wake-ups, the TCP stack).
    kernel_share="$(awk -v k="$((kernel_after - kernel_before))" -v t="$((after - before))" \
        'BEGIN {printf "%.0f", (t > 0 ? 100 * k / t : 0)}')"
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") ${errors:-0} $cpu $kernel_share"
}

binary="${BENCH_BINARY:-$(build_release_app)}"
build="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -n "${BENCH_BINARY:-}" ] && build="$BENCH_BINARY"
[ "$anchors" = 1 ] && prepare_anchors

log "load before the run: $(uptime)"
[ "$anchors" = 1 ] && start_anchors
[ -n "${BENCH_BASELINE:-}" ] && start_todo_app todo-app-before "$BENCH_BASELINE"
start_todo_app todo-app "$binary"
for extra in ${BENCH_EXTRA:-}; do start_todo_app "${extra%%=*}" "${extra#*=}"; done

for name in "${names[@]}"; do
    write_scripts "$name"
    # Connections opened, statements prepared, JIT warm (node).
    wrk -t2 -c32 -d2s -s "$work/$name.get.lua" "http://127.0.0.1:${port[$name]}" > /dev/null
    : > "$work/$name.get.results"
    : > "$work/$name.post.results"
done

for run in $(seq 1 "$runs"); do
    for endpoint in get post; do
        log "round $run of $runs: $endpoint, $duration per server"
        for name in "${names[@]}"; do
            result="$(run_wrk "$name" "$work/$name.$endpoint.lua" "$duration")"
            echo "$result" >> "$work/$name.$endpoint.results"
            read -r rps p50 p99 errors cpu kernel_share <<< "$result"
            printf '  %-16s %-4s run %d: %10s req/s  p50 %6s ms  p99 %6s ms  non-2xx %s  CPU %6s us/request (kernel %s%%)\n' \
                "$name" "$endpoint" "$run" "$rps" "$p50" "$p99" "$errors" "$cpu" "$kernel_share"
        done
    done
done

echo
echo "medians of $runs rounds (wrk -t2 -c32 -d$duration, $(nproc) cores, todo-app $build):"
declare -A median_rps
for endpoint in get post; do
    label="GET /api/todos/{id}"
    [ "$endpoint" = post ] && label="POST /api/todos"
    echo "  $label"
    for name in "${names[@]}"; do
        results="$work/$name.$endpoint.results"
        rps="$(awk '{print $1}' "$results" | median)"
        median_rps[$name.$endpoint]="$rps"
        printf '    %-16s %10.0f req/s  p50 %6s ms  p99 %6s ms  CPU %6s us/request (kernel %s%%)\n' "$name" "$rps" \
            "$(awk '{print $2}' "$results" | median)" "$(awk '{print $3}' "$results" | median)" \
            "$(awk '{print $5}' "$results" | median)" "$(awk '{print $6}' "$results" | median)"
    done
done
if [ "$anchors" = 1 ]; then
    echo "  ratios to express (medians):"
    for name in "${names[@]}"; do
        [ "$name" = express ] && continue
        printf '    %-16s GET %5.2fx   POST %5.2fx\n' "$name" \
            "$(awk -v a="${median_rps[$name.get]}" -v b="${median_rps[express.get]}" 'BEGIN {print a / b}')" \
            "$(awk -v a="${median_rps[$name.post]}" -v b="${median_rps[express.post]}" 'BEGIN {print a / b}')"
    done
fi
echo "  peak RSS:"
for name in "${names[@]}"; do
    printf '    %-16s %6.1f MiB\n' "$name" "$(awk '/VmHWM/ {print $2 / 1024}' "/proc/${pid[$name]}/status")"
done
log "load after the run: $(uptime)"

# --- the plan-cache phase ---
# GET req/s of server $1 over $2 seconds.
get_rps() {
    run_wrk "$1" "$work/$1.get.lua" "$2" | awk '{print $1}'
}
plan_cache_phase() {
    local name="$1" binary="$2" db="todo_bench_growth_${1//-/_}_$$" url
    url="${server_url%/*}/$db"
    databases+=("$db")
    psql "$server_url" -qc "CREATE DATABASE $db" >/dev/null
    DATABASE_URL="$url" APP_CONFIG_DIR="$REPO_ROOT/configuration" "$binary" migrate 2>/dev/null
    # No statistics, and none while the table grows: autoanalyze lagging.
    psql "$url" -qc "ALTER TABLE todos SET (autovacuum_enabled = false)" \
        -c "INSERT INTO todos (id, owner, title, created_at)
            SELECT gen_random_uuid(), 'bench', 'todo ' || n, now() - n * interval '1 ms'
            FROM generate_series(1, 1000) AS n" >/dev/null
    token[$name]="$(DATABASE_URL="$url" APP_CONFIG_DIR="$REPO_ROOT/configuration" \
        "$binary" keys create --owner bench 2>/dev/null)"
    ids[$name]="$work/$name.ids"
    psql "$url" -Atqc "SELECT id FROM todos" > "${ids[$name]}"
    write_scripts "$name"
    local serve=(env DATABASE_URL="$url${BENCH_DB_OPTIONS:-}" APP_CONFIG_DIR="$REPO_ROOT/configuration"
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$(free_port)"
        APP__SERVER__PORT=0 APP__ADMIN__PORT=0 "$binary" serve)
    "${serve[@]}" > "$work/$name.log" 2>&1 &
    pid[$name]=$!
    pids+=("${pid[$name]}")
    port[$name]="$(wait_for_api_port "$work/$name.log" 20)"
    local fresh grown restarted count
    fresh="$(get_rps "$name" "$duration")"
    run_wrk "$name" "$work/$name.post.lua" 6s > /dev/null
    psql "$url" -qc "INSERT INTO todos (id, owner, title, created_at)
        SELECT gen_random_uuid(), 'bench', 'grown ' || n, now() - n * interval '1 ms'
        FROM generate_series(1, GREATEST(0, 100000 - (SELECT count(*) FROM todos))) AS n" >/dev/null
    count="$(psql "$url" -Atqc "SELECT count(*) FROM todos WHERE owner = 'bench'")"
    grown="$(get_rps "$name" "$duration")"
    kill "${pid[$name]}" && wait "${pid[$name]}" 2>/dev/null || true
    "${serve[@]}" > "$work/$name.restarted.log" 2>&1 &
    pid[$name]=$!
    pids+=("${pid[$name]}")
    port[$name]="$(wait_for_api_port "$work/$name.restarted.log" 20)"
    restarted="$(get_rps "$name" "$duration")"
    printf '  %-16s GET %8.0f req/s fresh (1,000 todos) · %8.0f after growth to %s · %8.0f on a restarted server · after growth / restarted %.2f\n' \
        "$name" "$fresh" "$grown" "$count" "$restarted" \
        "$(awk -v a="$grown" -v b="$restarted" 'BEGIN {print a / b}')"
    kill "${pid[$name]}" && wait "${pid[$name]}" 2>/dev/null || true
}

echo
echo "plan cache: GET by id before and after one owner grew to 100,000 todos under a running server:"
# The other servers are idle from here on; stop them so they cost nothing.
for name in "${names[@]}"; do kill "${pid[$name]}" 2>/dev/null && wait "${pid[$name]}" 2>/dev/null || true; done
[ -n "${BENCH_BASELINE:-}" ] && plan_cache_phase growth-before "$BENCH_BASELINE"
plan_cache_phase growth "$binary"
