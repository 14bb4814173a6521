"""Entry points of the long-running processes behind ``taskhub worker|relay|beat``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("taskhub")


def run_worker(
    queues: list[str], concurrency: int, pool: str, metrics_port: int, loglevel: str
) -> None:
    from celery import signals
    from kombu import Connection

    from taskhub_api.settings import get_settings
    from taskhub_workers import metrics, propagation, topology
    from taskhub_workers.app import app

    unknown = set(queues) - set(topology.JOB_QUEUES)
    if unknown:
        raise SystemExit(f"unknown queues: {', '.join(sorted(unknown))}")
    with Connection(app.conf.broker_url, connect_timeout=10) as connection:
        connection.ensure_connection(
            max_retries=30, interval_start=1, interval_step=1, interval_max=2
        )
        topology.declare(connection)
    # Per-queue prefetch: a worker serving several queues takes the smallest.
    app.conf.worker_prefetch_multiplier = min(topology.JOB_QUEUES[q].prefetch for q in queues)
    if metrics_port:

        @signals.worker_init.connect(weak=False)
        def _serve_metrics(**_: object) -> None:
            metrics.serve(metrics_port)

    if pool == "solo":
        # Jobs run in this process; a prefork child sets tracing up at its init
        # (runtime.Runtime).
        propagation.setup_tracing(get_settings(), "worker")
    app.worker_main(
        [
            "worker",
            f"--queues={','.join(queues)}",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--hostname=taskhub-{os.getpid()}@%h",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def run_beat(schedule_file: Path, loglevel: str, metrics_port: int = 0) -> None:
    from taskhub_workers import beat_metrics
    from taskhub_workers.app import app

    schedule_file.parent.mkdir(parents=True, exist_ok=True)
    if metrics_port:
        beat_metrics.install()
        beat_metrics.serve(metrics_port)
    app.start(["beat", f"--schedule={schedule_file}", f"--loglevel={loglevel}"])


async def _relay_main(dispatch: bool, metrics_port: int, relay: bool = True) -> None:
    from taskhub_api import tracing
    from taskhub_api.db import Database
    from taskhub_api.settings import get_settings
    from taskhub_workers import propagation, relay_metrics
    from taskhub_workers.dispatcher import Dispatcher
    from taskhub_workers.relay import Relay

    settings = get_settings()
    propagation.setup_tracing(settings, "relay")
    db = Database(settings.db.model_copy(update={"pool_size": 4, "max_overflow": 4}))
    tracing.instrument_engines(db.primary, db.replica)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    workers = [Relay(settings, db).run(stop)] if relay else []
    if dispatch:
        workers.append(Dispatcher(settings, db).run(stop))
    if metrics_port:
        relay_metrics.serve(metrics_port)
        if relay:  # the outbox gauges come from the relays only
            workers.append(relay_metrics.sample_outbox_until(db, stop))
    if relay:
        log.info("relay started%s", " with the dispatcher" if dispatch else "")
    else:
        log.info("dispatcher started")
    try:
        await asyncio.gather(*workers)
    finally:
        await db.dispose()
        log.info("%s stopped", "relay" if relay else "dispatcher")


def run_relay(dispatch: bool, metrics_port: int = 0) -> None:
    asyncio.run(_relay_main(dispatch, metrics_port))


def run_dispatcher(metrics_port: int = 0) -> None:
    """The event dispatcher alone (``taskhub relay --without-dispatcher`` runs the
    relay alone), so each can be scaled, or killed, on its own."""
    asyncio.run(_relay_main(dispatch=True, metrics_port=metrics_port, relay=False))
