"""Alembic's entry: migrates the store over the console's connection, or over one made from the URL.

``open_store`` (the console's start) passes its connection in ``config.attributes["connection"]``;
``uv run alembic ...`` connects to ``-x db=URL``, else ``$DATABASE_URL``, else the default SQLite file.
Both then run :func:`db.migrations.prepare` (lock, adopt a pre-Alembic store) and the revisions.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from sqlalchemy import Connection
from sqlmodel import SQLModel

import db.models  # noqa: F401  # registers every table on SQLModel.metadata
from alembic import context
from db.migrations import prepare
from db.store import DEFAULT_DB_URL, IMMEDIATE, create_store_engine

config = context.config
target_metadata = SQLModel.metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        prepare(connection, context.get_context())
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    given = context.get_x_argument(as_dictionary=True).get("db")
    url = given or os.environ.get("DATABASE_URL", DEFAULT_DB_URL)
    engine = create_store_engine(url)
    try:
        with engine.execution_options(**{IMMEDIATE: True}).connect() as conn:
            run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against the store")
main()
