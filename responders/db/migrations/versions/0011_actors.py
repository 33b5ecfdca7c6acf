"""A notifier-neutral actor: the timeline's and the decisions' `slack_user` becomes (notifier, address, user_id).

`slack_user` held one string: a Slack user id bare, or a `prefix:rest` written by Warden itself (`api:<token
fingerprint>`, `break-glass:<unix user>`, `cli:<unix user>` from `warden incident` before it used the API; a refused
API or break-glass attempt also appended the owner id it claimed: `api:<fingerprint>:<owner>`). Each row is split:
a known prefix names the notifier and the rest is the user; anything else is a Slack user. The trail's hash chain
stays verifiable: warden.contract.actors.Actor.identity gives the old string back from the parts.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PREFIXED = ("api", "break-glass", "cli")  # what Warden itself wrote as `prefix:rest` before this revision
SLACK = "slack"  # a bare identity: the Slack notifier's user id (the only notifier people acted through)


def split(identity: str) -> tuple[str, str]:
    """(notifier, user) of an identity as 0001-0010 stored it."""
    prefix, sep, rest = identity.partition(":")
    return (prefix, rest) if sep and prefix in PREFIXED else (SLACK, identity)


def _columns() -> list[sa.Column[str]]:
    """Nullable at first, to be filled from slack_user (decisions' become NOT NULL once filled)."""
    return [sa.Column("notifier", sa.String(length=20), nullable=True),
            sa.Column("address", sa.String(length=200), nullable=True),
            sa.Column("user_id", sa.String(length=200), nullable=True)]


def _carry(table: str) -> None:
    rows = sa.table(table, sa.column("id", sa.Integer()), sa.column("slack_user", sa.String()),
                    sa.column("notifier", sa.String()), sa.column("address", sa.String()),
                    sa.column("user_id", sa.String()))
    bind = op.get_bind()
    for row_id, identity in bind.execute(sa.select(rows.c.id, rows.c.slack_user)
                                         .where(rows.c.slack_user.is_not(None))).all():
        notifier, user = split(identity)
        bind.execute(sa.update(rows).where(rows.c.id == row_id).values(notifier=notifier, address="", user_id=user))


def upgrade() -> None:
    for table in ("timeline", "decisions"):
        with op.batch_alter_table(table) as batch:
            for column in _columns():
                batch.add_column(column)
        _carry(table)
    with op.batch_alter_table("timeline") as batch:
        batch.drop_column("slack_user")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("slack_user")
        for name, length in (("notifier", 20), ("address", 200), ("user_id", 200)):
            batch.alter_column(name, existing_type=sa.String(length=length), nullable=False)


def downgrade() -> None:
    for table, nullable in (("timeline", True), ("decisions", False)):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("slack_user", sa.String(length=64), nullable=True))
        rows = sa.table(table, sa.column("id", sa.Integer()), sa.column("slack_user", sa.String()),
                        sa.column("notifier", sa.String()), sa.column("user_id", sa.String()))
        bind = op.get_bind()
        for row_id, notifier, user in bind.execute(sa.select(rows.c.id, rows.c.notifier, rows.c.user_id)
                                                   .where(rows.c.user_id.is_not(None))).all():
            old = user if notifier == SLACK else f"{notifier}:{user}"
            bind.execute(sa.update(rows).where(rows.c.id == row_id).values(slack_user=old))
        with op.batch_alter_table(table) as batch:
            if not nullable:
                batch.alter_column("slack_user", existing_type=sa.String(length=64), nullable=False)
            batch.drop_column("user_id")
            batch.drop_column("address")
            batch.drop_column("notifier")
