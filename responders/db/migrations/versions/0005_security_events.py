"""Refused requests (forged, stale, replayed, malformed Slack interactions) recorded for auditors, without bodies.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "security_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False, comment="What received it: slack_interaction, ..."),
        sa.Column("kind", sa.String(length=40), nullable=False, comment="forged, stale, replayed, malformed"),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_security_events_at", "security_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_security_events_at", "security_events")
    op.drop_table("security_events")
