from __future__ import annotations

import asyncio
import base64
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from taskhub_api.tasks.filters import TaskFilters
from taskhub_api.tasks.repository import SORTS as SORT_SPECS
from taskhub_api.tasks.repository import build_list_query
from tests.support.users import Actor, NewUser, create_task

TASKS = "/api/v1/tasks"
PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
BASE = datetime(2027, 1, 1, tzinfo=UTC)


async def walk(
    client: httpx.AsyncClient, actor: Actor, params: dict[str, Any], limit: int = 7
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get(TASKS, params=query, headers=actor.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["meta"]["next_cursor"]
        assert page["meta"]["has_more"] == (cursor is not None)
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def expected_order(tasks: list[dict[str, Any]], sort: str) -> list[str]:
    descending = sort.startswith("-")
    field = sort.lstrip("-")

    def key(t: dict[str, Any]) -> tuple[Any, ...]:
        if field == "priority":
            return (PRIORITY_RANK[t["priority"]], t["created_at"], t["id"])
        return (t[field], t["id"])

    if field == "due_at":
        dated = sorted((t for t in tasks if t["due_at"]), key=key, reverse=descending)
        undated = sorted(
            (t for t in tasks if not t["due_at"]), key=lambda t: t["id"], reverse=descending
        )
        return [t["id"] for t in dated + undated]  # NULLs last either way
    return [t["id"] for t in sorted(tasks, key=key, reverse=descending)]


@pytest.fixture
async def corpus(
    client: httpx.AsyncClient, new_user: NewUser
) -> tuple[Actor, list[dict[str, Any]]]:
    admin = await new_user("admin")
    bob = await new_user()
    rng = random.Random(7)
    words = ["deploy", "database", "migration", "invoice", "customer", "kubernetes"]
    tasks = []
    for i in range(40):
        due = BASE + timedelta(days=rng.randint(0, 5)) if i % 4 else None  # ties and NULLs
        tasks.append(
            await create_task(
                client,
                admin,
                title=f"{rng.choice(words)} item {i}",
                description=f"about {rng.choice(words)}",
                status=rng.choice(["todo", "in_progress", "done"]),
                priority=rng.choice(list(PRIORITY_RANK)),
                labels=rng.sample(["ops", "web", "db", "urgent"], rng.randint(0, 2)),
                due_at=due.isoformat() if due else None,
                assignee_id=str(bob.id) if i % 3 == 0 else None,
            )
        )
    return admin, tasks


SORTS = ["-created_at", "created_at", "due_at", "-due_at", "priority", "-priority", "-updated_at"]


@pytest.mark.parametrize("sort", SORTS)
async def test_every_sort_walks_in_order(
    client: httpx.AsyncClient, corpus: tuple[Actor, list[dict[str, Any]]], sort: str
) -> None:
    admin, tasks = corpus
    items = await walk(client, admin, {"sort": sort})
    assert [t["id"] for t in items] == expected_order(tasks, sort)


@pytest.mark.parametrize("sort", SORTS)
async def test_every_sort_walks_a_users_tasks_in_order(
    client: httpx.AsyncClient, new_user: NewUser, sort: str
) -> None:
    """A regular user's list (owner and assignee branches, and for due_at the dated
    rows and the NULL block of each) in the same order as everyone's."""
    admin, carol = await new_user("admin"), await new_user()
    rng = random.Random(sort)
    visible = []
    for i in range(36):
        due = BASE + timedelta(days=rng.randint(0, 4)) if i % 3 else None
        fields = {
            "title": f"item {i}",
            "priority": rng.choice(list(PRIORITY_RANK)),
            "due_at": due.isoformat() if due else None,
        }
        if i % 2:
            task = await create_task(client, carol, **fields)
        else:  # half of the others' tasks are assigned to her, the rest she cannot see
            assigned = i % 4 == 0
            task = await create_task(
                client, admin, **fields, assignee_id=str(carol.id) if assigned else None
            )
            if not assigned:
                continue
        visible.append(task)
    items = await walk(client, carol, {"sort": sort}, limit=5)
    assert [t["id"] for t in items] == expected_order(visible, sort)


async def test_a_users_assignee_filter_keeps_to_what_they_may_read(
    client: httpx.AsyncClient, new_user: NewUser
) -> None:
    admin, carol, dave = await new_user("admin"), await new_user(), await new_user()
    mine_to_me = await create_task(client, carol, assignee_id=str(carol.id))
    mine_to_dave = await create_task(client, carol, assignee_id=str(dave.id))
    admins_to_me = await create_task(client, admin, assignee_id=str(carol.id))
    await create_task(client, admin, assignee_id=str(dave.id))  # carol cannot read it
    await create_task(client, carol)
    cases = [(carol, {mine_to_me["id"], admins_to_me["id"]}), (dave, {mine_to_dave["id"]})]
    for assignee, want in cases:
        for sort in SORTS:
            params = {"assignee_id": str(assignee.id), "sort": sort}
            got = [t["id"] for t in await walk(client, carol, params, limit=1)]
            assert sorted(got) == sorted(want), (assignee.username, sort)


async def test_every_filter(
    client: httpx.AsyncClient, corpus: tuple[Actor, list[dict[str, Any]]]
) -> None:
    admin, tasks = corpus
    bob_id = next(t["assignee_id"] for t in tasks if t["assignee_id"])
    cutoff = (BASE + timedelta(days=3)).isoformat().replace("+00:00", "Z")
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"status": "done"}, lambda t: t["status"] == "done"),
        ({"status": ["todo", "done"]}, lambda t: t["status"] in ("todo", "done")),
        ({"priority": "urgent"}, lambda t: t["priority"] == "urgent"),
        ({"assignee_id": bob_id}, lambda t: t["assignee_id"] == bob_id),
        ({"label": "ops"}, lambda t: "ops" in t["labels"]),
        ({"label": ["ops", "db"]}, lambda t: {"ops", "db"} <= set(t["labels"])),
        ({"due_before": cutoff}, lambda t: t["due_at"] is not None and t["due_at"] < cutoff),
        ({"due_after": cutoff}, lambda t: t["due_at"] is not None and t["due_at"] >= cutoff),
        ({"q": "databases"}, lambda t: "database" in t["title"] + t["description"]),
        (
            {"q": "kubernetes -deploy"},
            lambda t: (
                "kubernetes" in t["title"] + t["description"]
                and "deploy" not in t["title"] + t["description"]
            ),
        ),
        (
            {"status": "todo", "priority": ["high", "urgent"]},
            lambda t: t["status"] == "todo" and t["priority"] in ("high", "urgent"),
        ),
    ]
    for params, predicate in cases:
        got = {t["id"] for t in await walk(client, admin, params, limit=5)}
        want = {t["id"] for t in tasks if predicate(t)}
        assert got == want, params
        assert want or params.get("q"), f"corpus has no match for {params}"


