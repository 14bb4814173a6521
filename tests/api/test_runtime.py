"""What the API's start-up does to the garbage collector, measured in a fresh process
(nothing else in it freezes): the objects start-up built are frozen by the lifespan,
and the youngest generation gets the configured size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from taskhub_api.settings import Settings

PROGRAM = textwrap.dedent(
    """
    import asyncio, gc, json
    from asgi_lifespan import LifespanManager
    from taskhub_api.main import create_app

    async def main():
        app = create_app()
        before = gc.get_freeze_count()
        async with LifespanManager(app):
            after = gc.get_freeze_count()
            threshold = gc.get_threshold()[0]
        print(json.dumps({"before": before, "after": after, "threshold": threshold}))

    asyncio.run(main())
    """
)


def test_startup_freezes_what_it_built_and_applies_the_gen0_threshold(
    settings: Settings,
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKHUB_")},
        "TASKHUB_DB__URL": settings.db.url,
        "TASKHUB_REDIS__URL": settings.redis.url,
        "TASKHUB_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "TASKHUB_AUTH__SECRET_KEY": settings.auth.secret_key.get_secret_value(),
        "TASKHUB_GC_GEN0_THRESHOLD": "12345",
        "TASKHUB_LOG_LEVEL": "WARNING",
    }
    run = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    measured = json.loads(run.stdout.splitlines()[-1])
    # Nothing was frozen before the lifespan; its start-up froze the app's heap
    # (modules, routes, SQLAlchemy and Pydantic metadata: tens of thousands of objects).
    assert measured["before"] == 0
    assert measured["after"] > 10_000
    assert measured["threshold"] == 12345
