"""Back up the console's SQLite store while it runs, or restore a backup.

    uv run python scripts/backup_db.py --db var/policyops.db --out var/backups/policyops-2026-11-25.db
    uv run python scripts/backup_db.py --restore var/backups/policyops-2026-11-25.db --db var/restored.db

A backup is one consistent snapshot (SQLite's backup API) taken without stopping the console;
it is integrity-checked before it appears under ``--out``. Restore into a stopped console's file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.backup import BackupError, backup_sqlite, restore_sqlite  # noqa: E402
from db.store import DEFAULT_DB_URL  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=os.environ.get("DATABASE_URL", DEFAULT_DB_URL), help="store URL or file")
    p.add_argument("--out", type=Path, help="backup file to write")
    p.add_argument("--restore", type=Path, help="backup file to restore into --db")
    p.add_argument("--overwrite", action="store_true", help="with --restore: replace an existing --db file")
    args = p.parse_args(argv)
    if (args.out is None) == (args.restore is None):
        p.error("give exactly one of --out (backup) or --restore (restore)")
    try:
        if args.out is not None:
            result = backup_sqlite(args.db, args.out)
        else:
            result = restore_sqlite(args.restore, args.db, overwrite=args.overwrite)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"path": result.path, "integrity": result.integrity, "tables": result.tables}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
