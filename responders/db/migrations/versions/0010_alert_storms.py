"""Alert storms (issue 32): groups and their digests, silences (with their hash-chained trail) and the per-channel
send budget shared by every worker.

incidents gains the group it belongs to (as leader or member) and what muted it (a silence, an inhibiting incident);
notifications gains group_id (a digest refresh names its group instead of an incident). Plain columns, added in place
on SQLite (incidents is referenced by other tables and must not be copied).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_groups",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(length=64), nullable=False, index=True),
        sa.Column("open_key", sa.String(length=64), nullable=True, unique=True),
        sa.Column("responder", sa.String(length=200), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("route", sa.JSON(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("leader_id", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("last_at", sa.DateTime(), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("leaders", sa.Integer(), nullable=False),
    )
    op.create_table(
        "group_messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.Integer(), sa.ForeignKey("notify_groups.id"), nullable=False, index=True),
        sa.Column("notifier", sa.String(length=20), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=200), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("group_id", "notifier", "epoch", name="uq_group_messages_epoch"),
    )
    op.create_table(
        "digest_lines",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer(), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("group_id", sa.Integer(), sa.ForeignKey("notify_groups.id"), nullable=False, index=True),
        sa.Column("notifier", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=200), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("incident_id", "notifier", name="uq_digest_lines_notifier"),
    )
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("matchers", sa.JSON(), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False, index=True),
        sa.Column("ends_at", sa.DateTime(), nullable=False, index=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expired_by", sa.String(length=200), nullable=True),
    )
    op.create_table(
        "silence_timeline",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("silence_id", sa.Integer(), sa.ForeignKey("silences.id"), nullable=False, index=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("identity", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.UniqueConstraint("silence_id", "seq", name="uq_silence_timeline_seq"),
    )
    op.create_table(
        "channel_budgets",
        sa.Column("notifier", sa.String(length=20), primary_key=True),
        sa.Column("channel", sa.String(length=200), primary_key=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("blocked_until", sa.DateTime(), nullable=True),
    )
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("group_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("group_role", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("silenced_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("inhibited_by", sa.Integer(), nullable=True))
        batch.create_index("ix_incidents_group_id", ["group_id"])
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("group_id", sa.Integer(), nullable=True))
        batch.create_index("ix_notifications_group_id", ["group_id"])


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE group_id IS NOT NULL")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("ix_notifications_group_id")
        batch.drop_column("group_id")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_index("ix_incidents_group_id")
        batch.drop_column("inhibited_by")
        batch.drop_column("silenced_by")
        batch.drop_column("group_role")
        batch.drop_column("group_id")
    op.drop_table("channel_budgets")
    op.drop_table("silence_timeline")
    op.drop_table("silences")
    op.drop_table("digest_lines")
    op.drop_table("group_messages")
    op.drop_table("notify_groups")
