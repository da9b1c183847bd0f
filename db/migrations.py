"""Schema migrations with Alembic (``alembic/versions/`` at the repo root), on SQLite and PostgreSQL.

:func:`upgrade` is what the console runs on start (``open_store``) and what ``uv run alembic upgrade
head`` runs: both go through ``alembic/env.py``, which calls :func:`prepare` and then Alembic's
upgrade to head. New schema changes are new revisions (``uv run alembic revision --autogenerate``,
then reviewed); a shipped revision is never edited.

Stores made before Alembic recorded their hand-rolled migrations (``m001_initial`` ...
``m005_login_security``) in ``schema_migrations``. :func:`prepare` adopts such a store on its first
upgrade: it checks every numbered migration was applied (their schema is exactly the baseline
revision's), stamps the baseline and drops ``schema_migrations``; Alembic then applies what follows.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

from alembic import command

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"
BASELINE = "0001_baseline"  # the schema of the last numbered migration, as Alembic's first revision
NUMBERED_MIGRATIONS: tuple[str, ...] = (  # what stores before Alembic recorded, in order
    "m001_initial",
    "m002_audit_append_only",
    "m003_adapter_versions",
    "m003_shadow_settings",
    "m004_review_throughput",
    "m005_login_security",
)
MIGRATION_LOCK = 0x706F6C6D  # PostgreSQL advisory lock key: one process migrates at a time


class MigrationError(RuntimeError):
    """The store cannot be upgraded as it is; the message says what was found and what to do."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration (``alembic.ini``); with ``connection``, env.py migrates over it."""
    config = Config(str(ALEMBIC_INI))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def prepare(connection: Connection, context: MigrationContext) -> str | None:
    """Run by env.py inside the migration transaction, before Alembic reads the store's revision.

    Serialises concurrent upgrades on PostgreSQL (advisory lock held until commit; SQLite's upgrade
    transaction holds the write lock), then adopts a pre-Alembic store (see the module docstring).
    Returns the revision stamped, or None. Raises :class:`MigrationError` for a store whose numbered
    migrations stop short of the last one, or that carries both kinds of record.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    tables = set(inspect(connection).get_table_names())
    if "schema_migrations" not in tables:
        return None
    if "alembic_version" in tables:
        raise MigrationError("db: the store has both schema_migrations and alembic_version; "
                             "drop schema_migrations if Alembic's record is the right one")
    done = {row[0] for row in connection.execute(text("SELECT name FROM schema_migrations"))}
    missing = [name for name in NUMBERED_MIGRATIONS if name not in done]
    if missing:
        raise MigrationError(f"db: the store stops before numbered migration {missing[0]}; open it once with "
                             "a release from before Alembic (which applies it), then upgrade")
    script = ScriptDirectory.from_config(alembic_config())
    context.stamp(script, BASELINE)
    connection.execute(text("DROP TABLE schema_migrations"))
    return BASELINE


def upgrade(engine: Engine) -> None:
    """Upgrade the store behind ``engine`` to the newest revision (a no-op when it is there).

    One transaction: an upgrade that fails leaves the store as it was. Raises
    :class:`MigrationError` (see :func:`prepare`) or the database's error.
    """
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")


def current_revision(engine: Engine) -> str | None:
    """The store's Alembic revision (None before the first upgrade)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest revision in ``alembic/versions``."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "alembic/versions holds no revision"
    return head
