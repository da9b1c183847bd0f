"""Opening the store: an SQLAlchemy engine on SQLite (the default) or PostgreSQL, same behaviour on both.

SQLite gets WAL (readers never block the writer), foreign keys on, and a busy timeout so a
second writer waits instead of failing. Write units of work go through :meth:`Store.write`: they
start with ``BEGIN IMMEDIATE`` (take the write lock up front, so a read-then-write transaction
never fails on a stale snapshot, which SQLite reports at once, without waiting) and are retried
with backoff when the lock stays busy past the timeout. On PostgreSQL (``postgresql+psycopg://``)
the same write transactions take a transaction-scoped advisory lock instead of ``BEGIN IMMEDIATE``
(so writers, exports included, run one at a time as on SQLite), lock waits end after the same
timeout, and serialization failures and deadlocks are retried like a busy SQLite. Text holding NUL
is refused on both (PostgreSQL cannot store it; on SQLite a check before each statement refuses it).
The URL is always passed in by the caller (the console's ``--db`` / ``DATABASE_URL``); library code
never reads it.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DataError, NoSuchModuleError, OperationalError
from sqlmodel import Session, create_engine

from db.migrations import upgrade

DEFAULT_DB_URL = "sqlite:///var/policyops.db"
BUSY_TIMEOUT_MS = 5000  # a writer waits this long for another writer before "database is locked"
WRITE_ATTEMPTS = 6  # Store.write tries a unit of work this often when the database stays locked
BACKOFF_S = 0.05  # first retry pause; doubles each time, with jitter so writers do not march in step
IMMEDIATE = "policyops_immediate"  # execution option: begin the transaction holding the write lock
EXCLUSIVE_WAIT_S = 600  # Store.exclusive waits this long for the holder (an export) to finish
WRITE_LOCK = 0x706F7772  # PostgreSQL advisory lock key standing in for SQLite's write lock
RETRY_SQLSTATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available: lock_timeout passed, like SQLite's busy timeout
})
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
    immediate = conn.get_execution_options().get(IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _has_nul(params: Any) -> bool:
    if isinstance(params, str):
        return "\x00" in params
    if isinstance(params, dict):
        return any(_has_nul(v) for v in params.values())
    if isinstance(params, list | tuple):
        return any(_has_nul(v) for v in params)
    return False


def _sqlite_refuse_nul(conn: Connection, _cursor: Any, statement: str, params: Any, _context: Any,
                       _many: bool) -> None:
    # PostgreSQL refuses NUL in text; SQLite would store it. Refuse it here too, with the same error class.
    if _has_nul(params):
        raise DataError(statement, params, ValueError("text fields cannot contain NUL (0x00) characters"))


def _postgres_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(IMMEDIATE, False):  # the first statement of the transaction
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")


def is_locked_error(exc: BaseException) -> bool:
    """True for errors that mean "another writer was in the way, run it again": SQLite's "database is
    locked" / "database is busy", PostgreSQL's serialization failures, deadlocks and lock timeouts."""
    if not isinstance(exc, OperationalError):
        return False
    if getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES:
        return True
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


class StoreUnavailable(RuntimeError):
    """The store at a URL cannot be opened: a folder that cannot be made, a server that does not
    answer or refuses the login, a database kind without its driver, text that is not a URL. The
    message names the URL (without its password) and the reason, in one line."""


def shown_url(path_or_url: str | Path) -> str:
    """The store's URL as it may be shown or logged: the password hidden."""
    url = db_url_for(path_or_url)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url if "@" not in url else "(a URL that does not parse)"


def db_url_for(path_or_url: str | Path) -> str:
    """A plain file path becomes an SQLite URL; anything with ``://`` is taken as a URL."""
    s = str(path_or_url)
    return s if "://" in s else f"sqlite:///{s}"


