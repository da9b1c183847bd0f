"""Move an SQLite store into an empty PostgreSQL database: every row of every table, ids kept.

    createdb policyops     # or CREATE DATABASE policyops; an empty database
    uv run python scripts/sqlite_to_postgres.py --from var/policyops.db \
        --to postgresql+psycopg://policyops:secret@127.0.0.1/policyops

Stop the console first. The SQLite file is upgraded to the newest revision first (as the console's
start would do), the PostgreSQL database is created at the same revision, then the tables are copied
parents first in one transaction, the id sequences moved past the copied ids, and the row counts of
both compared. Refuses a target that already holds rows. Prints the row count per table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Integer, func, select, text  # noqa: E402
from sqlalchemy.exc import StatementError  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from db.backup import is_postgres  # noqa: E402
from db.migrations import MigrationError  # noqa: E402
from db.store import Store, StoreUnavailable, open_store  # noqa: E402

BATCH = 500  # rows per INSERT


class MoveError(RuntimeError):
    """The move cannot start or did not match; the message names the store or table at fault."""


def counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in SQLModel.metadata.sorted_tables}


def copy_tables(source: Store, target: Store) -> dict[str, int]:
    """Copy every table of ``source`` into the empty ``target`` in one transaction; returns row counts."""
    if any(counts(target).values()):
        raise MoveError("--to: the PostgreSQL database already holds rows; give an empty one")
    with source.engine.connect() as src, target.engine.begin() as dst:
        for table in SQLModel.metadata.sorted_tables:  # parents before children (foreign keys)
            rows = src.execute(select(table)).mappings()
            while batch := rows.fetchmany(BATCH):
                try:
                    dst.execute(table.insert(), [dict(r) for r in batch])
                except StatementError as exc:
                    raise MoveError(f"table {table.name}: {exc.orig}") from None
            key = [c for c in table.primary_key.columns if isinstance(c.type, Integer) and c.autoincrement]
            if len(key) == 1:  # the next id PostgreSQL hands out follows the copied ones
                dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key[0].name}'), "
                                 f"COALESCE((SELECT MAX({key[0].name}) FROM {table.name}), 0) + 1, false)"))
    moved, expected = counts(target), counts(source)
    if moved != expected:
        raise MoveError(f"row counts differ after the move: sqlite {expected}, postgresql {moved}")
    return moved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", type=Path, required=True, help="the SQLite store file")
    p.add_argument("--to", dest="target", required=True, help="postgresql+psycopg://... of an empty database")
    args = p.parse_args(argv)
    if not args.source.is_file():
        print(f"error: --from: {args.source} does not exist", file=sys.stderr)
        return 2
    if not is_postgres(args.target):
        print("error: --to: give a postgresql+psycopg:// URL", file=sys.stderr)
        return 2
    try:
        moved = copy_tables(open_store(args.source), open_store(args.target))
    except (MoveError, StoreUnavailable, MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(moved, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
