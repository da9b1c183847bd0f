"""Alembic migrations: a store from the release before Alembic upgrades in place without loss, the
console's start and ``alembic upgrade head`` do the same, and the models match the newest revision."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from sqlmodel import SQLModel

from db.migrations import MigrationError, current_revision, head_revision
from db.reviews import add_review
from db.store import open_store

ROOT = Path(__file__).resolve().parents[2]
# Made with the code of commit b78be01 (numbered migrations m001..m005, before Alembic) through db/'s own
# functions: 3 users, 5 cases, 10 model runs, 3 reviews, 23 audit entries, a row in every other table.
STORE_V0 = ROOT / "tests" / "db" / "data" / "store_v0.sqlite"  # tracked (tests/artifacts/ is gitignored)


def columns_of(path: Path) -> dict[str, list[str]]:
    """Each table's columns (schema_migrations and alembic_version aside)."""
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        columns = {n: [c[1] for c in conn.execute(f'PRAGMA table_info("{n}")')]
                   for n in names if n not in ("schema_migrations", "alembic_version")}
    conn.close()
    return columns


def rows_of(path: Path, columns: dict[str, list[str]] | None = None) -> dict[str, list[tuple]]:
    """Every row of every table (schema_migrations and alembic_version aside), sorted; ``columns``:
    only these tables and columns (a later revision's new columns left out)."""
    columns = columns or columns_of(path)
    with sqlite3.connect(path) as conn:
        rows = {}
        for name, cols in columns.items():
            listed = ", ".join(f'"{c}"' for c in cols)
            rows[name] = sorted(conn.execute(f'SELECT {listed} FROM "{name}"').fetchall(), key=repr)
    conn.close()
    return rows


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copy(STORE_V0, path)
    return path


def test_old_store_upgrades_in_place_without_loss(old_store: Path):
    old_columns = columns_of(old_store)
    before = rows_of(old_store)
    assert before["reviews"] and before["audit_log"] and before["users"] and before["cases"]
    store = open_store(old_store)
    assert current_revision(store.engine) == head_revision()
    assert rows_of(old_store, old_columns) == before  # every row of every old table, unchanged
    with sqlite3.connect(old_store) as conn:  # reviews from before the consistency check: not checked
        assert conn.execute("SELECT DISTINCT consistency_json FROM reviews").fetchall() == [(None,)]
    conn.close()
    with store.session() as s:
        tables = {r[0] for r in s.exec(text("SELECT name FROM sqlite_master WHERE type='table'"))}
        assert "schema_migrations" not in tables and "alembic_version" in tables
        review = add_review(s, 1, "approved", "rita", note="after the upgrade")
        assert review.id == max(r[0] for r in before["reviews"]) + 1
    with pytest.raises(DatabaseError, match="append-only"), store.session() as s:
        s.exec(text("DELETE FROM audit_log"))  # the old trigger survived the upgrade


def test_alembic_cli_upgrades_like_the_console(old_store: Path, tmp_path: Path):
    console_copy = tmp_path / "console.db"
    shutil.copy(old_store, console_copy)
    open_store(console_copy).engine.dispose()
    done = subprocess.run([sys.executable, "-m", "alembic", "-x", f"db={old_store}", "upgrade", "head"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "0001_baseline" in done.stderr or "Running upgrade" in done.stderr
    assert rows_of(old_store) == rows_of(console_copy)
    with sqlite3.connect(old_store) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]
    conn.close()


def test_store_short_of_the_last_numbered_migration_is_refused(old_store: Path):
    with sqlite3.connect(old_store) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE name = 'm005_login_security'")
    conn.close()
    with pytest.raises(MigrationError, match="m005_login_security"):
        open_store(old_store)
    with sqlite3.connect(old_store) as conn:  # refused before anything changed
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (5,)
    conn.close()


def test_models_match_the_newest_revision(db_url: str):
    """What ``alembic revision --autogenerate`` would find: nothing, on both stores."""
    store = open_store(db_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                SQLModel.metadata)
    assert diff == []
