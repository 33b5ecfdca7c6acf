"""Outbox wake-up (issue 27): on PostgreSQL, a statement that inserts notifications notifies channel `warden_outbox`
when its transaction commits, so every worker's outbox (LISTEN) runs at once instead of at its next poll, whoever
wrote them (another worker, the API, a break-glass CLI). SQLite has one worker, woken in process: nothing to add.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE FUNCTION warden_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('warden_outbox', '');
            RETURN NULL;
        END $$
    """)
    op.execute("CREATE TRIGGER notifications_wake_outbox AFTER INSERT ON notifications "
               "FOR EACH STATEMENT EXECUTE FUNCTION warden_outbox_notify()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS notifications_wake_outbox ON notifications")
    op.execute("DROP FUNCTION IF EXISTS warden_outbox_notify()")
