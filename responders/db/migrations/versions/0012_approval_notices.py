"""Approval requests go through the outbox: a notification can be about an approval request (its id and the chain
level it asks) instead of an incident, so the desk's messages get the outbox's dedup key, claim, lease, fencing,
retries, dead letters and record like every other notification. Plain nullable columns, added in place.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("approval_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("approval_level", sa.Integer(), nullable=True))
        batch.create_index("ix_notifications_approval_id", ["approval_id"])


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE approval_id IS NOT NULL")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("ix_notifications_approval_id")
        batch.drop_column("approval_level")
        batch.drop_column("approval_id")
