"""Opening the store: an SQLAlchemy engine with SQLite tuned for a small multi-user console.

SQLite gets WAL (readers never block the writer), foreign keys on, and a busy timeout so a
second writer waits instead of failing. Write units of work go through :meth:`Store.write`: they
start with ``BEGIN IMMEDIATE`` (take the write lock up front, so a read-then-write transaction
never fails on a stale snapshot, which SQLite reports at once, without waiting) and are retried
with backoff when the lock stays busy past the timeout. Any other SQLAlchemy URL works too. The URL is always
passed in by the caller (the console's ``--db`` / ``DATABASE_URL``); library code never reads it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine

from db.migrations import migrate

DEFAULT_DB_URL = "sqlite:///var/policyops.db"
BUSY_TIMEOUT_MS = 5000  # a writer waits this long for another writer before "database is locked"
WRITE_ATTEMPTS = 6  # Store.write tries a unit of work this often when the database stays locked
BACKOFF_S = 0.05  # first retry pause; doubles each time, with jitter so writers do not march in step
_IMMEDIATE = "policyops_immediate"  # execution option: begin the transaction with BEGIN IMMEDIATE
T = TypeVar("T")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; fsync at checkpoints
    cur.close()
    # pysqlite's own transaction handling would BEGIN lazily, and only DEFERRED; _sqlite_begin
    # issues the BEGIN instead (SQLAlchemy's documented recipe for pysqlite).
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_locked_error(exc: BaseException) -> bool:
    """True for SQLite's transient "database is locked" / "database is busy" errors."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


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
    def session(self, immediate: bool = False) -> Iterator[Session]:
        """A short transaction: committed when the block ends, rolled back on error.

        ``immediate``: take SQLite's write lock when the transaction begins (waiting up to the busy
        timeout); use it for blocks that read and then write. Prefer :meth:`write`, which also retries.
        """
        bind = self.engine.execution_options(**{_IMMEDIATE: True}) if immediate else self.engine
        with Session(bind, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def write(self, fn: Callable[[Session], T], attempts: int = WRITE_ATTEMPTS) -> T:
        """Run ``fn(session)`` in one write transaction and commit; returns what ``fn`` returned.

        When the database stays locked past the busy timeout, the whole unit of work is rolled back
        and run again after a growing pause (``fn`` must therefore only touch the database). After
        ``attempts`` tries the last OperationalError is raised. Other errors are raised at once.
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.session(immediate=True) as session:
                    return fn(session)
            except OperationalError as exc:
                if not is_locked_error(exc) or attempt == attempts:
                    raise
                time.sleep(BACKOFF_S * 2 ** (attempt - 1) * (0.5 + random.random()))
        raise AssertionError("unreachable")  # the loop returns or raises


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
        event.listen(engine, "begin", _sqlite_begin)
    migrate(engine)
    return Store(engine=engine, url=url)
