"""All task SQL.

Reads on the hot path (list, get) are plain SQL on the asyncpg connection under the
SQLAlchemy engine: the ORM and per-row model validation cost several times the query
itself. ``build_list_query`` is a pure function so the benchmark's raw-asyncpg
reference runs exactly the same SQL. Writes use SQLAlchemy Core in the request's
write session.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_api.db import DriverStatement, driver_connection
from taskhub_api.tasks.filters import TaskFilters
from taskhub_api.tasks.models import Task

COLUMNS = (
    "id",
    "owner_id",
    "assignee_id",
    "title",
    "description",
    "status",
    "priority",
    "labels",
    "due_at",
    "created_at",
    "updated_at",
    "version",
)
_SELECT = ", ".join(COLUMNS)
_CAST = {
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "due_at": "timestamptz",
    "priority": "task_priority",
    "id": "uuid",
}


@dataclass(frozen=True, slots=True)
class SortSpec:
    columns: tuple[str, ...]
    descending: bool
    nullable: bool = False  # only for a single nullable column; NULLs sort last


SORTS: dict[str, SortSpec] = {
    "-created_at": SortSpec(("created_at",), descending=True),
    "created_at": SortSpec(("created_at",), descending=False),
    "-updated_at": SortSpec(("updated_at",), descending=True),
    "due_at": SortSpec(("due_at",), descending=False, nullable=True),
    "-due_at": SortSpec(("due_at",), descending=True, nullable=True),
    "priority": SortSpec(("priority", "created_at"), descending=False),
    "-priority": SortSpec(("priority", "created_at"), descending=True),
}


@dataclass(slots=True)
class _Params:
    values: list[Any] = field(default_factory=list)

    def __call__(self, value: Any, cast: str | None = None) -> str:
        self.values.append(value)
        ref = f"${len(self.values)}"
        return f"{ref}::{cast}" if cast else ref


def build_list_query(
    *,
    visible_to: uuid.UUID | None,
    filters: TaskFilters,
    sort: SortSpec,
    after: list[Any] | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """SQL and arguments for one page. ``visible_to`` restricts to tasks that user owns
    or is assigned; ``after`` is the last row's sort key (sort columns, then id).

    Every branch of the query walks one index in order from the cursor and stops after
    ``limit`` rows, so a page costs the same however deep it is and however many tasks
    there are (filters aside: they skip rows on the walk)."""
    p = _Params()
    where = ["deleted_at IS NULL"]
    # "owner OR assignee" as two branches, each walking its own (user, sort key)
    # index in order, instead of one walk of the global index that filters out
    # almost every row of other users. With an assignee filter one branch is left:
    # the user's own assigned tasks are all visible, another's only if the user owns
    # them.
    seen_by: list[str | None] = [None]
    if visible_to is not None and filters.assignee_id != visible_to:
        me = p(visible_to)
        seen_by = [f"owner_id = {me}"]
        if filters.assignee_id is None:
            seen_by.append(f"assignee_id = {me} AND owner_id <> {me}")
    if filters.statuses:
        where.append(f"status = ANY({p(list(filters.statuses), 'task_status[]')})")
    if filters.priorities:
        where.append(f"priority = ANY({p(list(filters.priorities), 'task_priority[]')})")
    if filters.assignee_id is not None:
        where.append(f"assignee_id = {p(filters.assignee_id)}")
    # On one user's tasks (a regular user's list, or any list of one assignee) labels
    # and text are checked on that user's rows as the walk meets them: written as
    # functions, not operators, so the planner cannot intersect the walk with the GIN
    # indexes, whose posting lists for a common label or word grow with the whole
    # table (at 10M tasks 110,000 entries for "dashboard release", 81 ms, against a
    # user's 1,400 rows).
    # The text query is computed once per execution (an InitPlan): as a plain argument a
    # generic plan, which PostgreSQL's plan cache picks for these after five runs,
    # parses it again for every row (about doubling the cost of a user's page).
    if visible_to is not None or filters.assignee_id is not None:
        contains, matches = "arraycontains({}, {})", "ts_match_vq({}, (SELECT {}))"
    else:
        contains, matches = "{} @> {}", "{} @@ {}"
    if filters.labels:
        where.append(contains.format("labels", p(list(filters.labels), "varchar[]")))
    if filters.due_before is not None:
        where.append(f"due_at < {p(filters.due_before)}")
    if filters.due_after is not None:
        where.append(f"due_at >= {p(filters.due_after)}")
    if filters.q:
        query = f"websearch_to_tsquery('english', {p(filters.q)})"
        where.append(matches.format("search", query))
    op, direction = ("<", "DESC") if sort.descending else (">", "ASC")
    parts = _parts(p, sort, after, op)
    branches = [
        " AND ".join(c for c in (visible, *where, part) if c)
        for visible in seen_by
        for part in parts
    ]
    order = ", ".join(f"{c} {direction}" for c in (*sort.columns, "id"))
    limit_ref = p(limit)
    # Only fixed identifiers are interpolated; every value is a bind parameter.
    if len(branches) == 1:
        sql = f"SELECT {_SELECT} FROM task WHERE {branches[0]} ORDER BY {order} LIMIT {limit_ref}"  # noqa: S608
        return sql, p.values
    union = " UNION ALL ".join(
        f"(SELECT {_SELECT} FROM task WHERE {b} ORDER BY {order} LIMIT {limit_ref})"  # noqa: S608
        for b in branches
    )
    nulls = " NULLS LAST" if sort.nullable else ""
    merged = ", ".join(f"{c} {direction}{nulls}" for c in sort.columns) + f", id {direction}"
    sql = f"SELECT {_SELECT} FROM ({union}) AS visible ORDER BY {merged} LIMIT {limit_ref}"  # noqa: S608
    return sql, p.values


def _parts(p: _Params, sort: SortSpec, after: list[Any] | None, op: str) -> list[str | None]:
    """The keyset condition of each part of the order. A nullable sort (NULLs last in
    both directions) is two parts: the rows with a value, walked on the (column, id)
    index in the sort's direction, then the NULL block, walked on the same index by id.
    One walk cannot do both in descending order (the index holds NULLs last ascending,
    so first descending), and ``(column, id) > (...) OR column IS NULL`` is no index
    condition, so a page after the first would walk from the index's start."""
    if not sort.nullable:
        if after is None:
            return [None]
        columns = ", ".join((*sort.columns, "id"))
        params = ", ".join(
            p(v, _CAST[c]) for c, v in zip((*sort.columns, "id"), after, strict=True)
        )
        return [f"({columns}) {op} ({params})"]
    (column,) = sort.columns
    null_block = f"{column} IS NULL"
    if after is None:
        return [f"{column} IS NOT NULL", null_block]
    value, last_id = after
    if value is None:  # already inside the trailing NULL block
        return [f"{null_block} AND id {op} {p(last_id, 'uuid')}"]
    row = f"({column}, id) {op} ({p(value, _CAST[column])}, {p(last_id, 'uuid')})"
    return [f"{column} IS NOT NULL AND {row}", null_block]


