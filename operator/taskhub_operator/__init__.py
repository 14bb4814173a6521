"""The TaskHub operator: gates every rollout on its migration and scales workers
from RabbitMQ queue depth (docs/operator.md).

`handlers` is the entry module kopf loads; it only registers handlers. The rest
are pure builders and decisions (`conditions`, `jobs`, `scaling`) and the two
clients the handlers drive (`kube`, `rabbitmq`)."""

GROUP = "taskhub.io"
VERSION = "v1alpha1"
PLURAL = "taskhubs"
