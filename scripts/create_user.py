"""Create a console user.

uv run python scripts/create_user.py --username rita --role reviewer            # prompts for the password
uv run python scripts/create_user.py --username otto --role ops --password '...' --db var/policyops.db

Passwords: at least 10 characters, not on the shipped list of common passwords (db/common_passwords.txt,
also with a trailing run of digits or punctuation removed) and not the user name; a refusal exits 2.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.migrations import MigrationError  # noqa: E402
from db.models import ROLES  # noqa: E402
from db.store import DEFAULT_DB_URL, StoreUnavailable, open_store, shown_url  # noqa: E402
from db.users import MIN_PASSWORD_CHARS, UserError, create_user  # noqa: E402
from engine.cli import refusals  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Create a PolicyOps Console user.")
    p.add_argument("--username", required=True)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument(
        "--password",
        help=f"omit to be prompted (keeps it out of the shell history); at least {MIN_PASSWORD_CHARS} "
        "characters, not a common password, not the user name",
    )
    p.add_argument("--db", default=os.environ.get("DATABASE_URL", DEFAULT_DB_URL))
    args = p.parse_args(argv)
    with refusals(p, {StoreUnavailable: "--db", MigrationError: "--db"}):
        store = open_store(args.db)
    password = args.password or getpass.getpass(f"Password for {args.username}: ")
    try:
        with store.session() as s:
            create_user(s, args.username, args.role, password, actor="cli")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created {args.role} user {args.username!r} in {shown_url(store.url)}")  # no DB password
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