async def test_label_and_text_filters_of_a_regular_user(
    client: httpx.AsyncClient, new_user: NewUser
) -> None:
    """Checked on the user's own rows (no GIN index condition): the same answers."""
    admin, carol = await new_user("admin"), await new_user()
    rng = random.Random(11)
    words = ["deploy", "database", "invoice", "kubernetes"]
    visible = []
    for i in range(30):
        fields = {
            "title": f"{rng.choice(words)} item {i}",
            "labels": rng.sample(["ops", "web", "db"], rng.randint(0, 2)),
        }
        if i % 3 == 0:
            visible.append(await create_task(client, carol, **fields))
        else:
            assignee = str(carol.id) if i % 3 == 1 else None
            task = await create_task(client, admin, **fields, assignee_id=assignee)
            if assignee:
                visible.append(task)
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"label": "ops"}, lambda t: "ops" in t["labels"]),
        ({"label": ["ops", "db"]}, lambda t: {"ops", "db"} <= set(t["labels"])),
        ({"q": "databases"}, lambda t: "database" in t["title"]),
        ({"q": "kubernetes -deploy"}, lambda t: "kubernetes" in t["title"]),
        ({"q": "invoice", "assignee_id": str(carol.id)}, lambda t: "invoice" in t["title"]),
    ]
    for params, predicate in cases:
        got = {t["id"] for t in await walk(client, carol, params, limit=4)}
        mine = [t for t in visible if params.get("assignee_id") in (None, t["assignee_id"])]
        want = {t["id"] for t in mine if predicate(t)}
        assert want, f"corpus has no match for {params}"
        assert got == want, params


class TestCursor:
    async def test_cursor_is_bound_to_sort_and_filters(
        self, client: httpx.AsyncClient, corpus: tuple[Actor, list[dict[str, Any]]]
    ) -> None:
        admin, _ = corpus
        first = await client.get(
            TASKS, params={"limit": 3, "status": "todo"}, headers=admin.headers
        )
        cursor = first.json()["meta"]["next_cursor"]
        for params in ({"status": "done"}, {"status": "todo", "sort": "created_at"}, {}):
            response = await client.get(
                TASKS, params={"limit": 3, "cursor": cursor, **params}, headers=admin.headers
            )
            assert response.status_code == 400, params
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["errors"][0]["field"] == "cursor"

    async def test_altered_or_garbage_cursor_is_400(
        self, client: httpx.AsyncClient, corpus: tuple[Actor, list[dict[str, Any]]]
    ) -> None:
        admin, _ = corpus
        first = await client.get(TASKS, params={"limit": 3}, headers=admin.headers)
        cursor = first.json()["meta"]["next_cursor"]
        body, sig = cursor.split(".")
        raw = base64.urlsafe_b64decode(body + "==").replace(b'"s"', b'"S"')
        forged = base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + sig
        for bad in (forged, cursor[:-2] + "AA", "garbage", "a.b.c", "....", "é"):
            response = await client.get(TASKS, params={"cursor": bad}, headers=admin.headers)
            assert response.status_code == 400, bad


