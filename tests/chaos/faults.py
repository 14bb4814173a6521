"""The fault schedule, drawn from the seed, and its injection.

Every kind comes once per round, in an order and with durations and gaps drawn from
``random.Random(seed)``; the first round is packed into the first minute so that a
60-second run has all of them. Each fault's window runs from its start until what it
broke serves again (a killed process is ready again, a stopped server is back), plus
``GRACE`` seconds for attribution. Faults may overlap, as in real outages, except
two of one group (the replica's, the worker's).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.chaos.stack import ChaosStack
from tests.chaos.supervisor import Supervisor

# Seconds after a fault healed during which a 5xx is still its doing (pools refill,
# the replica catches up, health probes notice).
GRACE = 5.0
# Estimated seconds each kind takes to inject and heal, beyond its drawn duration.
COST = {
    "kill_api": 5.0,
    "kill_worker": 6.0,
    "kill_worker_child": 2.0,
    "kill_relay": 4.0,
    "kill_dispatcher": 4.0,
    "restart_rabbitmq": 12.0,
    "stop_redis": 1.0,
    "pause_replica": 0.5,
    "stop_replica": 3.0,
    "restart_pgbouncer": 1.5,
    "stop_primary": 3.0,
}
KINDS = tuple(COST)
# (low, high) of the drawn duration: how long the thing stays stopped or paused.
DURATION = {
    "restart_rabbitmq": (0.0, 2.0),
    "stop_redis": (2.0, 5.0),
    "pause_replica": (3.0, 6.0),
    "stop_replica": (2.0, 4.0),
    "stop_primary": (2.0, 5.0),
}


@dataclass(frozen=True)
class Fault:
    at: float  # earliest start, seconds into the load
    kind: str
    duration: float


@dataclass
class Window:
    fault: Fault
    start: float
    end: float | None = None
    detail: str = ""
    error: str | None = None  # the fault could not be injected or did not heal

    def during(self, t: float) -> bool:
        """Whether ``t`` falls in the fault itself (no grace)."""
        return self.start - 0.5 <= t <= (self.end if self.end is not None else float("inf"))

    def covers(self, t_start: float, t_end: float) -> bool:
        end = (self.end if self.end is not None else float("inf")) + GRACE
        return t_start <= end and t_end >= self.start - 0.5


def schedule(seed: int, seconds: float) -> list[Fault]:
    """The first round spreads every kind over the first minute (or the whole run if
    shorter); later rounds follow with gaps of 4-14 s until the run's end."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    kinds = list(KINDS)
    rng.shuffle(kinds)
    slot = max(1.0, (min(seconds, 60.0) - 12.0) / len(kinds))
    for i, kind in enumerate(kinds):
        at = 2.0 + i * slot + rng.uniform(0.0, slot / 2)
        faults.append(Fault(round(at, 1), kind, _duration(rng, kind)))
    t = faults[-1].at
    while True:
        rng.shuffle(kinds)
        for kind in kinds:
            t += rng.uniform(4.0, 14.0)
            duration = _duration(rng, kind)
            if t + COST[kind] + duration > seconds - 5.0:
                return faults
            faults.append(Fault(round(t, 1), kind, duration))


def _duration(rng: random.Random, kind: str) -> float:
    return round(rng.uniform(*DURATION.get(kind, (0.0, 0.0))), 1)


# Faults of one group never overlap: one waits until the previous one healed.
GROUPS = {
    "pause_replica": "replica",
    "stop_replica": "replica",
    "kill_worker": "worker",
    "kill_worker_child": "worker",
}


