"""Response tiers on the responder side (issue 26): each incident's tier, and the periodic review digests.

incidents.tier is `page` for every incident recorded before (they all paged); review_pending_since marks a review
incident its responder's next digest has not carried yet. A digest is a review_digests row (one per responder and
period) delivered through the outbox: notifications.digest_id names it, and such a row has no incident_id.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_digests",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("responder", sa.String(length=200), nullable=False, comment="The responder's owner id"),
        sa.Column("period_end", sa.DateTime(), nullable=False, comment="The digest boundary it closes"),
        sa.Column("target", sa.JSON(), nullable=False, comment="OwnerRef of the responder, with contacts"),
        sa.Column("summary", sa.JSON(), nullable=False, comment="Counts, top agents and targets, incident ids"),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("responder", "period_end", name="uq_review_digests_period"),
    )
    # Plain columns: SQLite adds them in place (incidents is referenced by other tables and must not be copied).
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("tier", sa.String(length=10), nullable=False, server_default="page"))
        batch.add_column(sa.Column("review_pending_since", sa.DateTime(), nullable=True))
        batch.create_index("ix_incidents_tier", ["tier"])
        batch.create_index("ix_incidents_review_pending_since", ["review_pending_since"])
    # notifications is referenced by nothing: SQLite copies it to relax incident_id and add the foreign key.
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("incident_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("digest_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_notifications_digest_id", "review_digests", ["digest_id"], ["id"])
        batch.create_index("ix_notifications_digest_id", ["digest_id"])


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE digest_id IS NOT NULL")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("ix_notifications_digest_id")
        batch.drop_constraint("fk_notifications_digest_id", type_="foreignkey")
        batch.drop_column("digest_id")
        batch.alter_column("incident_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("incidents") as batch:
        batch.drop_index("ix_incidents_review_pending_since")
        batch.drop_index("ix_incidents_tier")
        batch.drop_column("review_pending_since")
        batch.drop_column("tier")
    op.drop_table("review_digests")
