from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_api.idempotency.models import IdempotencyKey


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self, user_id: uuid.UUID, key: str, scope: str, request_hash: bytes, ttl: timedelta
    ) -> bool:
        """True when this transaction now owns the key (new, or the old one expired).

        A concurrent transaction claiming the same key blocks on the unique index until
        this one ends, then sees the committed response (or claims the key itself if
        this one rolled back): two racing requests create one resource.
        """
        new = insert(IdempotencyKey).values(
            user_id=user_id,
            key=key,
            scope=scope,
            request_hash=request_hash,
            status_code=0,
            response_body=b"",
            response_headers={},
            expires_at=func.now() + ttl,
        )
        stmt = new.on_conflict_do_update(
            index_elements=[IdempotencyKey.user_id, IdempotencyKey.key],
            set_={
                "scope": new.excluded.scope,
                "request_hash": new.excluded.request_hash,
                "status_code": 0,
                "response_body": b"",
                "response_headers": {},
                "created_at": func.now(),
                "expires_at": new.excluded.expires_at,
            },
            where=IdempotencyKey.expires_at <= func.now(),
        ).returning(IdempotencyKey.key)
        return (await self.session.execute(stmt)).first() is not None

    async def get(self, user_id: uuid.UUID, key: str) -> IdempotencyKey:
        stmt = select(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key
        )
        return (await self.session.execute(stmt)).scalar_one()

    async def complete(
        self, user_id: uuid.UUID, key: str, status_code: int, body: bytes, headers: dict[str, str]
    ) -> None:
        await self.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
            .values(status_code=status_code, response_body=body, response_headers=headers)
        )
