"""The login form is validated like a JSON body: a NUL, a control character or an
overlong value is a 422 naming the field, never a 500, and never reaches the login
throttle or the database."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from taskhub_api.ratelimit.limiter import RATELIMIT_DECISIONS
from tests.api.test_bad_input import assert_problem
from tests.support.users import PASSWORD, NewUser

TOKEN = "/api/v1/auth/token"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LATIN1 = {"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"}


def throttled_logins() -> float:
    """Checks of the per (address, username) bucket so far, in this process."""
    return sum(
        sample.value
        for metric in RATELIMIT_DECISIONS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("bucket") == "token"
    )


@pytest.mark.parametrize(
    ("request_args", "field"),
    [
        ({"content": b"username=ab%00cd&password=x", "headers": FORM}, "username"),
        ({"content": b"username=%00&password=x", "headers": FORM}, "username"),
        ({"content": b"username=alice&password=x%00y", "headers": FORM}, "password"),
        ({"content": b"username=caf\xe9%00&password=x", "headers": LATIN1}, "username"),
        ({"content": b"username=caf%E9%01&password=x", "headers": FORM}, "username"),
        ({"content": b"username=a%1B%5B31m&password=x", "headers": FORM}, "username"),
        ({"content": b"username=%E2%80%AEnimda&password=x", "headers": FORM}, "username"),
        ({"content": b"username=%E2%80%8B&password=x", "headers": FORM}, "username"),
        ({"content": b"username=&password=x", "headers": FORM}, "username"),
        ({"content": b"username=alice&password=", "headers": FORM}, "password"),
        ({"data": {"username": "a" * 65, "password": "x"}}, "username"),
        ({"data": {"username": "alice", "password": "p" * 129}}, "password"),
        ({"data": {"username": "alice"}}, "password"),
        ({"data": {"password": "x"}}, "username"),
        (
            {"data": {"username": "alice", "password": "x", "grant_type": "client_credentials"}},
            "grant_type",
        ),
        ({"files": {"username": (None, b"ab\x00cd"), "password": (None, b"x")}}, "username"),
        ({"files": {"username": (None, b"ab\x07"), "password": (None, b"x")}}, "username"),
        ({"files": {"username": (None, b"alice"), "password": (None, b"x\x00")}}, "password"),
        ({"files": {"username": ("name.txt", b"alice"), "password": (None, b"x")}}, "username"),
        # Not UTF-8: read as latin-1, which makes C1 controls of these bytes.
        ({"files": {"username": (None, b"\xed\xa0\x80"), "password": (None, b"x")}}, "username"),
    ],
)
async def test_malformed_login_forms_are_422(
    client: httpx.AsyncClient, request_args: dict[str, Any], field: str
) -> None:
    before = throttled_logins()
    response = await client.post(TOKEN, **request_args)
    assert_problem(response, 422, field)
    # Refused before the throttle keyed on the username (and before the database).
    assert throttled_logins() == before


@pytest.mark.parametrize(
    "request_args",
    [
        # Undecodable bytes become U+FFFD: a valid name nobody has.
        {"content": b"username=caf%E9&password=x", "headers": FORM},
        {"content": b"username=caf\xe9&password=x", "headers": LATIN1},
        {"files": {"username": (None, b"caf\xe9"), "password": (None, b"x")}},
        {"data": {"username": "a" * 64, "password": "p" * 128}},
    ],
)
async def test_odd_but_valid_names_are_a_plain_401(
    client: httpx.AsyncClient, request_args: dict[str, Any]
) -> None:
    before = throttled_logins()
    response = await client.post(TOKEN, **request_args)
    assert_problem(response, 401)
    assert throttled_logins() == before + 1


async def test_multipart_and_urlencoded_logins_work(
    client: httpx.AsyncClient, new_user: NewUser
) -> None:
    alice = await new_user()
    form = {"username": alice.username, "password": PASSWORD, "grant_type": "password"}
    assert (await client.post(TOKEN, data=form)).status_code == 200
    multipart = {name: (None, value.encode()) for name, value in form.items()}
    assert (await client.post(TOKEN, files=multipart)).status_code == 200
    # Other OAuth2 fields are accepted and ignored.
    extra = {**form, "scope": "tasks", "client_id": "cli"}
    assert (await client.post(TOKEN, data=extra)).status_code == 200


@pytest.mark.parametrize(
    ("username", "field"),
    [("ab\x00cd", "username"), ("ab\u202ecd", "username"), ("ab\x1bcd", "username")],
)
async def test_register_refuses_control_characters(
    client: httpx.AsyncClient, username: str, field: str
) -> None:
    body = {"username": username, "email": "x@example.com", "password": PASSWORD}
    assert_problem(await client.post("/api/v1/auth/register", json=body), 422, field)
