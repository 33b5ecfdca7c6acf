"""Approval before action (issue 17): one record per gateway request, and its hash-chained timeline.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("correlation_id", sa.String(256)),
        sa.Column("gateway", sa.String(200), nullable=False),
        sa.Column("agent_id", sa.String(256), nullable=False, index=True),
        sa.Column("workflow", sa.String(200)),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("rule", sa.String(200)),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("action", sa.JSON(), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("approval_from", sa.String(40)),
        sa.Column("approver", sa.String(200)),
        sa.Column("chain", sa.JSON(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("notified_level", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("escalate_at", sa.DateTime(), index=True),
        sa.Column("decided_at", sa.DateTime()),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("published", sa.String(20)),
        sa.Column("used_by", sa.String(256)),
        sa.Column("policy_sha256", sa.String(64), nullable=False),
    )
    op.create_table(
        "approval_timeline",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("approval_id", sa.String(128), sa.ForeignKey("approvals.id"), nullable=False, index=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("identity", sa.String(200)),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("policy_sha256", sa.String(64)),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("approval_id", "seq", name="uq_approval_timeline_seq"),
    )


def downgrade() -> None:
    op.drop_table("approval_timeline")
    op.drop_table("approvals")
