"""Alembic environment for the state database.

:func:`rag.state.db.upgrade` runs the migrations programmatically on a connection it opened (and locked), passed
in ``config.attributes["connection"]``. Run by hand (``alembic -c ...``), the URL comes from
``sqlalchemy.url`` in the config instead.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from rag.state.models import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run()
