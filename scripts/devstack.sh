#!/usr/bin/env bash
# The project's own data stack, for `make dev` and the tests: a PostgreSQL primary, a
# streaming replica (pg_basebackup -R), PgBouncer in transaction mode in front of both
# (database taskhub -> primary, taskhub_ro -> replica) and a Redis, all under
# $STACK_DIR on their own ports. PostgreSQL and PgBouncer run as the postgres user.
# Never touches the machine's own services.
#
#   scripts/devstack.sh up|down|purge|status|env|packages
#   scripts/devstack.sh start|stop|restart primary|replica|pgbouncer|redis
#
# Ports and places come from the environment (defaults are `make dev`'s):
#   STACK_DIR=.local/devstack STACK_DB=taskhub PRIMARY_PORT=55442 REPLICA_PORT=55443
#   PGBOUNCER_PORT=56442 REDIS_PORT=56389
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${STACK_DIR:-$root/.local/devstack}
case $dir in /*) ;; *) dir=$root/$dir ;; esac
db=${STACK_DB:-taskhub}
primary_port=${PRIMARY_PORT:-55442}
replica_port=${REPLICA_PORT:-55443}
bouncer_port=${PGBOUNCER_PORT:-56442}
redis_port=${REDIS_PORT:-56389}
host=127.0.0.1
run=$dir/run
slot=taskhub_replica

log() { echo "devstack: $*" >&2; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# Bounded wait: wait_for SECONDS COMMAND...
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

packages() {
  local missing=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { log "missing ${missing[*]}: install them (apt-get install)"; exit 1; }
  log "installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d keeps the packages from starting system services of their own.
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
}

bindir() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }
pg_up() { pg_isready -q -h "$host" -p "$1"; }
prepare_dirs() {
  mkdir -p "$dir" "$run"
  chmod 755 "$dir" && chmod 1777 "$run"
  [ "$(id -u)" = 0 ] && chown postgres "$dir" || true
}

start_pg() { # data-dir port
  local data=$1 port=$2
  pg_up "$port" && return 0
  as_postgres "$(bindir)/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 \
    -o "-h $host -p $port -k $run" start >/dev/null
  wait_for 30 pg_up "$port"
}

stop_pg() { # data-dir
  local data=$1
  [ -f "$data/postmaster.pid" ] || return 0
  as_postgres "$(bindir)/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null || true
}

init_primary() {
  local data=$dir/primary
  [ -s "$data/PG_VERSION" ] && return 0
  log "initdb $data"
  as_postgres "$(bindir)/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
  cat >>"$data/postgresql.conf" <<EOF
# devstack
listen_addresses = '$host'
max_connections = 200
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
hot_standby = on
hot_standby_feedback = on
fsync = off
full_page_writes = off
EOF
}

init_replica() {
  local data=$dir/replica
  [ -s "$data/PG_VERSION" ] && return 0
  log "pg_basebackup -R into $data"
  psql -h "$host" -p "$primary_port" -U postgres -qAtc \
    "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" \
    >/dev/null
  rm -rf "$data"
  mkdir -p "$data" && chmod 700 "$data"
  [ "$(id -u)" = 0 ] && chown postgres "$data" || true
  as_postgres "$(bindir)/pg_basebackup" -h "$host" -p "$primary_port" -U postgres -D "$data" \
    -R -X stream -c fast -C -S "$slot"
}

start_primary() {
  init_primary
  start_pg "$dir/primary" "$primary_port"
  if ! psql -h "$host" -p "$primary_port" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    psql -h "$host" -p "$primary_port" -U postgres -qc "CREATE DATABASE \"$db\""
  fi
}

start_replica() {
  pg_up "$primary_port" || start_primary
  init_replica
  start_pg "$dir/replica" "$replica_port"
}

pgbouncer_bin() { command -v pgbouncer || echo /usr/sbin/pgbouncer; }
pgbouncer_pid() { [ -f "$run/pgbouncer.pid" ] && cat "$run/pgbouncer.pid"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

start_pgbouncer() {
  alive "$(pgbouncer_pid)" && return 0
  local conf=$dir/pgbouncer.ini
  echo '"postgres" ""' >"$dir/userlist.txt"
  # Short waits everywhere: the application turns a missing server into a fast 503.
  cat >"$conf" <<EOF
[databases]
$db = host=$host port=$primary_port dbname=$db
${db}_ro = host=$host port=$replica_port dbname=$db

[pgbouncer]
listen_addr = $host
listen_port = $bouncer_port
unix_socket_dir = $run
pidfile = $run/pgbouncer.pid
logfile = $dir/pgbouncer.log
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = postgres
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
reserve_pool_size = 5
server_connect_timeout = 2
server_login_retry = 1
query_wait_timeout = 5
ignore_startup_parameters = extra_float_digits
EOF
  [ "$(id -u)" = 0 ] && chown postgres "$conf" "$dir/userlist.txt" && touch "$dir/pgbouncer.log" \
    && chown postgres "$dir/pgbouncer.log"
  as_postgres "$(pgbouncer_bin)" -d -q "$conf"
  wait_for 15 pg_up "$bouncer_port"
}

stop_pid() { # pid-file-reader signal
  local pid
  pid=$($1) || return 0
  alive "$pid" || return 0
  kill "-$2" "$pid" 2>/dev/null || true
  wait_for 15 bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
}

stop_pgbouncer() { stop_pid pgbouncer_pid TERM; }

redis_pid() { [ -f "$run/redis.pid" ] && cat "$run/redis.pid"; }
redis_up() { [ "$(redis-cli -h "$host" -p "$redis_port" ping 2>/dev/null)" = PONG ]; }

start_redis() {
  redis_up && return 0
  mkdir -p "$dir/redis"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/redis" || true
  # A cache: no persistence, and only keys with a TTL are evicted (the cache's
  # generation keys have none, see docs/data.md).
  as_postgres redis-server --bind "$host" --port "$redis_port" --daemonize yes \
    --pidfile "$run/redis.pid" --logfile "$dir/redis/redis.log" --dir "$dir/redis" \
    --save '' --appendonly no --maxmemory 256mb --maxmemory-policy volatile-lru
  wait_for 15 redis_up
}

stop_redis() {
  stop_pid redis_pid TERM
  # Started by another checkout of the project on the same port (no pid file of ours):
  # the port is the stack's, so stop what answers there all the same.
  if redis_up; then
    redis-cli -h "$host" -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    wait_for 15 bash -c "! redis-cli -h $host -p $redis_port ping" || true
  fi
}

status() {
  local state
  for component in primary replica pgbouncer redis; do
    case $component in
      primary) pg_up "$primary_port" && state="up :$primary_port" || state=down ;;
      replica) pg_up "$replica_port" && state="up :$replica_port" || state=down ;;
      pgbouncer) alive "$(pgbouncer_pid)" && state="up :$bouncer_port" || state=down ;;
      redis) redis_up && state="up :$redis_port" || state=down ;;
    esac
    printf '%-10s %s\n' "$component" "$state"
  done
}

env_vars() {
  cat <<EOF
export TASKHUB_DB__URL=postgresql+asyncpg://postgres@$host:$bouncer_port/$db
export TASKHUB_DB__REPLICA_URL=postgresql+asyncpg://postgres@$host:$bouncer_port/${db}_ro
export TASKHUB_DB__STATEMENT_CACHE_SIZE=0
export TASKHUB_REDIS__URL=redis://$host:$redis_port/0
EOF
}

component() { # action name
  case $2 in
    primary | replica | pgbouncer | redis) ;;
    *) log "unknown component '$2' (primary, replica, pgbouncer, redis)"; exit 2 ;;
  esac
  case $1 in
    start) "start_$2" ;;
    stop) if [ "$2" = primary ] || [ "$2" = replica ]; then stop_pg "$dir/$2"; else "stop_$2"; fi ;;
    restart) component stop "$2" && component start "$2" ;;
  esac
}

case ${1:-} in
  packages) packages ;;
  up)
    packages && prepare_dirs
    start_primary && start_replica && start_pgbouncer && start_redis
    status
    ;;
  down)
    stop_pgbouncer; stop_redis; stop_pg "$dir/replica"; stop_pg "$dir/primary" ;;
  purge) "$0" down && rm -rf "$dir" ;;
  status) status ;;
  env) env_vars ;;
  start | stop | restart) prepare_dirs && component "$1" "${2:-}" ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
