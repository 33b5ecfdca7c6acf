"""The audit trail becomes tamper-evident: each timeline entry (per incident) and each security event (one chain)
carries its position, the previous entry's hash and its own; rows written before this revision are chained here.
Also the cursor of the optional `warden.audit` export.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from datetime import UTC

import sqlalchemy as sa
from alembic import op

from responders.audit import GENESIS, SECURITY_CHAIN, entry_hash, security_content, timeline_content

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_CHAIN_COLUMNS = ("seq", "prev_hash", "hash")


def _timeline() -> sa.TableClause:
    return sa.table("timeline", sa.column("id", sa.Integer()), sa.column("incident_id", sa.Integer()),
                    sa.column("at", sa.DateTime()), sa.column("kind", sa.String()), sa.column("actor", sa.String()),
                    sa.column("slack_user", sa.String()), sa.column("detail", sa.JSON()),
                    sa.column("policy_sha256", sa.String()), *(sa.column(c) for c in _CHAIN_COLUMNS))


def _security() -> sa.TableClause:
    return sa.table("security_events", sa.column("id", sa.Integer()), sa.column("at", sa.DateTime()),
                    sa.column("source", sa.String()), sa.column("kind", sa.String()),
                    sa.column("detail", sa.JSON()), *(sa.column(c) for c in _CHAIN_COLUMNS))


def _chain_existing() -> None:
    """Chain the rows already there in id order (their policy sha256 was not recorded: it stays NULL)."""
    bind = op.get_bind()
    timeline = _timeline()
    last: dict[int, tuple[int, str]] = {}
    for row in bind.execute(sa.select(timeline).order_by(timeline.c.incident_id, timeline.c.id)).mappings():
        seq, prev = last.get(row["incident_id"], (0, GENESIS))
        content = timeline_content(incident_id=row["incident_id"], at=row["at"].replace(tzinfo=UTC),
                                   kind=row["kind"], actor=row["actor"], identity=row["slack_user"],
                                   policy_sha256=None, detail=row["detail"])
        digest = entry_hash(str(row["incident_id"]), seq + 1, prev, content)
        bind.execute(sa.update(timeline).where(timeline.c.id == row["id"]).values(
            seq=seq + 1, prev_hash=prev, hash=digest))
        last[row["incident_id"]] = (seq + 1, digest)
    security = _security()
    seq, prev = 0, GENESIS
    for row in bind.execute(sa.select(security).order_by(security.c.id)).mappings():
        content = security_content(at=row["at"].replace(tzinfo=UTC), source=row["source"], kind=row["kind"],
                                   detail=row["detail"])
        seq, digest = seq + 1, entry_hash(SECURITY_CHAIN, seq + 1, prev, content)
        bind.execute(sa.update(security).where(security.c.id == row["id"]).values(
            seq=seq, prev_hash=prev, hash=digest))
        prev = digest


def upgrade() -> None:
    with op.batch_alter_table("timeline") as batch:
        batch.add_column(sa.Column("policy_sha256", sa.String(length=64), nullable=True,
                                   comment="The policy live when it was written"))
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True,
                                   comment="Position in the incident's chain, from 1"))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    with op.batch_alter_table("security_events") as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True,
                                   comment="Position in the security chain, from 1"))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    _chain_existing()
    with op.batch_alter_table("timeline") as batch:
        for name in _CHAIN_COLUMNS:
            batch.alter_column(name, nullable=False, existing_type=sa.Integer() if name == "seq" else sa.String(64))
        batch.create_unique_constraint("uq_timeline_incident_seq", ["incident_id", "seq"])
    with op.batch_alter_table("security_events") as batch:
        for name in _CHAIN_COLUMNS:
            batch.alter_column(name, nullable=False, existing_type=sa.Integer() if name == "seq" else sa.String(64))
        batch.create_unique_constraint("uq_security_events_seq", ["seq"])


    op.create_table(
        "audit_export",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_timeline_id", sa.Integer(), nullable=False, comment="Highest timeline id published"),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_export")
    with op.batch_alter_table("security_events") as batch:
        batch.drop_constraint("uq_security_events_seq", type_="unique")
        for name in _CHAIN_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("timeline") as batch:
        batch.drop_constraint("uq_timeline_incident_seq", type_="unique")
        for name in (*_CHAIN_COLUMNS, "policy_sha256"):
            batch.drop_column(name)