@pytest.mark.parametrize("sort", SORTS)
async def test_walk_during_concurrent_inserts_and_deletes(
    client: httpx.AsyncClient, new_user: NewUser, sort: str
) -> None:
    """Every task that exists for the whole walk is returned exactly once."""
    owner = await new_user()
    rng = random.Random(sort)

    async def make(label: str) -> dict[str, Any]:
        due = BASE + timedelta(days=rng.randint(0, 3)) if rng.random() < 0.7 else None
        return await create_task(
            client,
            owner,
            title=label,
            priority=rng.choice(list(PRIORITY_RANK)),
            due_at=due.isoformat() if due else None,
        )

    stable = [await make(f"stable {i}") for i in range(40)]
    doomed = [await make(f"doomed {i}") for i in range(20)]
    walking = asyncio.Event()

    async def churn() -> None:
        await walking.wait()
        for task in doomed:
            await make("newcomer")
            response = await client.delete(f"{TASKS}/{task['id']}", headers=owner.headers)
            assert response.status_code == 204
            await asyncio.sleep(0)

    async def walk_slowly() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {"sort": sort, "limit": 4, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(TASKS, params=query, headers=owner.headers)).json()
            items += page["items"]
            walking.set()
            await asyncio.sleep(0.005)
            cursor = page["meta"]["next_cursor"]
            if cursor is None:
                return items

    items, _ = await asyncio.gather(walk_slowly(), churn())
    ids = [t["id"] for t in items]
    assert len(ids) == len(set(ids)), "a task was returned twice"
    assert {t["id"] for t in stable} <= set(ids), "a task that existed throughout was skipped"


def _rows_read(node: dict[str, Any]) -> int:
    """Rows that the plan's table and index scans produced or filtered out."""
    own = 0
    if node["Node Type"] in ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"):
        own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
    return own + sum(_rows_read(child) for child in node.get("Plans", []))


class TestPlans:
    """Each sort's page reads no more rows than the page, for readers of everything and
    for a regular user, on the first page and on one deep in the list (EXPLAIN ANALYZE
    on a few thousand tasks: enough for PostgreSQL to prefer an index walk wherever one
    gives the order)."""

    @pytest.fixture
    async def loaded(self, pg: asyncpg.Connection, new_user: NewUser) -> Actor:
        me, other = await new_user(), await new_user()
        # 3,000 tasks each; a third of each user's assigned to the other, a third undated.
        await pg.execute(
            """
            INSERT INTO task (owner_id, assignee_id, title, priority, due_at, created_at,
                              updated_at)
            SELECT CASE WHEN n % 2 = 0 THEN $1::uuid ELSE $2::uuid END,
                   CASE WHEN n % 3 = 0 THEN (CASE WHEN n % 2 = 0 THEN $2::uuid ELSE $1::uuid END)
                   END,
                   'task ' || n,
                   (ARRAY['low', 'medium', 'high', 'urgent'])[1 + n % 4]::task_priority,
                   CASE WHEN n % 3 <> 1 THEN now() + (n % 97) * interval '1 hour' END,
                   now() - n * interval '1 minute',
                   now() - (n * 7 % 6000) * interval '1 minute'
            FROM generate_series(1, 6000) AS n
            """,
            me.id,
            other.id,
        )
        await pg.execute("ANALYZE task")
        return me

    @pytest.mark.parametrize("sort", SORTS)
    @pytest.mark.parametrize("audience", ["all", "user"])
    async def test_a_page_reads_only_the_page(
        self, pg: asyncpg.Connection, loaded: Actor, sort: str, audience: str
    ) -> None:
        spec = SORT_SPECS[sort]
        visible_to = loaded.id if audience == "user" else None

        def page(after: list[Any] | None, limit: int = 21) -> tuple[str, list[Any]]:
            return build_list_query(
                visible_to=visible_to, filters=TaskFilters(), sort=spec, after=after, limit=limit
            )

        whole, whole_args = page(None, 10_000)
        everything = await pg.fetch(whole, *whole_args)
        # The first page, one deep in the list, and one in the NULL block of due_at.
        starts = [None, everything[1000], everything[-30]]
        for start in starts:
            after = None if start is None else [start[c] for c in (*spec.columns, "id")]
            sql, args = page(after)
            plan = orjson.loads(await pg.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args))[
                0
            ]["Plan"]
            branches = max(1, sql.count("(SELECT id, "))
            assert _rows_read(plan) <= 21 * branches, (after, sql)
