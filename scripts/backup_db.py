"""Back up the console's store while it runs, or restore a backup (SQLite or PostgreSQL).

    uv run python scripts/backup_db.py --db var/policyops.db --out var/backups/policyops-2026-11-25.db
    uv run python scripts/backup_db.py --restore var/backups/policyops-2026-11-25.db --db var/restored.db
    uv run python scripts/backup_db.py --db postgresql+psycopg://u:p@host/policyops --out var/backups/p.dump
    uv run python scripts/backup_db.py --restore var/backups/p.dump --db postgresql+psycopg://u:p@host/new

A backup is one consistent snapshot taken without stopping the console: SQLite's backup API
(integrity-checked before it appears under ``--out``), or ``pg_dump --format=custom`` for
PostgreSQL (checked with ``pg_restore --list``). Restore into a stopped console's store: a new
SQLite file, or an empty PostgreSQL database (``createdb new``); ``--overwrite`` replaces one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import inspect, text  # noqa: E402

from db.backup import (  # noqa: E402
    BackupError,
    BackupResult,
    backup_sqlite,
    is_postgres,
    pg_dump_command,
    pg_restore_command,
    restore_sqlite,
)
from db.store import DEFAULT_DB_URL, create_store_engine  # noqa: E402


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise BackupError(f"{cmd[0]}: not found; install PostgreSQL's client tools (apt-get install "
                          "postgresql-client)") from None
    if done.returncode != 0:
        raise BackupError(f"{cmd[0]} failed: {done.stderr.strip()[:500]}")
    return done.stdout


def table_counts(url: str) -> dict[str, int]:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return {n: conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar_one()
                    for n in inspect(conn).get_table_names()}
    finally:
        engine.dispose()


def backup_postgres(url: str, dest: Path) -> list[str]:
    """pg_dump to a temp file beside ``dest``, check it holds the store's tables, rename it into place;
    returns the tables whose data the dump holds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    _run(pg_dump_command(url, tmp))
    listing = _run(["pg_restore", "--list", str(tmp)])
    tables = sorted(line.split(" TABLE DATA ")[1].split()[1] for line in listing.splitlines()
                    if " TABLE DATA " in line)
    if "audit_log" not in tables:
        tmp.unlink(missing_ok=True)
        raise BackupError(f"out: the dump of {url} holds no audit_log data: not a store?")
    os.replace(tmp, dest)
    return tables


def restore_postgres(backup: Path, url: str, *, overwrite: bool = False) -> BackupResult:
    if not overwrite and table_counts(url):
        raise BackupError("db: the database holds tables; restore into an empty one or pass --overwrite")
    _run(pg_restore_command(backup, url, overwrite=overwrite))
    return BackupResult(url, table_counts(url), "ok")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=os.environ.get("DATABASE_URL", DEFAULT_DB_URL), help="store URL or file")
    p.add_argument("--out", type=Path, help="backup file to write")
    p.add_argument("--restore", type=Path, help="backup file to restore into --db")
    p.add_argument("--overwrite", action="store_true", help="with --restore: replace an existing --db store")
    args = p.parse_args(argv)
    if (args.out is None) == (args.restore is None):
        p.error("give exactly one of --out (backup) or --restore (restore)")
    postgres = is_postgres(args.db)
    try:
        if args.out is not None and postgres:
            tables = backup_postgres(args.db, args.out)
            print(json.dumps({"path": str(args.out), "format": "pg_dump custom", "tables": tables}, indent=2))
            return 0
        if args.out is not None:
            result = backup_sqlite(args.db, args.out)
        elif postgres:
            result = restore_postgres(args.restore, args.db, overwrite=args.overwrite)
        else:
            result = restore_sqlite(args.restore, args.db, overwrite=args.overwrite)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = result.path if not postgres else result.path.split("@")[-1]  # never print a password
    print(json.dumps({"path": path, "integrity": result.integrity, "tables": result.tables}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