async def fetch_page(conn: asyncpg.Connection, sql: str, args: list[Any]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
    return rows


async def fetch_live(conn: asyncpg.Connection, task_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_SELECT} FROM task WHERE id = $1 AND deleted_at IS NULL",  # noqa: S608
        task_id,
    )


_RETURNING = [Task.__table__.c[name] for name in COLUMNS]
# What a create sets; the database fills in the rest.
INSERT_FIELDS = tuple(c for c in COLUMNS if c not in ("id", "created_at", "updated_at", "version"))
INSERT = DriverStatement.compile(
    insert(cast(Table, Task.__table__))
    .values({name: bindparam(name) for name in INSERT_FIELDS})
    .returning(*_RETURNING)
)


class TaskRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, values: dict[str, Any]) -> dict[str, Any]:
        """The new task; ``values`` holds exactly ``INSERT_FIELDS``."""
        conn = await driver_connection(self.session)
        return dict(await conn.fetchrow(INSERT.sql, *INSERT.args(values)))

    async def get_for_update(
        self, task_id: uuid.UUID, *, deleted: bool = False
    ) -> dict[str, Any] | None:
        """The task locked for this transaction: live ones, or with ``deleted`` the
        soft-deleted ones."""
        condition = Task.deleted_at.is_not(None) if deleted else Task.deleted_at.is_(None)
        stmt = (
            select(*_RETURNING, Task.deleted_at)
            .where(Task.id == task_id, condition)
            .with_for_update()
        )
        row = (await self.session.execute(stmt)).mappings().one_or_none()
        return dict(row) if row is not None else None

    async def get_any(self, task_id: uuid.UUID) -> dict[str, Any] | None:
        """The task, live or soft-deleted (with ``deleted_at``), without locking it."""
        stmt = select(*_RETURNING, Task.deleted_at).where(Task.id == task_id)
        row = (await self.session.execute(stmt)).mappings().one_or_none()
        return dict(row) if row is not None else None

    async def exists(self, task_id: uuid.UUID) -> bool:
        stmt = select(Task.id).where(Task.id == task_id)
        return (await self.session.execute(stmt)).first() is not None

    async def update(self, task_id: uuid.UUID, values: dict[str, Any]) -> dict[str, Any]:
        stmt = (
            update(Task)
            .where(Task.id == task_id)
            .values(**values, version=Task.version + 1, updated_at=func.now())
            .returning(*_RETURNING)
        )
        return dict((await self.session.execute(stmt)).mappings().one())
