#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback for the shared-storage tuning tests (tests/test_tune.py).
#
#   .ci/postgres.sh            # install (apt-get, if missing), init, start, create user + database; idempotent
#   .ci/postgres.sh stop       # stop the server (the data folder is kept)
#
# It listens on 127.0.0.1 only, port $SB3_VLA_PG_PORT (default 55432, away from a system server on 5432), keeps
# its data in $SB3_VLA_PG_DIR (default /tmp/sb3_vla_pg) and writes the connection URL to $SB3_VLA_PG_DIR/url,
# where the tests look for it (or export SB3_VLA_TEST_PG_URL=<url> to point the tests at another server).
# Works as root (the server runs as the `postgres` system user) or as an ordinary user. Needs the Python driver
# too: pip install psycopg2-binary (part of the `zoo` extra).
set -euo pipefail

PG_DIR="${SB3_VLA_PG_DIR:-/tmp/sb3_vla_pg}"
PG_PORT="${SB3_VLA_PG_PORT:-55432}"
PG_USER="${SB3_VLA_PG_USER:-sb3vla}"
PG_PASSWORD="${SB3_VLA_PG_PASSWORD:-sb3vla}"
PG_DB="${SB3_VLA_PG_DB:-sb3vla_test}"
DATA="$PG_DIR/data"

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(command -v pg_ctl)"; return 0; fi
  return 1
}

BIN="$(find_bin || true)"
if [ -z "$BIN" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL is not installed and this script is not root: apt-get install postgresql first" >&2
    exit 1
  fi
  echo "Installing PostgreSQL (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  BIN="$(find_bin)"
fi

# The server refuses to run as root: run it as the `postgres` system user then.
if [ "$(id -u)" = 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

if [ "${1:-}" = "stop" ]; then
  if [ -f "$DATA/PG_VERSION" ]; then as_pg "$BIN/pg_ctl" -D "$DATA" -m fast stop || true; fi
  exit 0
fi

mkdir -p "$PG_DIR"
chmod 755 "$PG_DIR"
if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; fi

if [ ! -f "$DATA/PG_VERSION" ]; then
  echo "Initialising a cluster in $DATA"
  as_pg "$BIN/initdb" -D "$DATA" --auth-local=trust --auth-host=scram-sha-256 -U postgres >/dev/null
fi

if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  echo "Starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $DATA -c max_connections=100" start >/dev/null
fi

psql_admin() { as_pg "$BIN/psql" -h "$DATA" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]; then
  psql_admin -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
  psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
fi

URL="postgresql+psycopg2://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
echo "$URL" > "$PG_DIR/url"
chmod 644 "$PG_DIR/url"
echo "PostgreSQL ready; URL written to $PG_DIR/url"
echo "export SB3_VLA_TEST_PG_URL=$URL"
