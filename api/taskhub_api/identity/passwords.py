"""argon2id hashing, off the event loop (a hash costs tens of milliseconds)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# The password hash of a user provisioned from an external issuer: no password matches.
EXTERNAL_PASSWORD_HASH = "!external"  # noqa: S105 - not a valid argon2 hash
_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile
# Verified when the user does not exist, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("taskhub-dummy-password-for-timing")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def password_problems(password: str, username: str) -> list[str]:
    """Every rule the password breaks, each as a sentence for the client."""
    problems = []
    if len(password) < 10:
        problems.append("must be at least 10 characters long")
    if len(password) > 128:
        problems.append("must be at most 128 characters long")
    if not any(c.isalpha() for c in password):
        problems.append("must contain a letter")
    if not any(c.isdigit() for c in password):
        problems.append("must contain a digit")
    if username and username.lower() in password.lower():
        problems.append("must not contain the username")
    return problems
