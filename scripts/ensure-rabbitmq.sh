#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers on 127.0.0.1:5672 (the default broker URL): the
# machine's, or else the project's own node under .local/rabbitmq.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if (echo > /dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  exit 0
fi
echo "ensure-rabbitmq: starting the project's own node in $root/.local/rabbitmq (port 5672)"
exec "$root/scripts/rabbitmq-node.sh" start "$root/.local/rabbitmq" 5672
