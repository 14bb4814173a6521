"""webhook secret encryption

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 12:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand. Migrations do not hold the encryption keys, so existing rows keep their
# plaintext here and stay readable; `taskhub webhooks rotate-key` encrypts them (and
# clears the plaintext) row by row. The previous release still inserts plaintext rows,
# which the constraint accepts and rotate-key encrypts later. A later contract
# revision drops `secret` once every row is encrypted.


def upgrade() -> None:
    op.add_column("webhook", sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True))
    op.add_column("webhook", sa.Column("secret_key_id", sa.String(length=32), nullable=True))
    op.alter_column("webhook", "secret", existing_type=sa.String(length=200), nullable=True)
    op.create_check_constraint(
        op.f("ck_webhook_secret_stored"),
        "webhook",
        "(secret_ciphertext IS NULL) = (secret_key_id IS NULL) "
        "AND (secret IS NOT NULL OR secret_ciphertext IS NOT NULL)",
    )


def downgrade() -> None:
    # Refuses while any secret exists only encrypted: the plaintext cannot be restored
    # without the key, and dropping the ciphertext would lose the secret.
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM webhook WHERE secret IS NULL) THEN
                RAISE EXCEPTION 'webhook secrets are encrypted; downgrading below 0004 '
                    'would lose them';
            END IF;
        END $$
        """
    )
    op.drop_constraint(op.f("ck_webhook_secret_stored"), "webhook", type_="check")
    op.alter_column("webhook", "secret", existing_type=sa.String(length=200), nullable=False)
    op.drop_column("webhook", "secret_key_id")
    op.drop_column("webhook", "secret_ciphertext")
