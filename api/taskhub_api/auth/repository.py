from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_api.auth.models import RefreshToken


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        user_id: uuid.UUID,
        family_id: uuid.UUID,
        token_hash: bytes,
        expires_at: datetime,
        token_id: uuid.UUID | None = None,
    ) -> None:
        token = RefreshToken(
            user_id=user_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at
        )
        if token_id is not None:
            token.id = token_id
        self.session.add(token)
        await self.session.flush()

    async def family_head(self, family_id: uuid.UUID) -> uuid.UUID | None:
        """The first token of the family: the session its access tokens name. A login
        gives it the family's id; families from before that have their oldest row."""
        by_id = select(RefreshToken.id).where(RefreshToken.id == family_id).scalar_subquery()
        oldest = (
            select(RefreshToken.id)
            .where(RefreshToken.family_id == family_id)
            .order_by(RefreshToken.created_at, RefreshToken.id)
            .limit(1)
            .scalar_subquery()
        )
        # COALESCE evaluates its arguments lazily: the sort runs for old families only.
        return (await self.session.execute(select(func.coalesce(by_id, oldest)))).scalar()

    async def get_for_update(self, token_hash: bytes) -> RefreshToken | None:
        """Locks the row, so two concurrent refreshes with one token are serialised and
        the second is seen as reuse."""
        stmt = select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def mark_used(self, token_id: uuid.UUID) -> None:
        await self.session.execute(
            update(RefreshToken).where(RefreshToken.id == token_id).values(used_at=func.now())
        )

    async def revoke_family(self, family_id: uuid.UUID) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )

    async def revoke_user(self, user_id: uuid.UUID) -> None:
        """Every family of the user: all its logins end, refresh and access tokens."""
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )
