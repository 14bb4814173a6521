#!/usr/bin/env bash
# The project's own data stack, for `make dev` and the tests: a PostgreSQL primary, a
# streaming replica (pg_basebackup -R), PgBouncer in transaction mode in front of both
# (database taskhub -> primary, taskhub_ro -> replica) and a Redis, all under
# $STACK_DIR on their own ports. PostgreSQL, PgBouncer and Redis run as the postgres user.
# Never touches the machine's own services. Stops at the first failure with one line.
#
#   scripts/devstack.sh up|down|purge|status|env|where|packages
#   scripts/devstack.sh start|stop|restart primary|replica|pgbouncer|redis
#
# Ports and places come from the environment (defaults are `make dev`'s):
#   STACK_DIR=.local/devstack STACK_DB=taskhub PRIMARY_PORT=55442 REPLICA_PORT=55443
#   PGBOUNCER_PORT=56442 REDIS_PORT=56389
# STACK_DIR names the stack; when the postgres user cannot reach it (a checkout in
# root's 0700 home) the data lives in /var/lib/taskhub-devstack/ and STACK_DIR is a
# symlink to it (`where` prints the real place). STACK_PORT_SETTING names the setting
# that a port clash message tells the caller to change (default: the port's variable).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${STACK_DIR:-$root/.local/devstack}
case $name in /*) ;; *) name=$root/$name ;; esac
name=${name%/}
db=${STACK_DB:-taskhub}
primary_port=${PRIMARY_PORT:-55442}
replica_port=${REPLICA_PORT:-55443}
bouncer_port=${PGBOUNCER_PORT:-56442}
redis_port=${REDIS_PORT:-56389}
host=127.0.0.1
slot=taskhub_replica
relocated=/var/lib/taskhub-devstack

log() { echo "devstack: $*" >&2; }
fail() { log "$*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
# From / : PostgreSQL's tools complain when they cannot enter the caller's folder.
as_postgres() { if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
# Bounded wait: wait_for SECONDS COMMAND...
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# Where the stack physically lives ($dir). As root the services run as postgres, which
# must be able to enter every folder above the data: in a checkout under /root (0700)
# it cannot, so the data goes to $relocated/<hash of the checkout>/<name>, owned by
# postgres, and $name becomes a symlink to it. Elsewhere the stack stays in $name.
# Non-root users run the services as themselves: always in place.
service_reaches() { # dir: can the postgres user enter it (every parent included)?
  ! is_root || runuser -u postgres -- test -x "$1" 2>/dev/null
}
leftover() { # dir: holds only what a start that failed in it leaves (no cluster)?
  local entry
  for entry in "$1"/* "$1"/.[!.]*; do
    [ -e "$entry" ] || continue
    case ${entry##*/} in run | redis | pgbouncer.ini | userlist.txt | pgbouncer.log) ;;
      *) return 1 ;;
    esac
  done
}
relocated_place() {
  local parent key
  parent=$(dirname "$name")
  [ "$parent" = "$root/.local" ] && parent=$root # the checkout's own stacks
  key=$(printf '%s' "$parent" | sha256sum | cut -c1-12)
  echo "$relocated/$key/$(basename "$name")"
}
resolve() { # sets $dir without creating anything
  local probe=$name
  if [ -L "$name" ]; then
    dir=$(readlink "$name")
    return
  fi
  until [ -e "$probe" ]; do probe=$(dirname "$probe"); done
  if service_reaches "$probe"; then dir=$name; else dir=$(relocated_place); fi
}
place() { # resolve, then create the stack's folders
  resolve
  if [ "$dir" != "$name" ] && [ ! -L "$name" ]; then
    if [ -e "$name" ]; then
      { [ -d "$name" ] && leftover "$name"; } \
        || fail "$name is in a folder the postgres user cannot enter:" \
          "move it where it can, or remove it (\`$0 purge\`) and retry"
      rm -rf "$name"
    fi
    mkdir -p "$(dirname "$name")"
    ln -sfn "$dir" "$name"
    log "$name -> $dir (the postgres user cannot enter $(dirname "$name"))"
  fi
  case $dir in "$relocated"/*) # whatever the umask, postgres must pass through
    mkdir -p "$(dirname "$dir")"
    chmod 755 "$relocated" "$(dirname "$dir")" ;;
  esac
  mkdir -p "$dir" "$dir/run"
  chmod 755 "$dir" && chmod 1777 "$dir/run"
  [ "$dir" = "$name" ] || echo "$name" >"$dir/origin"
  if is_root; then chown postgres "$dir"; fi
}
resolve
run=$dir/run

packages() {
  local missing=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  is_root || fail "missing ${missing[*]}: install them (apt-get install ${missing[*]})"
  log "installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d keeps the packages from starting system services of their own.
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed: install them by hand and retry"
}

bindir() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }
pg_up() { pg_isready -q -h "$host" -p "$1"; }
port_var() { # component: the setting that moves its port
  [ -z "${STACK_PORT_SETTING:-}" ] || { echo "$STACK_PORT_SETTING"; return; }
  case $1 in primary) echo PRIMARY_PORT ;; replica) echo REPLICA_PORT ;;
    pgbouncer) echo PGBOUNCER_PORT ;; redis) echo REDIS_PORT ;; esac
}
label() { case $1 in primary | replica) echo "the $1" ;; pgbouncer) echo PgBouncer ;;
  redis) echo Redis ;; esac; }
port_free() { ! (echo >"/dev/tcp/$host/$1") 2>/dev/null; }
need_port() { # component port: fail when something else listens there
  port_free "$2" || fail "$(label "$1") did not start: $host:$2 is taken by another program" \
    "(ss -ltnp 'sport = :$2'); stop it or set $(port_var "$1")"
}
# The first line of a log, after its first N lines, that says what went wrong (else
# its last new line, else the command's own last line).
problem() { # log-file lines-before command-output
  local new
  new=$(tail -n "+$(($2 + 1))" "$1" 2>/dev/null || true)
  { grep -m 1 -iE 'fatal|panic|error|invalid|could not|failed|denied|cannot' <<<"$new" \
    || tail -n 1 <<<"$new" | grep . || tail -n 1 <<<"$3" | grep . \
    || echo "no message"; } | head -n 1
}
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

start_pg() { # component data-dir port
  local what=$1 data=$2 port=$3 before out=""
  local logfile=$data/server.log
  local state=0 # pg_isready: 0 accepting, 1 rejecting (starting, recovering), 2 nothing
  pg_isready -q -t 2 -h "$host" -p "$port" || state=$?
  if [ "$state" = 1 ] && wait_for 30 pg_up "$port"; then state=0; fi
  if [ "$state" = 0 ]; then
    local served
    served=$(psql -h "$host" -p "$port" -U postgres -tAc 'SHOW data_directory' 2>/dev/null || true)
    [ "$(readlink -f "${served:-?}")" = "$(readlink -f "$data")" ] \
      || fail "$(label "$what") did not start: $host:$port is served by another PostgreSQL" \
        "(${served:-unknown data directory}); stop it or set $(port_var "$what")"
    return 0
  fi
  need_port "$what" "$port"
  before=$(lines "$logfile")
  if ! out=$(as_postgres "$(bindir)/pg_ctl" -D "$data" -l "$logfile" -w -t 30 \
    -o "-h $host -p $port -k $run" start 2>&1) || ! wait_for 30 pg_up "$port"; then
    fail "$(label "$what") did not start (see $logfile): $(problem "$logfile" "$before" "$out")"
  fi
}

stop_pg() { # data-dir
  local data=$1
  [ -f "$data/postmaster.pid" ] || return 0
  as_postgres "$(bindir)/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null || true
}

psql_primary() { psql -h "$host" -p "$primary_port" -U postgres -qAt "$@"; }

init_primary() {
  local data=$dir/primary out
  [ -s "$data/PG_VERSION" ] && return 0
  log "initdb $data"
  out=$(as_postgres "$(bindir)/initdb" -D "$data" -U postgres --auth=trust -E UTF8 2>&1) \
    || fail "initdb of the primary failed ($data): $(tail -n 1 <<<"$out")"
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
  local data=$dir/replica out
  [ -s "$data/PG_VERSION" ] && return 0
  log "pg_basebackup -R into $data"
  out=$(psql_primary -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots
    WHERE slot_name = '$slot'" 2>&1) \
    || fail "the replica's slot could not be reset on the primary: $(tail -n 1 <<<"$out")"
  rm -rf "$data"
  mkdir -p "$data" && chmod 700 "$data"
  if is_root; then chown postgres "$data"; fi
  out=$(as_postgres "$(bindir)/pg_basebackup" -h "$host" -p "$primary_port" -U postgres \
    -D "$data" -R -X stream -c fast -C -S "$slot" 2>&1) \
    || fail "the replica's base backup failed ($data): $(tail -n 1 <<<"$out")"
}

start_primary() {
  local out
  init_primary
  start_pg primary "$dir/primary" "$primary_port"
  out=$(psql_primary -c "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>&1) \
    || fail "the primary does not answer queries: $(tail -n 1 <<<"$out")"
  if [ "$out" != 1 ]; then
    out=$(psql_primary -c "CREATE DATABASE \"$db\"" 2>&1) \
      || fail "CREATE DATABASE $db failed on the primary: $(tail -n 1 <<<"$out")"
  fi
}

start_replica() {
  pg_up "$primary_port" || start_primary
  init_replica
  start_pg replica "$dir/replica" "$replica_port"
}

pgbouncer_bin() { command -v pgbouncer || echo /usr/sbin/pgbouncer; }
pgbouncer_pid() { [ -f "$run/pgbouncer.pid" ] && cat "$run/pgbouncer.pid"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

start_pgbouncer() {
  alive "$(pgbouncer_pid)" && return 0
  need_port pgbouncer "$bouncer_port"
  local conf=$dir/pgbouncer.ini logfile=$dir/pgbouncer.log before out=""
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
logfile = $logfile
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
  touch "$logfile"
  if is_root; then chown postgres "$conf" "$dir/userlist.txt" "$logfile"; fi
  before=$(lines "$logfile")
  if ! out=$(as_postgres "$(pgbouncer_bin)" -d -q "$conf" 2>&1) \
    || ! wait_for 15 pg_up "$bouncer_port"; then
    fail "PgBouncer did not start (see $logfile): $(problem "$logfile" "$before" "$out")"
  fi
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
# Bounded: redis-cli waits forever for an answer from a program that is no Redis.
redis_up() { [ "$(timeout 2 redis-cli -h "$host" -p "$redis_port" ping 2>/dev/null)" = PONG ]; }

start_redis() {
  redis_up && return 0
  need_port redis "$redis_port"
  local logfile=$dir/redis/redis.log before out=""
  mkdir -p "$dir/redis"
  if is_root; then chown postgres "$dir/redis"; fi
  before=$(lines "$logfile")
  # A cache: no persistence, and only keys with a TTL are evicted (the cache's
  # generation keys have none, see docs/data.md).
  if ! out=$(as_postgres redis-server --bind "$host" --port "$redis_port" --daemonize yes \
    --pidfile "$run/redis.pid" --logfile "$logfile" --dir "$dir/redis" \
    --save '' --appendonly no --maxmemory 256mb --maxmemory-policy volatile-lru 2>&1) \
    || ! wait_for 15 redis_up; then
    fail "Redis did not start (see $logfile): $(problem "$logfile" "$before" "$out")"
  fi
}

stop_redis() {
  stop_pid redis_pid TERM
  # Started by another checkout of the project on the same port (no pid file of ours):
  # the port is the stack's, so stop what answers there all the same.
  if redis_up; then
    timeout 5 redis-cli -h "$host" -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    wait_for 15 bash -c "! timeout 2 redis-cli -h $host -p $redis_port ping" || true
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
  # The relay LISTENs on the primary itself: PgBouncer in transaction mode never
  # delivers a NOTIFY.
  cat <<EOF
export TASKHUB_DB__URL=postgresql+asyncpg://postgres@$host:$bouncer_port/$db
export TASKHUB_DB__REPLICA_URL=postgresql+asyncpg://postgres@$host:$bouncer_port/${db}_ro
export TASKHUB_DB__LISTEN_URL=postgresql+asyncpg://postgres@$host:$primary_port/$db
export TASKHUB_DB__STATEMENT_CACHE_SIZE=0
export TASKHUB_REDIS__URL=redis://$host:$redis_port/0
EOF
}

purge() {
  "$0" down
  rm -rf "$dir" "$name" # $name: the symlink, or the stack itself
  [ "$dir" = "$name" ] || rmdir "$(dirname "$dir")" 2>/dev/null || true # when empty
}

component() { # action name
  case $2 in
    primary | replica | pgbouncer | redis) ;;
    *) log "unknown component '$2' (primary, replica, pgbouncer, redis)"; exit 2 ;;
  esac
  case $1 in
    start) "start_$2" ;;
    stop) if [ "$2" = primary ] || [ "$2" = replica ]; then stop_pg "$dir/$2"; else "stop_$2"; fi ;;
    restart) component stop "$2"; component start "$2" ;;
  esac
}

case ${1:-} in
  packages) packages ;;
  up)
    packages
    place
    start_primary
    start_replica
    start_pgbouncer
    start_redis
    status
    ;;
  down)
    stop_pgbouncer; stop_redis; stop_pg "$dir/replica"; stop_pg "$dir/primary" ;;
  purge) purge ;;
  status) status ;;
  env) env_vars ;;
  where) echo "$dir" ;;
  start | stop | restart)
    place
    component "$1" "${2:-}"
    ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
