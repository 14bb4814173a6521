"""The task list query builder (tasks/repository.py ``build_list_query``) and the cursor
values of the service: the SQL text and its bind parameters, without a database (the
end-to-end list tests in tests/api/test_task_list.py run the same SQL for real)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from taskhub_api.tasks.repository import SORTS, TaskFilters, build_list_query
from taskhub_api.tasks.service import parse_cursor_values

ME = uuid.uuid4()
LAST = uuid.uuid4()
T = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def query(
    *,
    visible_to: uuid.UUID | None = None,
    filters: TaskFilters | None = None,
    sort: str = "-created_at",
    after: list[object] | None = None,
    limit: int = 20,
) -> tuple[str, list[object]]:
    return build_list_query(
        visible_to=visible_to,
        filters=filters or TaskFilters(),
        sort=SORTS[sort],
        after=after,
        limit=limit,
    )


class TestBuildListQuery:
    def test_readers_of_everything_get_one_walk_in_sort_order(self) -> None:
        sql, args = query()
        assert "UNION" not in sql
        assert "WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT $1" in sql
        assert args == [20]

    def test_a_user_gets_owner_and_assignee_branches_with_one_parameter_each(self) -> None:
        sql, args = query(visible_to=ME)
        assert sql.count("UNION ALL") == 1
        assert "owner_id = $1" in sql
        assert "assignee_id = $1 AND owner_id <> $1" in sql
        assert sql.count("LIMIT $2") == 3  # each branch and the merged page
        assert args == [ME, 20]

    def test_a_user_filtering_on_themselves_walks_the_assignee_index_alone(self) -> None:
        sql, args = query(visible_to=ME, filters=TaskFilters(assignee_id=ME))
        assert "UNION" not in sql
        assert "owner_id" not in sql.split(" FROM task ")[1]
        assert "WHERE deleted_at IS NULL AND assignee_id = $1 ORDER BY" in sql
        assert args == [ME, 20]

    def test_a_user_filtering_on_another_assignee_sees_only_their_own_tasks(self) -> None:
        other = uuid.uuid4()
        sql, args = query(visible_to=ME, filters=TaskFilters(assignee_id=other))
        assert "UNION" not in sql
        assert "WHERE owner_id = $1 AND deleted_at IS NULL AND assignee_id = $2 ORDER BY" in sql
        assert args == [ME, other, 20]

    def test_each_filter_is_a_typed_bind_parameter_in_order(self) -> None:
        assignee = uuid.uuid4()
        filters = TaskFilters(
            statuses=("todo", "done"),
            priorities=("high",),
            labels=("a",),
            assignee_id=assignee,
            due_before=T,
            due_after=T,
            q="report",
        )
        sql, args = query(filters=filters)
        assert "status = ANY($1::task_status[])" in sql
        assert "priority = ANY($2::task_priority[])" in sql
        assert "assignee_id = $3" in sql
        # One assignee's tasks: labels and text checked on their rows (see below).
        assert "arraycontains(labels, $4::varchar[])" in sql
        assert "due_at < $5" in sql
        assert "due_at >= $6" in sql
        assert "ts_match_vq(search, (SELECT websearch_to_tsquery('english', $7)))" in sql
        assert args == [["todo", "done"], ["high"], assignee, ["a"], T, T, "report", 20]

    def test_labels_and_text_may_use_their_gin_indexes_over_every_task(self) -> None:
        sql, _ = query(filters=TaskFilters(labels=("a",), q="report"))
        assert "labels @> $1::varchar[]" in sql
        assert "search @@ websearch_to_tsquery('english', $2)" in sql

    def test_on_one_users_tasks_labels_and_text_are_no_index_condition(self) -> None:
        sql, _ = query(visible_to=ME, filters=TaskFilters(labels=("a",), q="report"))
        assert "@>" not in sql
        assert "@@" not in sql
        assert sql.count("arraycontains(labels, $2::varchar[])") == 2
        assert sql.count("ts_match_vq(search, (SELECT websearch_to_tsquery('english', $3)))") == 2

    def test_values_never_reach_the_sql_text(self) -> None:
        sql, _ = query(filters=TaskFilters(q="'; DROP TABLE task; --", labels=("x'y",)))
        assert "DROP" not in sql
        assert "x'y" not in sql

    @pytest.mark.parametrize(("sort", "op"), [("-created_at", "<"), ("created_at", ">")])
    def test_the_keyset_follows_the_direction(self, sort: str, op: str) -> None:
        sql, args = query(sort=sort, after=[T, LAST])
        assert f"(created_at, id) {op} ($1::timestamptz, $2::uuid)" in sql
        assert args == [T, LAST, 20]

    def test_a_two_column_sort_compares_the_row(self) -> None:
        sql, args = query(sort="priority", after=["high", T, LAST])
        assert "(priority, created_at, id) > ($1::task_priority, $2::timestamptz, $3::uuid)" in sql
        assert "ORDER BY priority ASC, created_at ASC, id ASC" in sql
        assert args == ["high", T, LAST, 20]

    @pytest.mark.parametrize(
        ("sort", "op", "direction"), [("due_at", ">", "ASC"), ("-due_at", "<", "DESC")]
    )
    def test_a_nullable_sort_walks_the_dated_rows_then_the_null_block(
        self, sort: str, op: str, direction: str
    ) -> None:
        sql, args = query(sort=sort, after=[T, LAST])
        dated, undated = sql.split(" UNION ALL ")
        # Each part an index condition on (due_at, id) in one direction, no OR.
        assert f"due_at IS NOT NULL AND (due_at, id) {op} ($1::timestamptz, $2::uuid)" in dated
        assert "due_at IS NULL" in undated
        assert "$1" not in undated
        assert " OR " not in sql
        assert sql.count(f"ORDER BY due_at {direction}, id {direction} LIMIT $3") == 2
        assert sql.endswith(f"ORDER BY due_at {direction} NULLS LAST, id {direction} LIMIT $3")
        assert args == [T, LAST, 20]

    def test_the_first_page_of_a_nullable_sort_has_both_parts(self) -> None:
        sql, args = query(sort="-due_at")
        assert "due_at IS NOT NULL ORDER BY due_at DESC, id DESC LIMIT $1" in sql
        assert "due_at IS NULL ORDER BY due_at DESC, id DESC LIMIT $1" in sql
        assert args == [20]

    def test_a_user_gets_both_parts_in_each_branch(self) -> None:
        sql, _ = query(visible_to=ME, sort="due_at")
        assert sql.count("UNION ALL") == 3
        assert sql.count("owner_id = $1 AND") == 2
        assert sql.count("assignee_id = $1 AND owner_id <> $1") == 2

    def test_after_the_last_due_date_the_page_walks_the_null_block(self) -> None:
        sql, args = query(sort="due_at", after=[None, LAST])
        assert "UNION" not in sql
        assert "due_at IS NULL AND id > $1::uuid ORDER BY due_at ASC, id ASC LIMIT $2" in sql
        assert args == [LAST, 20]


class TestCursorValues:
    def test_values_are_parsed_to_their_column_types(self) -> None:
        parsed = parse_cursor_values("priority", ["high", T.isoformat(), str(LAST)])
        assert parsed == ["high", T, LAST]

    def test_a_null_due_date_is_kept(self) -> None:
        assert parse_cursor_values("due_at", [None, str(LAST)]) == [None, LAST]

    @pytest.mark.parametrize(
        "values",
        [[str(LAST)], ["nope", T.isoformat(), str(LAST)], ["not-a-date", str(LAST)]],
    )
    def test_wrong_values_raise_value_error(self, values: list[object]) -> None:
        with pytest.raises(ValueError):
            parse_cursor_values("priority" if len(values) == 3 else "-created_at", values)