class Injector:
    def __init__(self, stack: ChaosStack, supervisor: Supervisor, seed: int) -> None:
        self.stack = stack
        self.supervisor = supervisor
        self.seed = seed
        self.windows: list[Window] = []

    def now(self) -> float:
        return self.supervisor.now()

    async def run(self, faults: list[Fault], load_t0: float) -> None:
        """Injects the faults, each at its time (``load_t0``: the supervisor time the
        load began); they may overlap, except within a group (``GROUPS``)."""
        locks = {group: asyncio.Lock() for group in set(GROUPS.values())}
        await asyncio.gather(
            *(
                self._inject(i, f, load_t0, locks.get(GROUPS.get(f.kind, ""), asyncio.Lock()))
                for i, f in enumerate(faults)
            )
        )

    async def _inject(self, index: int, fault: Fault, load_t0: float, lock: asyncio.Lock) -> None:
        delay = load_t0 + fault.at - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        async with lock:
            window = Window(fault, self.now())
            self.windows.append(window)
            action: Callable[[Fault, int], str] = getattr(self, fault.kind)
            try:
                window.detail = await asyncio.to_thread(action, fault, index)
            except Exception as exc:
                window.error = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            window.end = self.now()

    # Processes: kill -9, the supervisor restarts them

    def _kill_and_wait(self, name: str) -> str:
        proc = self.supervisor.procs[name]
        before = proc.starts
        pid = self.supervisor.kill(name)
        deadline = time.monotonic() + 90
        while proc.starts == before or not proc.is_ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready again 90 s after kill -9 of {pid}")
            time.sleep(0.1)
        return f"pid {pid}; ready again as {proc.pid}"

    def kill_api(self, fault: Fault, index: int) -> str:
        return self._kill_and_wait("api")

    def kill_worker(self, fault: Fault, index: int) -> str:
        return self._kill_and_wait("worker")

    def kill_relay(self, fault: Fault, index: int) -> str:
        return self._kill_and_wait("relay")

    def kill_dispatcher(self, fault: Fault, index: int) -> str:
        return self._kill_and_wait("dispatcher")

    def kill_worker_child(self, fault: Fault, index: int) -> str:
        children = self.supervisor.children("worker")
        if not children:
            raise RuntimeError("the worker has no pool process")
        victim = random.Random(f"{self.seed}:{index}").choice(children)
        busy = _busy(children)
        if busy:  # one in the middle of a job, if any is
            victim = busy[0]
        self.supervisor.kill_pid(victim)
        deadline = time.monotonic() + 30
        while True:
            now = self.supervisor.children("worker")
            if victim not in now and len(now) >= len(children):
                return f"pool process {victim} of {len(children)} (busy: {bool(busy)}); replaced"
            if time.monotonic() > deadline:
                raise RuntimeError(f"pool process {victim} not replaced within 30 s")
            time.sleep(0.1)

    # Servers

    def restart_rabbitmq(self, fault: Fault, index: int) -> str:
        self.stack.rabbit("stop")
        time.sleep(fault.duration)
        _heal(lambda: self.stack.rabbit("start"))
        return "node stopped and started"

    def _stop_start(self, component: str, fault: Fault) -> str:
        self.stack.devstack("stop", component)
        try:
            time.sleep(fault.duration)
        finally:
            _heal(lambda: self.stack.devstack("start", component))
        return f"{component} down {fault.duration:.1f}s"

    def stop_redis(self, fault: Fault, index: int) -> str:
        return self._stop_start("redis", fault)

    def stop_replica(self, fault: Fault, index: int) -> str:
        return self._stop_start("replica", fault)

    def stop_primary(self, fault: Fault, index: int) -> str:
        return self._stop_start("primary", fault)

    def restart_pgbouncer(self, fault: Fault, index: int) -> str:
        try:
            self.stack.devstack("restart", "pgbouncer")
        finally:
            _heal(lambda: self.stack.devstack("start", "pgbouncer"))
        return "pgbouncer restarted"

    def pause_replica(self, fault: Fault, index: int) -> str:
        pids = self.stack.replica_pids()
        for pid in pids:
            self.supervisor.signal_pid(pid, signal.SIGSTOP)
        try:
            time.sleep(fault.duration)
        finally:
            for pid in pids:
                self.supervisor.signal_pid(pid, signal.SIGCONT)
        return f"SIGSTOP {fault.duration:.1f}s of postmaster+walreceiver {pids}"


def _heal(start: Callable[[], object], attempts: int = 3) -> None:
    """Brings a component back, retrying: the run must end with a whole stack even if
    one start failed (the window still records the first error)."""
    for attempt in range(attempts):
        try:
            start()
            return
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            traceback.print_exc()
            time.sleep(2.0)


def _busy(pids: list[int]) -> list[int]:
    """Pool processes using CPU right now (a job runs), busiest first."""

    def ticks(pid: int) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[11]) + int(fields[12])  # utime + stime

    before = {pid: ticks(pid) for pid in pids}
    time.sleep(0.2)
    used = {pid: ticks(pid) - before[pid] for pid in pids}
    return sorted((p for p in pids if used[p] > 0), key=lambda p: -used[p])
