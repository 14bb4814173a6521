#!/usr/bin/env bash
# The project's own RabbitMQ node: for tests that stop and restart the broker (the
# machine's broker on 5672 is shared and never touched).
#   scripts/rabbitmq-node.sh start|stop|ctl DIR PORT [rabbitmqctl args...]
# DIR holds the node's data, logs and Erlang cookie; the node is named after PORT.
# MANAGEMENT_PORT=N (start) also serves the management HTTP API on 127.0.0.1:N.
set -euo pipefail
action=$1 dir=$2 port=$3
shift 3
bin=/usr/lib/rabbitmq/bin
if [ ! -x "$bin/rabbitmq-server" ]; then
  echo "rabbitmq-node: installing rabbitmq-server (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq rabbitmq-server >/dev/null
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
export HOME=$dir  # the Erlang cookie lives here, apart from the machine's node
export RABBITMQ_NODENAME=taskhub-$port@localhost
export RABBITMQ_DIST_PORT=$((port + 20000))
export RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log
export RABBITMQ_PID_FILE=$dir/rabbitmq.pid
export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
export RABBITMQ_CONFIG_FILE=$dir/rabbitmq  # .conf is appended
ctl() { "$bin/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@"; }

case $action in
  start)
    printf 'listeners.tcp.1 = 127.0.0.1:%s\nloopback_users = none\n' "$port" > "$dir/rabbitmq.conf"
    if [ -n "${MANAGEMENT_PORT:-}" ]; then
      echo "[rabbitmq_management]." > "$RABBITMQ_ENABLED_PLUGINS_FILE"
      # Queue depths are sampled every second (5 s by default) for a timely scale.
      printf 'management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\ncollect_statistics_interval = 1000\n' \
        "$MANAGEMENT_PORT" >> "$dir/rabbitmq.conf"
    else
      echo "[]." > "$RABBITMQ_ENABLED_PLUGINS_FILE"
    fi
    setsid "$bin/rabbitmq-server" >>"$dir/server.out" 2>&1 </dev/null &
    for _ in $(seq 120); do
      if ctl -q await_startup --timeout 5 >/dev/null 2>&1; then exit 0; fi
      sleep 0.5
    done
    echo "rabbitmq-node: the node did not start; see $dir/log" >&2
    exit 1
    ;;
  stop)
    ctl -q stop >/dev/null 2>&1 || true
    ;;
  ctl)
    ctl "$@"
    ;;
esac
