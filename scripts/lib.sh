# Shared shell functions of the scripts in this folder; source it, do not run it.
# Everything here prints what it does on stderr, and works as root (CI) or as
# a normal user with sudo.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

log() { printf '==> %s\n' "$*" >&2; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_apt_updated=0
# Installs the Debian packages given whose status is not "installed".
ensure_packages() {
    local missing=()
    local package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    if [ "$_apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        _apt_updated=1
    fi
    # A policy-rc.d that says "no" keeps packages such as prometheus from
    # starting system services; tests start their own instances on free ports.
    local added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || { [ "$added_policy" -eq 1 ] && as_root rm -f /usr/sbin/policy-rc.d; return 1; }
    [ "$added_policy" -eq 1 ] && as_root rm -f /usr/sbin/policy-rc.d
    return 0
}

# The build needs a C toolchain and libpq (diesel links it); the scripts need psql.
ensure_build_packages() {
    ensure_packages build-essential pkg-config libpq-dev postgresql-client ca-certificates
}

# Newest PostgreSQL server major installed, e.g. 15 (empty when none).
postgres_major() {
    ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1
}

# Whether a PostgreSQL URL accepts connections.
postgres_reachable() {
    psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
}

# Starts (or reuses) a throwaway PostgreSQL cluster in $TODO_PG_DIR on
# $TODO_PG_PORT, trust authentication on loopback only, and prints its URL.
# It lives in /tmp because the postgres user must be able to reach it (a home
# directory is often private) and because its data is disposable.
start_throwaway_postgres() {
    local dir="${TODO_PG_DIR:-/tmp/todo-backend-postgres}"
    local port="${TODO_PG_PORT:-54329}"
    local url="postgres://postgres@127.0.0.1:${port}/postgres"
    if postgres_reachable "$url"; then
        log "reusing the local PostgreSQL cluster in $dir (port $port)"
        echo "$url"
        return 0
    fi
    if [ -z "$(postgres_major)" ]; then
        ensure_packages postgresql
    fi
    local bin="/usr/lib/postgresql/$(postgres_major)/bin"
    local run=()
    if [ "$(id -u)" -eq 0 ]; then
        # initdb and postgres refuse to run as root.
        run=(runuser -u postgres --)
    fi
    if [ ! -f "$dir/PG_VERSION" ]; then
        log "creating a throwaway PostgreSQL cluster in $dir"
        mkdir -p "$dir"
        [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
        "${run[@]}" "$bin/initdb" -D "$dir" -U postgres --auth=trust --no-sync >/dev/null
    fi
    log "starting PostgreSQL on 127.0.0.1:$port (data in $dir, log in $dir/server.log)"
    "${run[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
    echo "$url"
}

# Makes sure the machine's own PostgreSQL at 127.0.0.1:5432 runs, starting the
# Debian cluster when it is installed but down. Returns non-zero when there is none.
ensure_system_postgres() {
    local url="postgres://postgres@127.0.0.1:5432/postgres"
    postgres_reachable "$url" && return 0
    if [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
        log "starting the system PostgreSQL cluster"
        as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -n | tail -n 1)" main start || true
        local tries=0
        until postgres_reachable "$url"; do
            tries=$((tries + 1))
            [ "$tries" -gt 30 ] && return 1
            sleep 1
        done
        return 0
    fi
    return 1
}

# Installs the Python packages of requirements file $1 that are missing
# (pip is quick when everything is there already).
ensure_python_requirements() {
    local requirements="$1"
    [ -f "$requirements" ] || return 0
    if python3 -m pip install --quiet --disable-pip-version-check -r "$requirements" >/dev/null 2>&1; then
        return 0
    fi
    log "installing the Python packages of $requirements"
    python3 -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2 \
        || as_root python3 -m pip install --quiet --break-system-packages -r "$requirements" >&2
}

# Makes sure cargo is on PATH (rustup installs it in ~/.cargo/bin).
ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || {
        echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
        exit 1
    }
}

# --- benchmark helpers (bench-api.sh, profile-api.sh) ---

# A reachable PostgreSQL server URL for benchmarks: $BENCH_DATABASE_URL, else
# the machine's own, else a throwaway cluster.
bench_server_url() {
    local url="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
    if ! postgres_reachable "$url"; then
        ensure_system_postgres || url="$(start_throwaway_postgres)"
    fi
    echo "$url"
}

# Builds the release todo-app and prints the binary's path.
build_release_app() {
    log "building todo-app (release)"
    cargo build --release -p todo-app --quiet
    echo "${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/todo-app"
}

# Creates database $2 on server $1, migrates it with binary $3, seeds $4
# todos of owner `bench`, and prints a token of that owner.
seed_bench_database() {
    local server_url="$1" db="$2" binary="$3" count="$4"
    local database_url="${server_url%/*}/$db"
    log "seeding $db with $count todos of one owner"
    psql "$server_url" -qc "CREATE DATABASE $db" >/dev/null
    DATABASE_URL="$database_url" APP_CONFIG_DIR="$REPO_ROOT/configuration" "$binary" migrate 2>/dev/null
    psql "$database_url" -qc "INSERT INTO todos (id, owner, title, description, created_at, updated_at)
        SELECT gen_random_uuid(), 'bench', 'todo ' || n, 'seeded', now() - n * interval '1 second', now()
        FROM generate_series(1, $count) AS n" >/dev/null
    psql "$database_url" -qc "VACUUM ANALYZE" >/dev/null
    DATABASE_URL="$database_url" APP_CONFIG_DIR="$REPO_ROOT/configuration" \
        "$binary" keys create --owner bench 2>/dev/null
}

# Waits (up to $2 seconds) until todo-app's log $1 names its API port; prints it.
wait_for_api_port() {
    local log_file="$1" seconds="$2" port="" tries
    for tries in $(seq 1 $((seconds * 10))); do
        port="$(grep -o '"api_port":[0-9]*' "$log_file" 2>/dev/null | head -n 1 | cut -d: -f2 || true)"
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "todo-app did not start:"; cat "$log_file"; return 1; } >&2
    echo "$port"
}
