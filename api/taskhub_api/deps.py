"""Request-scoped dependencies shared by every router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request

from taskhub_api.cache import Cache
from taskhub_api.db import (
    CACHE_SCOPES,
    Database,
    Reads,
    ReadSession,
    WriteSession,
    database_boundary,
)
from taskhub_api.identity.principal_cache import PrincipalCache, changed_in
from taskhub_api.kit import lsn
from taskhub_api.kit.response_headers import add_response_headers
from taskhub_api.settings import Settings

CONSISTENCY_TOKEN = "Consistency-Token"  # noqa: S105 - a header name


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]

TokenHeader = Annotated[
    str | None,
    Header(
        alias=CONSISTENCY_TOKEN,
        max_length=64,
        description="The token of your last write: the response reflects at least it.",
    ),
]


async def get_reads(request: Request, token: TokenHeader = None) -> Reads:
    state = request.app.state
    return Reads(state.db, state.cache, lsn.parse_token(token))


ReadsDep = Annotated[Reads, Depends(get_reads)]


async def get_write_session(request: Request) -> AsyncIterator[WriteSession]:
    # scope="function" below: commit or rollback happens when the endpoint returns,
    # before the response is sent, so a client never sees an uncommitted write.
    db: Database = request.app.state.db
    db.ensure_writable()
    with database_boundary():  # a lost connection, a failed commit: 503
        async with db.transaction() as session:
            yield session
    # Committed. Principals it changed (a role, a disabled account, an ended session)
    # take effect in this process at once, in the others within principal_cache_seconds.
    principals: PrincipalCache = request.app.state.principal_cache
    principals.forget(changed_in(session))
    # The token lets the client's next reads include this write; cache
    # entries the write made stale are retired by raising their scopes' watermarks.
    position = await db.commit_lsn()
    if position is not None:
        add_response_headers(request, {CONSISTENCY_TOKEN: lsn.format_lsn(position)})
    scopes: set[str] = session.info.get(CACHE_SCOPES, set())
    if scopes:
        cache: Cache = request.app.state.cache
        await cache.invalidate(scopes, position)


async def get_read_session(reads: ReadsDep) -> AsyncIterator[ReadSession]:
    target = reads.engine()
    with database_boundary():
        async with reads.db.read_sessions(bind=target.engine) as session:
            yield session


WriteSessionDep = Annotated[WriteSession, Depends(get_write_session, scope="function")]
ReadSessionDep = Annotated[ReadSession, Depends(get_read_session, scope="function")]
