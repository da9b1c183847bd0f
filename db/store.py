"""Opening the store: an SQLAlchemy engine with SQLite tuned for a small multi-user console.

SQLite gets WAL (readers never block the writer), foreign keys on, and a busy timeout so a
second writer waits instead of failing. Any other SQLAlchemy URL works too. The URL is always
passed in by the caller (the console's ``--db`` / ``DATABASE_URL``); library code never reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from db.migrations import migrate

DEFAULT_DB_URL = "sqlite:///var/policyops.db"
BUSY_TIMEOUT_MS = 5000  # a writer waits this long for another writer before "database is locked"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; fsync at checkpoints
    cur.close()


def db_url_for(path_or_url: str | Path) -> str:
    """A plain file path becomes an SQLite URL; anything with ``://`` is taken as a URL."""
    s = str(path_or_url)
    return s if "://" in s else f"sqlite:///{s}"


@dataclass
class Store:
    """The database handle the console and scripts share. Use :meth:`session` for each unit of work."""

    engine: Engine
    url: str

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A short transaction: committed when the block ends, rolled back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise


def open_store(url: str | Path = DEFAULT_DB_URL) -> Store:
    """Open (creating if needed) the database at ``url`` and apply pending migrations."""
    url = db_url_for(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate(engine)
    return Store(engine=engine, url=url)