@contextmanager
def _file_lock(database: str | None, name: str, wait_s: float) -> Iterator[None]:
    """An exclusive flock on ``<database>.<name>.lock``, polled until ``wait_s`` passes."""
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: one console per SQLite file, whose write lock is enough
        yield
        return
    with open(f"{database}.{name}.lock", "a+b") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OperationalError(f"waiting for the {name} lock", None,
                                           Exception(f"{name} lock busy for {wait_s:.0f} s")) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Store:
    """The database handle the console and scripts share. Use :meth:`session` for each unit of work."""

    engine: Engine
    url: str

    @contextmanager
    def session(self, immediate: bool = False) -> Iterator[Session]:
        """A short transaction: committed when the block ends, rolled back on error.

        ``immediate``: take the write lock when the transaction begins (SQLite's, or the advisory lock on
        PostgreSQL; waiting up to the busy timeout); use it for blocks that read and then write, and for
        exports (one at a time). Prefer :meth:`write`, which also retries.
        """
        bind = self.engine.execution_options(**{IMMEDIATE: True}) if immediate else self.engine
        with Session(bind, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def exclusive(self, name: str, wait_s: float = EXCLUSIVE_WAIT_S) -> Iterator[None]:
        """Hold the store-wide lock ``name`` for the whole block, commits and work outside the database
        included (an export: choose the reviews, commit, then publish its files), across processes.

        PostgreSQL: a session-level advisory lock on a connection of its own, waited for up to
        ``wait_s`` (then OperationalError). SQLite: an exclusive ``flock`` on ``<database>.<name>.lock``
        beside the database file (per open file, so threads of one console exclude each other as
        consoles do), waited for up to ``wait_s`` (then OperationalError); an in-memory database is
        one process's, and its write lock is enough.
        """
        if self.engine.dialect.name != "postgresql":
            with _file_lock(self.engine.url.database, name, wait_s):
                yield
            return
        key = zlib.crc32(name.encode())
        with self.engine.connect() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = {int(wait_s * 1000)}"))
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()  # the lock is the session's: it outlives this transaction
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()

    def write(self, fn: Callable[[Session], T], attempts: int = WRITE_ATTEMPTS) -> T:
        """Run ``fn(session)`` in one write transaction and commit; returns what ``fn`` returned.

        When the database stays locked past the busy timeout (or PostgreSQL reports a serialization
        failure or a deadlock), the whole unit of work is rolled back and run again after a growing
        pause (``fn`` must therefore only touch the database). After ``attempts`` tries the last
        OperationalError is raised. Other errors are raised at once.
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


def create_store_engine(url: str | Path) -> Engine:
    """The engine for ``url`` (a URL or an SQLite file path) with the store's settings; migrates nothing."""
    url = db_url_for(url)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
    elif backend == "postgresql":
        # UTC sessions, like the stored timestamps; a lock wait ends after the busy timeout, as on SQLite.
        kwargs["connect_args"] = {"options": f"-c timezone=UTC -c lock_timeout={BUSY_TIMEOUT_MS}"}
        kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
    engine = create_engine(url, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "before_cursor_execute", _sqlite_refuse_nul)
    elif backend == "postgresql":
        event.listen(engine, "begin", _postgres_begin)
    return engine


def open_store(url: str | Path = DEFAULT_DB_URL) -> Store:
    """Open (creating if needed) the database at ``url`` and upgrade it to the newest schema revision.

    Raises :class:`StoreUnavailable` when it cannot be reached or made, and
    :class:`db.migrations.MigrationError` for a store that cannot be upgraded as it is.
    """
    full_url = db_url_for(url)
    try:
        if make_url(full_url).get_backend_name() not in ("sqlite", "postgresql"):
            raise StoreUnavailable(f"cannot open the store at {shown_url(full_url)}: the store is an SQLite "
                                   "file or a postgresql+psycopg:// database")
        engine = create_store_engine(full_url)
        upgrade(engine.execution_options(**{IMMEDIATE: True}))
    except (OSError, OperationalError, ArgumentError, NoSuchModuleError, ModuleNotFoundError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if isinstance(exc, OSError) and exc.strerror:
            reason = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        raise StoreUnavailable(f"cannot open the store at {shown_url(full_url)}: {reason}") from None
    return Store(engine=engine, url=full_url)
