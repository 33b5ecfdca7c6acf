"""The containment ledger, the approval's climb up the chain, and once-only notifications from playbooks.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "containment_steps",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer(), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("playbook", sa.String(length=200), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False, comment="Position in the playbook, from 0"),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("gate", sa.String(length=20), nullable=False,
                  comment="auto or approver, as resolved for the finding"),
        sa.Column("on_failure", sa.String(length=20), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("approval_timeout_s", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("credential", sa.JSON(), nullable=True, comment="Credential id and issuer (not secret)"),
        sa.Column("sealed_token", sa.Text(), nullable=True, comment="Fernet-sealed; deleted once the step ends"),
        sa.Column("decided_by", sa.String(length=200), nullable=True,
                  comment="Owner id whose approval let it run"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False, comment="What the action reported (never a secret)"),
        sa.Column("finding_ts", sa.DateTime(), nullable=False, comment="When the event that triggered it happened"),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("incident_id", "playbook", "step", name="uq_containment_steps_step"),
    )
    op.create_index("ix_containment_steps_incident_id", "containment_steps", ["incident_id"])
    op.create_index("ix_containment_steps_status", "containment_steps", ["status"])
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("approval_level", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("approval_due_at", sa.DateTime(), nullable=True))
        batch.create_index("ix_incidents_approval_due_at", ["approval_due_at"])
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("effect_key", sa.String(length=200), nullable=True))
        batch.create_unique_constraint("uq_notifications_effect_key", ["effect_key"])


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_constraint("uq_notifications_effect_key", type_="unique")
        batch.drop_column("effect_key")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_index("ix_incidents_approval_due_at")
        batch.drop_column("approval_due_at")
        batch.drop_column("approval_level")
    op.drop_index("ix_containment_steps_status", "containment_steps")
    op.drop_index("ix_containment_steps_incident_id", "containment_steps")
    op.drop_table("containment_steps")
