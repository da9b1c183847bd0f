"""The PostgreSQL doors: moving an SQLite store into PostgreSQL, and pg_dump backups (PostgreSQL only)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from db.reviews import add_review
from db.store import open_store
from tests.conftest import case_with_runs
from tests.db.test_migrations import STORE_V0, rows_of

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
pytestmark = pytest.mark.parametrize("store_kind", ["postgresql"])


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sqlite_store_moves_into_postgres(tmp_path, db_url, capsys):
    old = tmp_path / "old.db"
    shutil.copy(STORE_V0, old)
    move = _script("sqlite_to_postgres")
    assert move.main(["--from", str(old), "--to", db_url]) == 0
    moved = json.loads(capsys.readouterr().out)
    rows = rows_of(old)  # upgraded in place first
    assert moved == {name: len(rows[name]) for name in moved} and moved["audit_log"] == len(rows["audit_log"])
    store = open_store(db_url)
    with store.session() as s:
        notes = sorted(r[0] for r in s.exec(text("SELECT note FROM reviews")))
        assert notes == sorted(r[4] for r in rows["reviews"])
        review = add_review(s, 1, "approved", "rita", note="on postgres")
    assert review.id == max(r[0] for r in rows["reviews"]) + 1  # the id sequence follows the copied ids
    assert move.main(["--from", str(old), "--to", db_url]) == 2  # never into a store that holds rows
    assert "already holds rows" in capsys.readouterr().err


def test_pg_dump_backup_and_restore(tmp_path, store, postgres_server, capsys):
    case_with_runs(store)
    with store.session() as s:
        before = {t: s.exec(text(f"SELECT count(*) FROM {t}")).one()[0] for t in ("cases", "audit_log")}
    backup = _script("backup_db")
    assert backup.main(["--db", store.url, "--out", str(tmp_path / "b.dump")]) == 0
    assert "audit_log" in json.loads(capsys.readouterr().out)["tables"]
    postgres_server.admin("CREATE DATABASE restored_here")
    try:
        target = postgres_server.url("restored_here")
        assert backup.main(["--restore", str(tmp_path / "b.dump"), "--db", target]) == 0
        tables = json.loads(capsys.readouterr().out)["tables"]
        assert {t: tables[t] for t in before} == before
        restored = open_store(target)  # at head already: opens as is
        with pytest.raises(Exception, match="append-only"), restored.session() as s:
            s.exec(text("DELETE FROM audit_log"))  # the trigger came back with the data
        restored.engine.dispose()
        assert backup.main(["--restore", str(tmp_path / "b.dump"), "--db", target]) == 2
        assert "--overwrite" in capsys.readouterr().err
    finally:
        postgres_server.admin("DROP DATABASE IF EXISTS restored_here WITH (FORCE)")
