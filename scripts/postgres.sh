#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the control plane's API
# suite: its own cluster in /tmp/edge-pg-test (outside the checkout, so the
# database user can reach it wherever the checkout lives), port 55432, trust
# auth on 127.0.0.1 only. Needs the Debian `postgresql` package
# (scripts/install-toolchain.sh installs it).
#
#   scripts/postgres.sh start   # prints the URL to put in EDGE_TEST_POSTGRES_URL
#   scripts/postgres.sh stop    # stops it and removes the cluster
#
# Every test makes a fresh database of its own; the cluster is thrown away
# at the stop so that they do not pile up on disk run after run.
set -euo pipefail
PORT="${EDGE_TEST_POSTGRES_PORT:-55432}"
dir="${EDGE_TEST_POSTGRES_DIR:-/tmp/edge-pg-test}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -n "$bin" ] || { echo "PostgreSQL is not installed" >&2; exit 1; }

# PostgreSQL refuses to run as root: run it as the package's user then.
as_db_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      rm -rf "$dir"
      mkdir -p "$dir"
      [ "$(id -u)" = 0 ] && chown postgres "$dir"
      as_db_user "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
    fi
    # Already running (an earlier run that was not stopped): reuse it.
    if ! as_db_user "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_db_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $dir -c fsync=off" start >/dev/null
    fi
    echo "postgres://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_db_user "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
