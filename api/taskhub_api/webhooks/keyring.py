"""Webhook signing secrets, encrypted at rest.

A secret is stored as AES-256-GCM ciphertext (``nonce || ciphertext || tag``) next to
the id of the key that encrypted it; the associated data binds it to its webhook, so a
ciphertext copied onto another row does not decrypt. Keys come from
``webhooks.secret_keys`` (never from the database), so a dump alone yields no secret
and cannot forge a signature. Anything that does not decrypt raises
:class:`SecretUnavailable`: a delivery is never signed with a wrong secret.

Rows written before migration 0004 hold the plaintext (``secret``) until
``taskhub webhooks rotate-key`` encrypts them; they stay readable meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from taskhub_api.settings import Settings, webhook_key_bytes

log = logging.getLogger("taskhub.webhooks")
_NONCE = 12
_warned = False


class SecretUnavailable(Exception):
    """A stored webhook secret cannot be read with the configured keys."""


def _associated_data(webhook_id: uuid.UUID, key_id: str) -> bytes:
    return f"taskhub.webhook-secret.v1:{webhook_id}:{key_id}".encode()


@dataclass(frozen=True)
class Sealed:
    key_id: str
    ciphertext: bytes


class KeyRing:
    def __init__(self, keys: dict[str, bytes], active_key_id: str) -> None:
        if active_key_id not in keys:
            raise ValueError(f"active key {active_key_id!r} is not among the keys")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active_key_id = active_key_id

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The configured keys; without any, one derived from ``auth.secret_key`` (for
        development and tests: it changes with the auth key), with a warning."""
        webhooks = settings.webhooks
        if webhooks.secret_keys:
            keys = {k: webhook_key_bytes(v) for k, v in webhooks.secret_keys.items()}
            return cls(keys, webhooks.active_key_id or next(iter(keys)))
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"taskhub webhook secrets"
        ).derive(settings.auth.secret_key.get_secret_value().encode())
        key_id = "dev-" + hashlib.sha256(derived).hexdigest()[:8]
        global _warned
        if not _warned:
            _warned = True
            log.warning(
                "webhooks.secret_keys is not set: webhook secrets are encrypted with key %s, "
                "derived from auth.secret_key; set TASKHUB_WEBHOOKS__SECRET_KEYS in production",
                key_id,
            )
        return cls({key_id: derived}, key_id)

    def seal(self, webhook_id: uuid.UUID, secret: str) -> Sealed:
        """``secret`` encrypted with the active key, checked to decrypt again."""
        nonce = os.urandom(_NONCE)
        aad = _associated_data(webhook_id, self.active_key_id)
        sealed = Sealed(
            self.active_key_id,
            nonce + self._keys[self.active_key_id].encrypt(nonce, secret.encode(), aad),
        )
        if self.open(webhook_id, sealed.key_id, sealed.ciphertext) != secret:
            raise SecretUnavailable("encryption did not round-trip")  # pragma: no cover
        return sealed

    def open(self, webhook_id: uuid.UUID, key_id: str, ciphertext: bytes) -> str:
        aead = self._keys.get(key_id)
        if aead is None:
            raise SecretUnavailable(
                f"the secret of webhook {webhook_id} is encrypted with key {key_id!r}, "
                f"which is not configured (webhooks.secret_keys has "
                f"{', '.join(sorted(self._keys)) or 'no keys'})"
            )
        try:
            if len(ciphertext) <= _NONCE:
                raise InvalidTag
            plain = aead.decrypt(
                ciphertext[:_NONCE], ciphertext[_NONCE:], _associated_data(webhook_id, key_id)
            )
            return plain.decode()
        except (InvalidTag, UnicodeDecodeError) as exc:
            raise SecretUnavailable(
                f"the secret of webhook {webhook_id} does not decrypt with key {key_id!r}: "
                "the key material differs from the one that encrypted it, or the stored "
                "value was altered or copied from another webhook"
            ) from exc

    def reveal(
        self,
        webhook_id: uuid.UUID,
        *,
        secret: str | None,
        secret_ciphertext: bytes | None,
        secret_key_id: str | None,
    ) -> str:
        """The signing secret of a webhook row, encrypted or (before rotate-key)
        legacy plaintext."""
        if secret_ciphertext is not None and secret_key_id is not None:
            return self.open(webhook_id, secret_key_id, secret_ciphertext)
        if secret is not None:
            return secret
        raise SecretUnavailable(f"webhook {webhook_id} has no stored secret")
