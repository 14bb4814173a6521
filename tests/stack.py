"""The test data stack: the project's own primary, replica, PgBouncer and Redis
(scripts/devstack.sh, the script `make dev` uses), on the test ports under
.local/teststack. Tests stop and start its parts for real.

`TASKHUB_TEST_STACK_PORT_OFFSET=N` moves the four ports by N, so that a second
checkout on the same machine runs its tests beside the first one's stack.
`python -m tests.stack up|down|purge|status|...` runs the script with these settings
(`make test` starts the stack that way first, so a stack that cannot start stops it
with the script's one-line reason)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "devstack.sh"
HOST = "127.0.0.1"
_OFFSET = int(os.environ.get("TASKHUB_TEST_STACK_PORT_OFFSET", "0"))
PRIMARY_PORT = 55432 + _OFFSET
REPLICA_PORT = 55433 + _OFFSET
PGBOUNCER_PORT = 56432 + _OFFSET
REDIS_PORT = 56379 + _OFFSET
DB = "taskhub"
# STACK_DIR names the stack; the script decides where its data lives (see its header).
ENV = {
    "STACK_DIR": str(ROOT / ".local" / "teststack"),
    "STACK_DB": DB,
    "PRIMARY_PORT": str(PRIMARY_PORT),
    "REPLICA_PORT": str(REPLICA_PORT),
    "PGBOUNCER_PORT": str(PGBOUNCER_PORT),
    "REDIS_PORT": str(REDIS_PORT),
    "STACK_PORT_SETTING": "TASKHUB_TEST_STACK_PORT_OFFSET",  # named by a port clash
}
REDIS_URL = f"redis://{HOST}:{REDIS_PORT}/0"
PRIMARY_DSN = f"postgresql://postgres@{HOST}:{PRIMARY_PORT}/{DB}"
REPLICA_DSN = f"postgresql://postgres@{HOST}:{REPLICA_PORT}/{DB}"
PRIMARY_URL = f"postgresql+asyncpg://postgres@{HOST}:{PRIMARY_PORT}/{DB}"
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


if __name__ == "__main__":
    # The script's own output and exit status, nothing added.
    sys.exit(subprocess.run([str(SCRIPT), *sys.argv[1:]], env={**os.environ, **ENV}).returncode)
