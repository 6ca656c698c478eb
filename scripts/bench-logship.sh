#!/usr/bin/env bash
# Benchmark of todo-sidecar's log shipper: generates SIZE_MIB (default 1100)
# MiB of realistic bunyan lines, ships them with `todo-sidecar run` (release
# build) to a local Loki-compatible HTTP receiver that only counts entries,
# and prints MiB/s, lines/s, CPU seconds and peak RSS of the sidecar
# (GNU time -v). The backlog is written before the sidecar starts, so the
# figure is the shipper's own throughput, not the generator's.
#
#   scripts/bench-logship.sh            # 1100 MiB, gzip off
#   GZIP=true SIZE_MIB=300 scripts/bench-logship.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1100}
GZIP=${GZIP:-false}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d /tmp/bench-logship.XXXXXX)
say() { echo "bench-logship: $*" >&2; }

RECEIVER_PID=""
TIME_PID=""
cleanup() {
  # The sidecar first (GNU time's child), then time itself.
  [[ -n "$TIME_PID" ]] && pkill -TERM -P "$TIME_PID" 2>/dev/null || true
  [[ -n "$TIME_PID" ]] && kill "$TIME_PID" 2>/dev/null || true
  [[ -n "$RECEIVER_PID" ]] && kill "$RECEIVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

[[ -x /usr/bin/time ]] || { say "GNU time is needed: apt-get install time"; exit 1; }

say "building todo-sidecar (release) into $TARGET_DIR"
cargo build --release -p todo-sidecar
BIN="$TARGET_DIR/release/todo-sidecar"

say "generating ${SIZE_MIB} MiB of bunyan lines into $WORK/app.log"
python3 - "$WORK/app.log" "$SIZE_MIB" <<'PY'
import random, sys
path, size = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
routes = ["/api/todos", "/api/todos/{id}", "/health/ready", "/api/openapi.json"]
methods = ["GET", "GET", "GET", "POST", "PATCH", "DELETE"]
statuses = [200, 200, 200, 201, 204, 404, 422, 503]
rng = random.Random(42)
written = lines = 0
with open(path, "w") as out:
    while written < size:
        chunk = []
        for _ in range(10000):
            n = lines
            status = rng.choice(statuses)
            level = 50 if status >= 500 else (40 if status >= 400 else 30)
            line = (
                '{"v":0,"name":"todo-app","msg":"[HTTP REQUEST - END]","level":%d,'
                '"hostname":"todo-backend-7f9c6d5b8-x2k4q","pid":1,'
                '"time":"2026-11-26T12:%02d:%02d.%06dZ","target":"todo_app::middleware",'
                '"line":88,"file":"app/src/middleware.rs","request_id":"%032x",'
                '"method":"%s","route":"%s","status":%d,"latency_ms":%.3f,'
                '"owner":"owner-%d","trace_id":"%032x","span_id":"%016x","n":%d}\n'
                % (level, (n // 60000000) % 60, (n // 1000000) % 60, n % 1000000,
                   rng.getrandbits(128), rng.choice(methods), rng.choice(routes), status,
                   rng.random() * 50, rng.randrange(100), rng.getrandbits(128),
                   rng.getrandbits(64), n)
            )
            chunk.append(line)
            lines += 1
        text = "".join(chunk)
        out.write(text)
        written += len(text)
print(lines, file=open(path + ".lines", "w"))
PY
LINES=$(cat "$WORK/app.log.lines")
BYTES=$(stat -c %s "$WORK/app.log")
say "generated $LINES lines, $BYTES bytes"

say "starting a counting receiver (Loki push API, counts entries only)"
python3 - "$WORK/port" <<'PY' &
import http.server, sys, threading, zlib
count = 0
lock = threading.Lock()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = zlib.decompress(body, 47)
        # Each entry opens with ["<unix ns>", and ns timestamps start with 1.
        with lock:
            count += body.count(b'["1')
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        body = str(count).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
open(sys.argv[1], "w").write(str(server.server_address[1]))
server.serve_forever()
PY
RECEIVER_PID=$!
for _ in $(seq 100); do [[ -s "$WORK/port" ]] && break; sleep 0.1; done
PORT=$(cat "$WORK/port")
count() { curl -fsS "http://127.0.0.1:$PORT/count"; }

say "shipping with $BIN run under /usr/bin/time -v (gzip: $GZIP)"
START=$(date +%s.%N)
env -i PATH="$PATH" HOME="${HOME:-/root}" \
  SIDECAR__ADMIN__PORT=0 \
  SIDECAR__BACKUP__ENABLED=false \
  SIDECAR__AGGREGATE__ENABLED=false \
  SIDECAR__LOGSHIP__PATHS="$WORK/app.log" \
  SIDECAR__LOGSHIP__CHECKPOINT_PATH="$WORK/state/checkpoint.json" \
  SIDECAR__LOGSHIP__DEAD_LETTER__PATH="$WORK/state/dead-letter.ndjson" \
  SIDECAR__LOGSHIP__SINKS__LOKI__URL="http://127.0.0.1:$PORT" \
  SIDECAR__LOGSHIP__SINKS__LOKI__HTTP__GZIP="$GZIP" \
  /usr/bin/time -v -o "$WORK/time.txt" "$BIN" run >"$WORK/sidecar.log" 2>&1 &
TIME_PID=$!
DEADLINE=$((SECONDS + 900))
until [[ "$(count)" -ge "$LINES" ]]; do
  if ! kill -0 "$TIME_PID" 2>/dev/null; then
    say "the sidecar exited early:"; tail -20 "$WORK/sidecar.log" >&2; exit 1
  fi
  if (( SECONDS > DEADLINE )); then
    say "not all lines arrived within 900 s ($(count) of $LINES):"; tail -20 "$WORK/sidecar.log" >&2; exit 1
  fi
  sleep 0.2
done
END=$(date +%s.%N)
say "all $LINES lines counted by the receiver; stopping the sidecar"
SIDECAR_PID=$(pgrep -P "$TIME_PID")
kill -TERM "$SIDECAR_PID"
wait "$TIME_PID" || true
TIME_PID=""

RECEIVED=$(count)
python3 - "$START" "$END" "$BYTES" "$LINES" "$RECEIVED" "$WORK/time.txt" "$GZIP" <<'PY'
import sys
start, end, size, lines, received, time_file, gzip = sys.argv[1:]
seconds = float(end) - float(start)
fields = {}
for line in open(time_file):
    key, _, value = line.strip().rpartition(": ")
    fields[key] = value
cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
rss_mib = int(fields["Maximum resident set size (kbytes)"]) / 1024
print(f"shipped        {int(size) / 2**20:.0f} MiB, {int(lines)} lines (receiver counted {received}), gzip {gzip}")
print(f"wall time      {seconds:.2f} s")
print(f"throughput     {int(size) / 2**20 / seconds:.1f} MiB/s, {int(lines) / seconds:,.0f} lines/s")
print(f"sidecar CPU    {cpu:.2f} s (user {fields['User time (seconds)']}, system {fields['System time (seconds)']})")
print(f"sidecar RSS    {rss_mib:.1f} MiB peak")
PY
