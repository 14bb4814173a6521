"""`taskhub operator`: run the operator for one namespace."""

from __future__ import annotations

import os
from pathlib import Path

import kopf

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace() -> str | None:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    return None


def run(namespace: str | None, liveness_port: int, log_json: bool, verbose: bool) -> None:
    import taskhub_operator.handlers  # noqa: F401  (registers the handlers)

    watched = namespace or own_namespace()
    if not watched:
        raise SystemExit("taskhub operator: --namespace is required outside a pod")
    kopf.configure(
        verbose=verbose, log_format=kopf.LogFormat.JSON if log_json else kopf.LogFormat.PLAIN
    )
    kopf.run(
        standalone=True,
        namespaces=[watched],
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
    )
