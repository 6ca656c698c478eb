#!/usr/bin/env bash
# Benchmarks `todo-sidecar backup run` against plain `pg_dump -Fc -f FILE` on
# a pgbench database of about 1 GB, and times restores of both. Prints sizes,
# MB/s, ratios and peak RSS (medians of RUNS runs), then drops its databases.
#
# Variables: ADMIN_URL (a superuser URL, default the local trust server),
# SCALE (pgbench scale, default 70 ≈ 1.05 GB), RUNS (default 3),
# CARGO_TARGET_DIR (where the release build goes, default target).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_cargo
ensure_build_packages
# /usr/bin/time for peak RSS, bc for the arithmetic, pgbench for the data.
ensure_packages time bc postgresql-contrib

ADMIN_URL=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
SCALE=${SCALE:-70}
RUNS=${RUNS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SOURCE_DB="bench_backup_$$"
RESTORE_DB="bench_backup_restore_$$"
WORK=$(mktemp -d)

say() { echo "==> $*" >&2; }
url_for() { echo "${ADMIN_URL%/*}/$1"; }
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 "$ADMIN_URL" "$@"; }

cleanup() {
    say "dropping $SOURCE_DB and $RESTORE_DB, removing $WORK"
    psql_admin -c "DROP DATABASE IF EXISTS $SOURCE_DB WITH (FORCE)" || true
    psql_admin -c "DROP DATABASE IF EXISTS $RESTORE_DB WITH (FORCE)" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Runs a command under /usr/bin/time -v; prints "seconds peak_rss_kib".
measure() {
    local start end
    start=$(date +%s.%N)
    /usr/bin/time -v -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/stderr.txt" || {
        cat "$WORK/stderr.txt" >&2
        return 1
    }
    end=$(date +%s.%N)
    local rss
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
    echo "$(echo "$end - $start" | bc -l) $rss"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

say "building todo-sidecar (release) into $TARGET_DIR"
(cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -q -p todo-sidecar)
SIDECAR="$TARGET_DIR/release/todo-sidecar"
case "$SIDECAR" in /*) ;; *) SIDECAR="$REPO/$SIDECAR" ;; esac

say "creating $SOURCE_DB with pgbench -i -s $SCALE"
psql_admin -c "CREATE DATABASE $SOURCE_DB"
pgbench -i -q -s "$SCALE" "$(url_for "$SOURCE_DB")" 2>&1 | tail -n 1 >&2
DB_BYTES=$(psql_admin -tAc "SELECT pg_database_size('$SOURCE_DB')")
say "database size: $((DB_BYTES / 1024 / 1024)) MiB"

export DATABASE_URL
DATABASE_URL=$(url_for "$SOURCE_DB")
export SIDECAR__BACKUP__STORE__KIND=local
export SIDECAR__BACKUP__STORE__PATH="$WORK/store"
export SIDECAR__BACKUP__RETENTION__KEEP_LAST=1
export SIDECAR__BACKUP__RETENTION__DAILY=0
export SIDECAR__BACKUP__RETENTION__WEEKLY=0
export RUST_LOG=warn

: >"$WORK/pg_dump.txt"
: >"$WORK/sidecar.txt"
: >"$WORK/restore_sidecar.txt"
: >"$WORK/restore_pg.txt"
for run in $(seq 1 "$RUNS"); do
    say "run $run/$RUNS: pg_dump -Fc -f FILE"
    measure pg_dump -Fc -f "$WORK/plain.dump" "$DATABASE_URL" >>"$WORK/pg_dump.txt"
    say "run $run/$RUNS: todo-sidecar backup run"
    measure "$SIDECAR" backup run >>"$WORK/sidecar.txt"
    say "run $run/$RUNS: todo-sidecar backup restore --latest into a new database"
    psql_admin -c "DROP DATABASE IF EXISTS $RESTORE_DB WITH (FORCE)"
    measure "$SIDECAR" backup restore --latest --target-url "$(url_for "$RESTORE_DB")" >>"$WORK/restore_sidecar.txt"
    say "run $run/$RUNS: pg_restore -d of the plain dump into a new database"
    psql_admin -c "DROP DATABASE IF EXISTS $RESTORE_DB WITH (FORCE)"
    psql_admin -c "CREATE DATABASE $RESTORE_DB"
    measure pg_restore --no-owner --exit-on-error --single-transaction -d "$(url_for "$RESTORE_DB")" "$WORK/plain.dump" >>"$WORK/restore_pg.txt"
done

PLAIN_BYTES=$(stat -c %s "$WORK/plain.dump")
SNAPSHOT_JSON=$("$SIDECAR" backup list --json | head -n 1)
OURS_BYTES=$(echo "$SNAPSHOT_JSON" | python3 -c 'import json,sys; print(json.load(sys.stdin)["compressed_bytes"])')
RAW_BYTES=$(echo "$SNAPSHOT_JSON" | python3 -c 'import json,sys; print(json.load(sys.stdin)["raw_bytes"])')

col() { awk -v c="$1" '{print $c}' "$2" | median; }
PG_S=$(col 1 "$WORK/pg_dump.txt");        PG_RSS=$(col 2 "$WORK/pg_dump.txt")
SC_S=$(col 1 "$WORK/sidecar.txt");        SC_RSS=$(col 2 "$WORK/sidecar.txt")
RS_S=$(col 1 "$WORK/restore_sidecar.txt"); RS_RSS=$(col 2 "$WORK/restore_sidecar.txt")
RP_S=$(col 1 "$WORK/restore_pg.txt");     RP_RSS=$(col 2 "$WORK/restore_pg.txt")
MB=$(echo "$DB_BYTES / 1000000" | bc -l)

echo
echo "pgbench scale $SCALE: database $(printf '%.0f' "$MB") MB, pg_dump archive (uncompressed) $((RAW_BYTES / 1000000)) MB; medians of $RUNS runs"
printf '%-44s %9s %10s %10s %14s\n' "what" "seconds" "MB/s (db)" "size MB" "peak RSS MiB"
printf '%-44s %9.2f %10.0f %10.1f %14.1f\n' "pg_dump -Fc -f FILE" "$PG_S" "$(echo "$MB / $PG_S" | bc -l)" "$(echo "$PLAIN_BYTES / 1000000" | bc -l)" "$(echo "$PG_RSS / 1024" | bc -l)"
printf '%-44s %9.2f %10.0f %10.1f %14.1f\n' "todo-sidecar backup run (zstd, sha256, local)" "$SC_S" "$(echo "$MB / $SC_S" | bc -l)" "$(echo "$OURS_BYTES / 1000000" | bc -l)" "$(echo "$SC_RSS / 1024" | bc -l)"
printf '%-44s %9.2f %10.0f %10s %14.1f\n' "todo-sidecar backup restore (new database)" "$RS_S" "$(echo "$MB / $RS_S" | bc -l)" "-" "$(echo "$RS_RSS / 1024" | bc -l)"
printf '%-44s %9.2f %10.0f %10s %14.1f\n' "pg_restore --single-transaction (plain dump)" "$RP_S" "$(echo "$MB / $RP_S" | bc -l)" "-" "$(echo "$RP_RSS / 1024" | bc -l)"
printf 'time ratio sidecar/pg_dump: %.2f   size ratio sidecar/pg_dump: %.2f\n' \
    "$(echo "$SC_S / $PG_S" | bc -l)" "$(echo "$OURS_BYTES / $PLAIN_BYTES" | bc -l)"
echo "(peak RSS is the largest single process of the command's tree: for the sidecar, itself or its pg_dump child)"
