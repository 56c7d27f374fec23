#!/usr/bin/env bash
# Usage: scripts/with_postgres.sh COMMAND [ARGS...]
#
# Starts a throwaway PostgreSQL 15 on 127.0.0.1, runs COMMAND with
# DATABASE_URL=postgres://postgres@127.0.0.1:PORT/autoloader exported, then
# always stops the server and deletes its files; exits with COMMAND's status.
#
# Environment:
#   PGPORT_TEST  port to use (default 54329; if the default is taken, the next
#                free port is used; an explicit PGPORT_TEST must be free)
#   PG_BIN       server binaries (default /usr/lib/postgresql/15/bin)
# Functions below are called from traps, which shellcheck cannot see:
# shellcheck disable=SC2317
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
DB_NAME=autoloader
WORK=""
CHILD=""

say() { echo "with_postgres: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $# -gt 0 ]] || die "usage: $0 COMMAND [ARGS...]"

is_root() { [[ $(id -u) -eq 0 ]]; }

# Server tools refuse to run as root: run them as the postgres user then.
# The subshell cds into our own dir so postgres never tries a cwd it can't read.
as_pg() {
    if is_root; then
        (cd "$WORK" && runuser -u postgres -- "$@")
    else
        (cd "$WORK" && "$@")
    fi
}

# --- binaries ---------------------------------------------------------------
if [[ ! -x $PG_BIN/postgres ]]; then
    if is_root; then
        # Debian 12. The package may create and start a cluster on 5432: we
        # leave that one alone and use our own port.
        say "PostgreSQL 15 not found in $PG_BIN; installing postgresql-15"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15
        [[ -x $PG_BIN/postgres ]] || die "postgresql-15 installed but $PG_BIN/postgres is missing"
    else
        die "PostgreSQL 15 not found in $PG_BIN; install it with: sudo apt-get install -y postgresql-15"
    fi
fi
if is_root; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user"
fi

# --- helpers ------------------------------------------------------------------
# True if something accepts TCP connections on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True if pid $1 exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# Every descendant of pid $1, children before grandchildren.
descendants() {
    local p
    for p in $(pgrep -P "$1" 2>/dev/null); do
        echo "$p"
        descendants "$p"
    done
}

# Wait up to $1 seconds for $CHILD to end.
wait_child() {
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        alive "$CHILD" || return 0
        sleep 0.1
    done
    return 1
}

stop_server() {
    local data=$WORK/data pid
    [[ -f $data/postmaster.pid ]] || return 0
    say "stopping PostgreSQL on port $PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    # If pg_ctl could not stop it, kill the postmaster outright.
    if [[ -f $data/postmaster.pid ]]; then
        pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
        if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n $WORK && -d $WORK ]]; then
        stop_server
        rm -rf "$WORK"
        say "removed $WORK"
    fi
    exit "$rc"
}

# On a signal: give COMMAND a moment to end by itself (a Ctrl-C at a terminal
# reached it too), then TERM and finally KILL everything it started, so nothing
# keeps running against a stopped server. The EXIT trap then cleans up.
on_signal() {
    local sig=$1 code=$2 p
    trap '' INT TERM HUP
    say "got SIG$sig, stopping"
    if [[ -n $CHILD ]] && alive "$CHILD"; then
        if ! wait_child 3; then
            for p in "$CHILD" $(descendants "$CHILD"); do kill -TERM "$p" 2>/dev/null || true; done
            if ! wait_child 10; then
                for p in "$CHILD" $(descendants "$CHILD"); do kill -KILL "$p" 2>/dev/null || true; done
            fi
        fi
    fi
    exit "$code"
}

trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP

# --- leftovers of runs that were SIGKILLed ------------------------------------
for old in /var/tmp/autoloader-pg.*; do
    [[ -d $old ]] || continue
    if [[ -f $old/data/postmaster.pid ]]; then
        pid=$(head -n 1 "$old/data/postmaster.pid" 2>/dev/null || true)
        [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && continue
    elif [[ -z $(find "$old" -maxdepth 0 -mmin +10 2>/dev/null) ]]; then
        continue # young and not started yet: another run may be starting up
    fi
    if rm -rf "$old" 2>/dev/null; then say "removed stale $old"; fi
done

# --- port -------------------------------------------------------------------
if [[ -n ${PGPORT_TEST:-} ]]; then
    PORT=$PGPORT_TEST
    [[ $PORT =~ ^[0-9]+$ ]] || die "PGPORT_TEST must be a port number, got '$PORT'"
    port_busy "$PORT" && die "port $PORT (PGPORT_TEST) is already in use"
else
    PORT=54329
    while port_busy "$PORT"; do
        PORT=$((PORT + 1))
        ((PORT < 54429)) || die "no free port in 54329-54428"
    done
fi

# --- cluster ------------------------------------------------------------------
# mktemp -d makes a 0700 dir; /var/tmp is world-traversable, so after chmod 755
# (and chown when root) the postgres user can reach everything inside.
WORK=$(mktemp -d /var/tmp/autoloader-pg.XXXXXX)
chmod 755 "$WORK"
if is_root; then chown postgres: "$WORK"; fi
as_pg mkdir -m 700 "$WORK/sock"

say "initdb in $WORK/data"
if ! as_pg "$PG_BIN/initdb" -D "$WORK/data" -A trust -U postgres -E UTF8 --locale=C --no-sync \
    >"$WORK/initdb.log" 2>&1; then
    cat "$WORK/initdb.log" >&2
    die "initdb failed"
fi

say "starting PostgreSQL 15 on 127.0.0.1:$PORT"
if ! as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 \
    -o "-p $PORT -k $WORK/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null; then
    tail -n 30 "$WORK/postgres.log" >&2 || true
    die "PostgreSQL did not start"
fi

"$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB_NAME" || die "createdb $DB_NAME failed"

export DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/$DB_NAME"
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=$DB_NAME
say "DATABASE_URL=$DATABASE_URL"
say "running: $*"

# COMMAND runs in the background so that a signal reaches our trap at once
# (bash defers traps while a foreground command runs). A background command
# would get SIGINT ignored and stdin from /dev/null: give both back.
if env --default-signal=INT true 2>/dev/null; then
    env --default-signal=INT,QUIT "$@" <&0 &
else
    "$@" <&0 &
fi
CHILD=$!
rc=0
wait "$CHILD" || rc=$?
CHILD=""
say "command exited with status $rc"
exit "$rc"
