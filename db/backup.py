"""Online-consistent copies of the store, and restoring one: SQLite's backup API, PostgreSQL's pg_dump.

:func:`backup_sqlite` uses SQLite's backup API over a read transaction: the copy is one consistent
snapshot (every committed review with its audit entry, nothing half-written) even while the
console keeps writing, and writers are not blocked (WAL). The copy is checked with
``PRAGMA integrity_check`` before it is renamed into place.

On PostgreSQL, ``pg_dump --format=custom`` takes the same kind of copy (one snapshot, writers not
blocked) and ``pg_restore`` puts it back; :func:`pg_dump_command` and :func:`pg_restore_command` build
their command lines (``scripts/backup_db.py`` runs them: this package starts no process).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(RuntimeError):
    """The copy could not be made or failed its integrity check; the message says which file."""


@dataclass(frozen=True)
class BackupResult:
    path: str
    tables: dict[str, int]  # row count per table in the copy
    integrity: str  # "ok"


def sqlite_path(url_or_path: str | Path) -> Path:
    """The file behind an ``sqlite:///...`` URL or a plain path; BackupError for other databases."""
    text = str(url_or_path)
    if "://" not in text:
        return Path(text)
    url = make_url(text)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise BackupError(f"db: only SQLite files can be backed up this way (got {text!r})")
    return Path(url.database)


def check_copy(path: Path) -> BackupResult:
    """Row counts and ``PRAGMA integrity_check`` of the database at ``path``."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        tables = {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    conn.close()
    return BackupResult(str(path), tables, integrity)


def _copy(src: Path, dest: Path) -> BackupResult:
    if not src.is_file():
        raise BackupError(f"db: {src} does not exist")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    source = sqlite3.connect(src, timeout=30)  # read-only use; a plain connection so WAL works
    target = sqlite3.connect(tmp)
    try:
        source.backup(target)  # all pages in one step: one read snapshot
        target.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
    finally:
        target.close()
        source.close()
    result = check_copy(tmp)
    if result.integrity != "ok":
        tmp.unlink(missing_ok=True)
        raise BackupError(f"out: the copy of {src} failed its integrity check: {result.integrity}")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    return BackupResult(str(dest), result.tables, result.integrity)


def backup_sqlite(db: str | Path, dest: Path) -> BackupResult:
    """Copy the live store ``db`` (URL or path) to ``dest`` consistently; returns the copy's figures."""
    return _copy(sqlite_path(db), Path(dest))


def restore_sqlite(backup: Path, db: str | Path, *, overwrite: bool = False) -> BackupResult:
    """Copy ``backup`` to the store file ``db``; refuses to replace an existing file unless ``overwrite``.

    Stop the console first: a restore under a running console would swap the file beneath it.
    """
    target = sqlite_path(db)
    if target.exists() and not overwrite:
        raise BackupError(f"db: {target} exists; pass overwrite to replace it")
    for suffix in ("-wal", "-shm"):  # the old file's log must not be replayed onto the restored one
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    return _copy(Path(backup), target)


def is_postgres(url_or_path: str | Path) -> bool:
    text = str(url_or_path)
    return "://" in text and make_url(text).get_backend_name() == "postgresql"


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://u:p@h:port/db`` as the ``postgresql://...`` URL libpq tools take."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        raise BackupError(f"db: not a PostgreSQL database URL: {url!r}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def pg_dump_command(url: str, dest: Path) -> list[str]:
    """``pg_dump`` writing the database at ``url`` to ``dest`` (custom format: compressed, for pg_restore)."""
    return ["pg_dump", "--format=custom", "--no-owner", f"--file={dest}", f"--dbname={libpq_url(url)}"]


def pg_restore_command(backup: Path, url: str, *, overwrite: bool = False) -> list[str]:
    """``pg_restore`` of ``backup`` into the database at ``url``; ``overwrite`` drops what is there first."""
    clean = ["--clean", "--if-exists"] if overwrite else []
    return ["pg_restore", "--no-owner", "--exit-on-error", "--single-transaction", *clean,
            f"--dbname={libpq_url(url)}", str(backup)]
