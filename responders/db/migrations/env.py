"""Alembic environment: migrations run on the connection that responders.db.migrate() hands over."""

from __future__ import annotations

from alembic import context

from responders.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through responders.db.migrate(engine); Warden does so at start-up")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
