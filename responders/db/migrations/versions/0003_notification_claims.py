"""Fenced outbox claims: notifications.claim holds the token of the claim that leases the row.

Every write after a claim (lease renewal, delivered, retry, dead letter) is conditional on the token, so a worker
whose lease ran out and whose row another worker claimed writes nothing. Rows claimed before the upgrade have no
token: their leases simply run out (or are released at start on SQLite) and the next claim gives them one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain nullable column: both SQLite and PostgreSQL add it in place, no table copy.
    op.add_column("notifications", sa.Column("claim", sa.String(length=32), nullable=True,
                                             comment="Token of the claim holding the lease"))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("claim")
