"""The test data stack: the project's own primary, replica, PgBouncer and Redis
(scripts/devstack.sh, the script `make dev` uses), on the test ports under
.local/teststack. Tests stop and start its parts for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "devstack.sh"
HOST = "127.0.0.1"
PRIMARY_PORT = 55432
REPLICA_PORT = 55433
PGBOUNCER_PORT = 56432
REDIS_PORT = 56379
DB = "taskhub"
ENV = {
    "STACK_DIR": str(ROOT / ".local" / "teststack"),
    "STACK_DB": DB,
    "PRIMARY_PORT": str(PRIMARY_PORT),
    "REPLICA_PORT": str(REPLICA_PORT),
    "PGBOUNCER_PORT": str(PGBOUNCER_PORT),
    "REDIS_PORT": str(REDIS_PORT),
}
REDIS_URL = f"redis://{HOST}:{REDIS_PORT}/0"
PRIMARY_DSN = f"postgresql://postgres@{HOST}:{PRIMARY_PORT}/{DB}"
REPLICA_DSN = f"postgresql://postgres@{HOST}:{REPLICA_PORT}/{DB}"
BOUNCER_URL = f"postgresql+asyncpg://postgres@{HOST}:{PGBOUNCER_PORT}/{DB}"
BOUNCER_RO_URL = f"postgresql+asyncpg://postgres@{HOST}:{PGBOUNCER_PORT}/{DB}_ro"


def devstack(*args: str, timeout: float = 180) -> str:
    """Run scripts/devstack.sh with the test ports; its output, or an error with it."""
    result = subprocess.run(
        [str(SCRIPT), *args],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"devstack {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout
