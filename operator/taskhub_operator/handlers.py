"""The entry module kopf loads (`taskhub operator`): it only registers handlers.

One timer per TaskHub drives everything (level-triggered: each pass reads what
is there and takes the next step), so a restarted operator carries on from
status alone."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import kopf
from prometheus_client import start_http_server

from taskhub_operator import GROUP, PLURAL, VERSION, kube, reconcile
from taskhub_operator.settings import get_settings

SETTINGS = get_settings()
FINALIZER = "taskhub.io/operator"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Namespaced: the operator's Role covers one namespace, and listing
    # namespaces would need a ClusterRole.
    settings.scanning.disabled = True
    # One operator Deployment with one replica (strategy Recreate); kopf's
    # peering would need its own cluster-scoped CRDs.
    settings.peering.standalone = True
    settings.persistence.finalizer = FINALIZER
    # status has a schema without kopf's own fields: keep kopf's state in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="taskhub.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="taskhub.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = SETTINGS.api_timeout
    memo.kube = kube.Kube(lambda: kube.login(settings=settings), timeout=SETTINGS.api_timeout)
    memo.http = httpx.AsyncClient()
    memo.errors = {}
    if SETTINGS.metrics_port:
        start_http_server(SETTINGS.metrics_port)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kube.login(**kwargs)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.close()
    await memo.http.aclose()


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.interval)
async def reconcile_taskhub(
    *,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    await reconcile.run(body, patch, memo.kube, memo.http, memo.errors, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(*, name: str, namespace: str | None, **_: Any) -> None:
    if namespace is not None:
        reconcile.forget(namespace, name)
