"""Runs the Procfile's processes (api, worker, relay, beat) plus a separate dispatcher,
and restarts whichever dies after a short backoff, as Kubernetes restarts a pod's
container (honcho would stop them all when one exits)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.stack import ROOT, TASKHUB

BACKOFF_SECONDS = 1.0


@dataclass
class Exit:
    name: str
    pid: int
    returncode: int
    at: float  # seconds since the run's start


@dataclass
class Proc:
    name: str
    args: list[str]
    ready: str  # a log line's text once the process serves
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    started_offset: int = 0  # log size when the current incarnation started
    starts: int = 0
    restart_at: float | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def is_ready(self) -> bool:
        if self.popen is None or self.popen.poll() is not None:
            return False
        with self.log.open("rb") as handle:
            handle.seek(self.started_offset)
            return self.ready.encode() in handle.read()


@dataclass
class Supervisor:
    env: dict[str, str]
    logs: Path
    t0: float
    procs: dict[str, Proc] = field(default_factory=dict)
    exits: list[Exit] = field(default_factory=list)
    killed: list[tuple[str, float]] = field(default_factory=list)  # (name, when)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def add(self, name: str, args: list[str], ready: str) -> None:
        self.procs[name] = Proc(name, args, ready, self.logs / f"{name}.log")

    def _spawn(self, proc: Proc) -> None:
        proc.log.parent.mkdir(parents=True, exist_ok=True)
        with proc.log.open("ab") as out:
            proc.started_offset = out.tell()
            out.write(f"=== start {proc.starts + 1} at {self.now():.1f}s\n".encode())
            out.flush()
            proc.popen = subprocess.Popen(
                [str(TASKHUB), *proc.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        proc.starts += 1
        proc.restart_at = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        for proc in self.procs.values():
            self._spawn(proc)
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                for proc in self.procs.values():
                    assert proc.popen is not None
                    code = proc.popen.poll()
                    if code is not None and proc.restart_at is None:
                        self.exits.append(Exit(proc.name, proc.popen.pid, code, self.now()))
                        # A container's other processes die with its main one.
                        _kill_group(proc.popen.pid)
                        proc.restart_at = time.monotonic() + BACKOFF_SECONDS
                    if proc.restart_at is not None and time.monotonic() >= proc.restart_at:
                        self._spawn(proc)
            time.sleep(0.1)

    def wait_ready(self, names: list[str] | None = None, timeout: float = 90) -> list[str]:
        """Waits until the processes serve; the names of those that still do not."""
        deadline = time.monotonic() + timeout
        pending = list(names or self.procs)
        while pending and time.monotonic() < deadline:
            pending = [n for n in pending if not self.procs[n].is_ready()]
            time.sleep(0.2)
        return pending

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        with self._lock:
            pid = self.procs[name].pid
            self.killed.append((name, self.now()))
            os.kill(pid, sig)
        return pid

    def signal_pid(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def kill_pid(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    def children(self, name: str) -> list[int]:
        pid = self.procs[name].pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        for proc in self.procs.values():
            if proc.popen is not None and proc.popen.poll() is None:
                _signal_group(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc.popen.pid)
                proc.popen.wait(5)
            _kill_group(proc.popen.pid)  # orphaned pool processes, if any


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _kill_group(pid: int) -> None:
    _signal_group(pid, signal.SIGKILL)
