"""A bounded mixed load: several users create, patch (assign, change status), delete,
read and list tasks, and new users register, each request under a client timeout.

Every request is recorded with its status (or why there was none). Every write carries
a marker the reconciliation finds in the database: a task's title and description on
creation, a new description on every patch (so each patch's events are its own), the
username of a registration. A write answered 2xx must have happened exactly once; one
that got no answer (timeout, reset) or a 5xx is *unknown*: at most once; a 4xx: never.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from tests.chaos.receivers import WebhookReceiver

TIMEOUT = httpx.Timeout(10.0, connect=3.0)
PASSWORD = "correct-horse-chaos-7"
TASK_EVENTS = ["task.created", "task.updated", "task.assigned", "task.deleted"]
ADMIN_EVENTS = ["user.registered", "task.created", "task.deleted"]
STATUSES = ["todo", "in_progress", "done"]


@dataclass
class Call:
    method: str
    route: str
    status: int | None  # None: no answer
    retry_after: str | None
    t_start: float
    t_end: float
    error: str = ""  # the exception's name when there was no answer

    @property
    def hung(self) -> bool:
        return self.error.endswith("Timeout")


@dataclass
class Write:
    kind: str  # register, create, patch, delete
    marker: str  # username; title (create); description (patch); task id (delete)
    task_id: str | None = None
    assignee: bool = False  # the write sets a (non-null) assignee
    statuses: list[int | None] = field(default_factory=list)

    @property
    def state(self) -> str:
        if any(s is not None and 200 <= s < 300 for s in self.statuses):
            return "acked"
        if all(s is not None and 400 <= s < 500 for s in self.statuses):
            return "refused"
        return "unknown"


@dataclass
class User:
    username: str
    id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    live: list[str] = field(default_factory=list)  # tasks that exist and were not deleted


@dataclass
class Hook:
    id: str
    owner: str  # username
    path: str


class Load:
    def __init__(
        self,
        base_url: str,
        clock: Callable[[], float],
        receiver: WebhookReceiver,
        replica_dsn: str,
        seed: int,
        users: int = 4,
        pace: tuple[float, float] = (0.2, 0.6),
    ) -> None:
        self.base_url = base_url
        self.clock = clock
        self.receiver = receiver
        self.replica_dsn = replica_dsn
        self.rng = random.Random(f"load:{seed}")
        self.run_id = secrets.token_hex(3)
        self.n_users = users
        self.pace = pace
        self.calls: list[Call] = []
        self.writes: list[Write] = []
        self.users: list[User] = []
        self.hooks: list[Hook] = []
        self._registrations = 0
        self._client = httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT)

    async def close(self) -> None:
        await self._client.aclose()

    async def request(
        self, method: str, route: str, url: str, **kwargs: Any
    ) -> httpx.Response | None:
        started = self.clock()
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.calls.append(
                Call(method, route, None, None, started, self.clock(), type(exc).__name__)
            )
            return None
        self.calls.append(
            Call(
                method,
                route,
                response.status_code,
                response.headers.get("Retry-After"),
                started,
                self.clock(),
            )
        )
        return response

    # Setup (before the faults): users, tokens, webhook subscriptions

    async def setup(self, admin_username: str, admin_password: str) -> None:
        admin = User(admin_username)
        await self._login(admin, admin_password)
        await self._subscribe(admin, ADMIN_EVENTS)
        # Subscribers are read at dispatch time, maybe on the replica: every hook must
        # be there before the first event it should see.
        await self._replica_has_hooks()
        for i in range(self.n_users):
            user = User(f"chaos-{self.run_id}-u{i}")
            if await self._register(user.username) != "acked":
                raise RuntimeError(f"setup: could not register {user.username}")
            await self._login(user, PASSWORD)
            self.users.append(user)
        for user in self.users[:3]:
            await self._subscribe(user, TASK_EVENTS)
        await self._replica_has_hooks()

    async def _login(self, user: User, password: str) -> None:
        for _ in range(20):
            data = {"username": user.username, "password": password}
            response = await self.request("POST", "/auth/token", "/api/v1/auth/token", data=data)
            if response is not None and response.status_code == 200:
                token = response.json()["access_token"]
                user.headers = {"Authorization": f"Bearer {token}"}
                me = await self.request(
                    "GET", "/users/me", "/api/v1/users/me", headers=user.headers
                )
                if me is not None and me.status_code == 200:
                    user.id = me.json()["id"]
                    return
            await asyncio.sleep(1)
        raise RuntimeError(f"setup: could not log in as {user.username}")

    async def _subscribe(self, user: User, events: list[str]) -> None:
        path = f"/hooks/{user.username}"
        secret = "whsec_" + secrets.token_urlsafe(24)
        self.receiver.secrets[path] = secret
        body = {"url": self.receiver.url(path), "events": events, "secret": secret}
        response = await self.request(
            "POST", "/webhooks", "/api/v1/webhooks", json=body, headers=user.headers
        )
        if response is None or response.status_code != 201:
            detail = response.text if response is not None else "no answer"
            raise RuntimeError(f"setup: webhook of {user.username} refused: {detail}")
        self.hooks.append(Hook(response.json()["id"], user.username, path))

    async def _replica_has_hooks(self) -> None:
        deadline = time.monotonic() + 30
        conn = await asyncpg.connect(self.replica_dsn)
        try:
            while await conn.fetchval("SELECT count(*) FROM webhook") < len(self.hooks):
                if time.monotonic() > deadline:
                    raise RuntimeError("setup: the replica does not show the webhooks")
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    # Writes

    async def _register(self, username: str) -> str:
        write = Write("register", username)
        self.writes.append(write)
        body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
        for attempt in range(3):
            response = await self.request(
                "POST", "/auth/register", "/api/v1/auth/register", json=body
            )
            write.statuses.append(response.status_code if response is not None else None)
            if response is not None and response.status_code < 500:
                break
            await self._backoff(response, attempt)
        return write.state

    async def _backoff(self, response: httpx.Response | None, attempt: int) -> None:
        wait = 0.5 * 2**attempt
        if response is not None and response.headers.get("Retry-After", "").isdigit():
            wait = min(3.0, float(response.headers["Retry-After"]))
        await asyncio.sleep(wait)

    def _other(self, user: User) -> User:
        return self.rng.choice([u for u in self.users if u is not user])

    async def create(self, user: User) -> None:
        marker = f"chaos {uuid.uuid4()}"
        body: dict[str, Any] = {"title": marker, "description": marker, "labels": ["chaos"]}
        if self.rng.random() < 0.3:
            body["assignee_id"] = self._other(user).id
        write = Write("create", marker, assignee="assignee_id" in body)
        self.writes.append(write)
        # A client that got no answer (or a 5xx) retries with the same key: the
        # server must create the task once.
        headers = {**user.headers, "Idempotency-Key": marker.split()[1]}
        for attempt in range(3):
            response = await self.request(
                "POST", "/tasks", "/api/v1/tasks", json=body, headers=headers
            )
            write.statuses.append(response.status_code if response is not None else None)
            if response is not None and response.status_code < 500:
                if response.status_code == 201:
                    write.task_id = response.json()["id"]
                    user.live.append(write.task_id)
                break
            await self._backoff(response, attempt)

    async def patch(self, user: User) -> None:
        task_id = self.rng.choice(user.live)
        marker = f"patch {uuid.uuid4()}"
        body: dict[str, Any] = {"description": marker}
        if self.rng.random() < 0.4:
            body["assignee_id"] = self._other(user).id if self.rng.random() < 0.8 else None
        if self.rng.random() < 0.7:
            body["status"] = self.rng.choice(STATUSES)
        write = Write("patch", marker, task_id, assignee=bool(body.get("assignee_id")))
        self.writes.append(write)
        response = await self.request(
            "PATCH", "/tasks/{id}", f"/api/v1/tasks/{task_id}", json=body, headers=user.headers
        )
        write.statuses.append(response.status_code if response is not None else None)

    async def delete(self, user: User) -> None:
        task_id = self.rng.choice(user.live)
        user.live.remove(task_id)  # whatever the answer: never touched again
        write = Write("delete", task_id, task_id)
        self.writes.append(write)
        response = await self.request(
            "DELETE", "/tasks/{id}", f"/api/v1/tasks/{task_id}", headers=user.headers
        )
        write.statuses.append(response.status_code if response is not None else None)

    # Reads

    async def get(self, user: User) -> None:
        task_id = self.rng.choice(user.live)
        await self.request("GET", "/tasks/{id}", f"/api/v1/tasks/{task_id}", headers=user.headers)

    async def list(self, user: User) -> None:
        params = {"limit": "20"}
        if self.rng.random() < 0.3:
            params["status"] = self.rng.choice(STATUSES)
        await self.request("GET", "/tasks", "/api/v1/tasks", params=params, headers=user.headers)

    async def register(self, user: User) -> None:
        self._registrations += 1
        await self._register(f"chaos-{self.run_id}-r{self._registrations}")

    # The load

    async def client(self, user: User, stop: asyncio.Event) -> None:
        while not stop.is_set():
            ops: list[tuple[Callable[[User], Any], float]] = [
                (self.create, 3.0 if len(user.live) < 30 else 1.0),
                (self.list, 2.0),
                (self.register, 0.15),
            ]
            if user.live:
                ops += [(self.patch, 4.0), (self.get, 2.0), (self.delete, 0.7)]
            op = self.rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
            await op(user)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.pace))

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self.client(user, stop) for user in self.users))
