"""Root message references per notifier (incident_messages), not Slack columns on the incident row.

Copies each incident's root reference (slack_channel, slack_ts) or dead root (root_dead) into incident_messages
under the notifier that delivered it (notifications.notifier of its root row), gives pending rows of a known
incident that notifier, then drops the three columns. notifications.channel/ts become address/ref.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_incidents = sa.table(
    "incidents", sa.column("id", sa.Integer()), sa.column("slack_channel", sa.String()),
    sa.column("slack_ts", sa.String()), sa.column("root_dead", sa.Boolean()), sa.column("updated_at", sa.DateTime()),
)
_notifications = sa.table(
    "notifications", sa.column("id", sa.Integer()), sa.column("incident_id", sa.Integer()),
    sa.column("kind", sa.String()), sa.column("notifier", sa.String()), sa.column("delivered_at", sa.DateTime()),
)
_messages = sa.table(
    "incident_messages", sa.column("incident_id", sa.Integer()), sa.column("notifier", sa.String()),
    sa.column("address", sa.String()), sa.column("ref", sa.String()), sa.column("dead", sa.Boolean()),
    sa.column("at", sa.DateTime()),
)


# Other tables reference `incidents`, so SQLite must not copy it (batch mode's default): dropping the old copy
# fails their foreign keys, and PRAGMA foreign_keys cannot be turned off inside the migration's transaction.
# SQLite 3.35+ drops these plain columns in place instead. `notifications` is referenced by nothing: it is copied.
_IN_PLACE: Literal["never"] = "never"


def upgrade() -> None:
    op.create_table(
        "incident_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("notifier", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=200), nullable=True, comment="The notifier's channel or address"),
        sa.Column("ref", sa.String(length=200), nullable=True,
                  comment="The notifier's id of the message (Slack's ts)"),
        sa.Column("dead", sa.Boolean(), nullable=False,
                  comment="The root was dead-lettered: nothing to thread under"),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id", "notifier", name="uq_incident_messages_notifier"),
    )
    bind = op.get_bind()
    root_notifier: dict[int, tuple[str, Any]] = {}  # incident id -> (notifier, delivered_at) of its root row
    for incident_id, notifier, delivered_at in bind.execute(
        sa.select(_notifications.c.incident_id, _notifications.c.notifier, _notifications.c.delivered_at)
        .where(_notifications.c.kind == "root", _notifications.c.notifier.is_not(None))
        .order_by(_notifications.c.id)
    ):
        root_notifier.setdefault(incident_id, (notifier, delivered_at))
    rows = []
    for incident_id, channel, ts, dead, updated_at in bind.execute(
        sa.select(_incidents.c.id, _incidents.c.slack_channel, _incidents.c.slack_ts, _incidents.c.root_dead,
                  _incidents.c.updated_at)
        .where(sa.or_(_incidents.c.slack_ts.is_not(None), _incidents.c.root_dead.is_(True)))
    ):
        # The root row always names its notifier once delivered or dead; the fallback is for hand-edited rows.
        notifier, at = root_notifier.get(incident_id, ("console" if channel == "console" else "slack", None))
        delivered = ts is not None
        rows.append({"incident_id": incident_id, "notifier": notifier, "address": channel if delivered else None,
                     "ref": ts, "dead": not delivered and bool(dead), "at": at or updated_at})
    if rows:
        op.bulk_insert(_messages, rows)
    for incident_id, (notifier, _) in root_notifier.items():  # follow-ups still pending go to the root's notifier
        bind.execute(sa.update(_notifications).where(
            _notifications.c.incident_id == incident_id, _notifications.c.notifier.is_(None),
        ).values(notifier=notifier))

    with op.batch_alter_table("incidents", recreate=_IN_PLACE) as batch:
        batch.drop_column("slack_channel")
        batch.drop_column("slack_ts")
        batch.drop_column("root_dead")
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("channel", new_column_name="address", existing_type=sa.String(length=64),
                           type_=sa.String(length=200), existing_nullable=True)
        batch.alter_column("ts", new_column_name="ref", existing_type=sa.String(length=64),
                           type_=sa.String(length=200), existing_nullable=True)


def downgrade() -> None:
    """Back to one root reference on the incident row: Slack's when there is one, else any notifier's."""
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("ref", new_column_name="ts", existing_type=sa.String(length=200),
                           type_=sa.String(length=64), existing_nullable=True)
        batch.alter_column("address", new_column_name="channel", existing_type=sa.String(length=200),
                           type_=sa.String(length=64), existing_nullable=True)
    with op.batch_alter_table("incidents", recreate=_IN_PLACE) as batch:
        batch.add_column(sa.Column("slack_channel", sa.String(length=64), nullable=True,
                                   comment="Where the root message lives"))
        batch.add_column(sa.Column("slack_ts", sa.String(length=64), nullable=True,
                                   comment="The root message's ts, once delivered"))
        # 0001 had no server default; an in-place ADD COLUMN NOT NULL needs one (harmless to keep)
        batch.add_column(sa.Column("root_dead", sa.Boolean(), nullable=False, server_default=sa.false()))
    bind = op.get_bind()
    messages = bind.execute(
        sa.select(_messages.c.incident_id, _messages.c.notifier, _messages.c.address, _messages.c.ref,
                  _messages.c.dead)
        .order_by(_messages.c.notifier != "slack")  # Slack's reference wins
    ).all()
    done: set[int] = set()
    for incident_id, _, address, ref, dead in messages:
        if incident_id in done:
            continue
        done.add(incident_id)
        bind.execute(sa.update(_incidents).where(_incidents.c.id == incident_id).values(
            slack_channel=address, slack_ts=ref, root_dead=dead,
        ))
    op.drop_table("incident_messages")
