#!/usr/bin/env bash
# Benchmarks one aggregation pass of the sidecar (parse the app's exposition,
# apply the rules, the cardinality guard, encode) on a generated exposition of
# SERIES series (mixed types, realistic labels): median time per scrape over
# RUNS runs, MB/s, and the peak memory of the whole process (/usr/bin/time -v).
#
# Variables: SERIES (default 10000), RUNS (default 21), CARGO_TARGET_DIR
# (where the release build goes, default target).
set -euo pipefail

SERIES=${SERIES:-10000}
RUNS=${RUNS:-21}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say() { echo "==> $*" >&2; }

say "building the bench_aggregate example (release) into $TARGET_DIR"
(cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --quiet --release -p todo-sidecar --example bench_aggregate)
BIN="$TARGET_DIR/release/examples/bench_aggregate"
[[ "$TARGET_DIR" = /* ]] || BIN="$REPO/$BIN"

say "parsing and aggregating $SERIES series, $RUNS runs, under /usr/bin/time -v"
/usr/bin/time -v -o "$WORK/time.txt" "$BIN" "$SERIES" "$RUNS" >"$WORK/out.txt"
cat "$WORK/out.txt"
peak_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
echo "peak_rss_mib=$(awk -v k="$peak_kib" 'BEGIN {printf "%.1f", k / 1024}')"
say "cpu: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
