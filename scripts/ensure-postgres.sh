#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on $PGHOST:$PGPORT (default 127.0.0.1:5432)
# and that database $1 exists. In order: it is already running; start the machine's
# cluster; install Debian's postgresql package if missing and start the project's own
# instance: scripts/devstack.sh's primary alone, named .local/postgres-$PGPORT (trust
# auth, run as the postgres user, its data where that user can reach it: see devstack.sh).
set -euo pipefail
db=${1:-taskhub}
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
root=$(cd "$(dirname "$0")/.." && pwd)
local_data=$root/.local/postgres

ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }
as_postgres() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
wait_ready() { for _ in $(seq 60); do ready && return 0; sleep 0.5; done; return 1; }

if ! command -v pg_isready >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "ensure-postgres: installing PostgreSQL (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

if ! ready && [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
  for cluster in /etc/postgresql/*/main; do
    [ -d "$cluster" ] || continue
    version=$(basename "$(dirname "$cluster")")
    echo "ensure-postgres: starting the machine's cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  wait_ready || true
fi

if ! ready && [ -s "$local_data/PG_VERSION" ]; then
  # The instance of earlier versions of this script, kept where it is.
  echo "ensure-postgres: starting the project's own instance in $local_data (port $port)"
  mkdir -p "$root/.local/run" && chmod 1777 "$root/.local/run"
  as_postgres "$bindir/pg_ctl" -D "$local_data" -l "$local_data/server.log" -w \
    -o "-h $host -p $port -k $root/.local/run" start >/dev/null \
    && wait_ready \
    || { echo "ensure-postgres: $local_data did not start (see its server.log)" >&2; exit 1; }
fi

if ! ready; then
  case $host in 127.0.0.1 | localhost) ;; *)
    echo "ensure-postgres: nothing answers on $host:$port; start it, or unset PGHOST" >&2
    exit 1 ;;
  esac
  echo "ensure-postgres: starting the project's own instance .local/postgres-$port"
  STACK_DIR=$root/.local/postgres-$port STACK_DB=$db PRIMARY_PORT=$port \
    "$root/scripts/devstack.sh" start primary
fi

if ! psql -h "$host" -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  psql -h "$host" -p "$port" -U postgres -qc "CREATE DATABASE \"$db\""
  echo "ensure-postgres: created database $db"
fi
