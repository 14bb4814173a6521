"""Request-scoped dependencies shared by every router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from taskhub_api.db import Database, ReadSession, WriteSession
from taskhub_api.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]


async def get_write_session(db: DatabaseDep) -> AsyncIterator[WriteSession]:
    # scope="function" below: commit or rollback happens when the endpoint returns,
    # before the response is sent, so a client never sees an uncommitted write.
    async with db.transaction() as session:
        yield session


async def get_read_session(db: DatabaseDep) -> AsyncIterator[ReadSession]:
    async with db.read_sessions() as session:
        yield session


async def get_read_connection(db: DatabaseDep) -> AsyncIterator[AsyncConnection]:
    async with db.replica.connect() as conn:
        yield conn


WriteSessionDep = Annotated[WriteSession, Depends(get_write_session, scope="function")]
ReadSessionDep = Annotated[ReadSession, Depends(get_read_session, scope="function")]
ReadConnectionDep = Annotated[AsyncConnection, Depends(get_read_connection, scope="function")]
