"""The OpenAPI document describes what the API sends: a generated client must not be
wrong about any body."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


class TestOpenAPIDocument:
    def test_success_bodies_have_their_model(self, document: dict[str, Any]) -> None:
        for name, operation in _operations(document):
            for status, response in operation["responses"].items():
                if not status.startswith("2") or status == "204":
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert "$ref" in schema or schema.get("type") in ("object", "array"), (
                    name,
                    status,
                    schema,
                )

    def test_errors_are_problem_json(self, document: dict[str, Any]) -> None:
        for name, operation in _operations(document):
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            if name.startswith("GET /health"):  # readiness: its checks, as JSON
                assert list(errors) == ([] if name == "GET /health/live" else ["503"]), name
                continue
            assert {"401", "503"} <= set(errors) or name.startswith("POST /api/v1/auth"), name
            for status, response in errors.items():
                assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}
                assert response["description"], (name, status)

    def test_status_sets_follow_the_routes(self, document: dict[str, Any]) -> None:
        paths = document["paths"]
        assert {"404", "409", "412", "413"} <= set(
            paths["/api/v1/tasks/{task_id}"]["patch"]["responses"]
        )
        assert "403" in paths["/api/v1/tasks"]["post"]["responses"]
        assert "403" not in paths["/api/v1/tasks"]["get"]["responses"]
        assert "304" in paths["/api/v1/tasks/{task_id}"]["get"]["responses"]

    def test_problem_schema_replaces_fastapis_validation_error(
        self, document: dict[str, Any]
    ) -> None:
        schemas = document["components"]["schemas"]
        assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
        problem = schemas["Problem"]
        assert set(problem["required"]) == {"title", "status", "detail"}
        assert {"type", "instance", "errors"} <= set(problem["properties"])
        assert schemas["FieldError"]["required"] == ["field", "message"]
