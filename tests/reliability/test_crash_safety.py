"""Crash safety: an export killed half-way publishes nothing and marks nothing exported; a backup
taken while reviews are being written restores to a consistent, complete store."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

import app.services.exports as exports_mod
from app.services.exports import export_reviews
from app.services.reviews import submit_review
from db.backup import backup_sqlite, check_copy, restore_sqlite
from db.cases import add_case
from db.models import AuditEntry, Export, ExportItem, Review
from db.store import open_store
from db.users import create_user
from policies import parse_case
from policies.synth_text import reference_answer
from scripts.backup_db import main as backup_main
from tests.conftest import tiny_cases


def _store_with_corrections(path: Path | str, n: int = 3):
    """``n`` tiny cases, each corrected to the rule engine's whole answer (consistent: exported)."""
    store = open_store(path)
    store.write(lambda s: create_user(s, "otto", "ops", "ops-pass-12"))
    for data in tiny_cases()[:n]:
        case = parse_case(data)
        pk = store.write(lambda s, c=case: add_case(s, c, "batch", "otto").id)
        answer = reference_answer(case).model_dump(mode="json")
        store.write(lambda s, pk=pk, a=answer: submit_review(s, pk, "correct", "otto", runs={}, answer=a))
    return store


def _visible(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")) if out_dir.exists() else []


def _exported(store) -> int:
    with Session(store.engine) as s:
        return s.exec(select(func.count()).select_from(ExportItem)).one()


def test_failure_between_write_and_commit_leaves_nothing(tmp_path, monkeypatch, db_url):
    store = _store_with_corrections(db_url)
    out = tmp_path / "exports"

    def boom(*args, **kwargs):
        raise OSError("disk full while committing")

    monkeypatch.setattr(exports_mod, "audit", boom)  # after the files are written, before the commit
    with pytest.raises(OSError), store.session(immediate=True) as s:
        export_reviews(s, "otto", out)
    assert _visible(out) == [] and list(out.iterdir()) == [] and _exported(store) == 0
    monkeypatch.undo()
    with store.session(immediate=True) as s:
        result = export_reviews(s, "otto", out)
    assert result.count == 3 and _exported(store) == 3 and len(_visible(out)) == 2


def _child_export(db_path: str, out: str, marker: str, stage: str) -> None:
    """Runs in a forked child: export with a hook that announces the moment, then hangs (killed)."""
    import app.services.durable as durable

    def hang(*args: object, **kwargs: object) -> None:
        Path(marker).touch()
        time.sleep(600)

    if stage == "writing":  # inside the temp file's fsync
        durable.os = type("os", (), {**vars(os), "fsync": staticmethod(hang)})  # type: ignore[assignment]
    elif stage == "committed":  # after the commit, before the files are renamed into place
        exports_mod.publish = hang  # type: ignore[assignment]
    store = open_store(db_path)
    with store.session(immediate=True) as s:
        export_reviews(s, "otto", Path(out))


@pytest.mark.parametrize("stage, exported_after_kill", [("writing", 0), ("committed", 3)])
def test_export_killed_half_way(tmp_path, stage, exported_after_kill, db_url):
    store = _store_with_corrections(db_url)
    out, marker = tmp_path / "exports", tmp_path / "marker"
    # fork: the child starts with everything imported (a fresh interpreter would import torch)
    child = multiprocessing.get_context("fork").Process(
        target=_child_export, args=(db_url, str(out), str(marker), stage)
    )
    child.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert child.is_alive(), "the exporting child died early"
        assert time.monotonic() < deadline, "the child never reached the hook"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join(timeout=30)
    assert _visible(out) == []  # only hidden temp files, if anything
    assert _exported(store) == exported_after_kill
    with store.session(immediate=True) as s:
        recovery = exports_mod.recover_exports(s, out)
    if exported_after_kill:  # committed: the export is finished, its files published whole
        assert len(recovery.published) == 2
        with Session(store.engine) as s:
            export = s.exec(select(Export)).one()
        lines = Path(export.path).read_text().splitlines()
        assert len(lines) == export.count == 3 and all(json.loads(line)["messages"] for line in lines)
    else:  # not committed: rolled back, the reviews are exported by the next export
        assert recovery.published == [] and list(out.iterdir()) == []
        with store.session(immediate=True) as s:
            assert export_reviews(s, "otto", out).count == 3
    assert len(_visible(out)) == 2 and _exported(store) == 3


def test_online_backup_restores_everything(tmp_path):  # SQLite; pg_dump: tests/scripts/test_postgres_scripts
    store = _store_with_corrections(tmp_path / "live.db", n=1)
    with Session(store.engine) as s:
        pk = s.exec(select(Review.case_pk)).first()
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        while not stop.is_set():
            review = store.write(lambda s: submit_review(s, pk, "flag", "otto", runs={}, note="busy"))
            written.append(review.id)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 50:
            time.sleep(0.01)
        before = len(written)
        code = backup_main(["--db", str(tmp_path / "live.db"), "--out", str(tmp_path / "backup.db")])
        assert code == 0
    finally:
        stop.set()
        thread.join(timeout=30)
    assert len(written) > before  # writes went on during the backup
    copy = check_copy(tmp_path / "backup.db")
    assert copy.integrity == "ok"
    restored = restore_sqlite(tmp_path / "backup.db", tmp_path / "restored.db")
    assert restored.integrity == "ok"
    again = open_store(tmp_path / "restored.db")  # migrations already applied: opens as is
    with Session(again.engine) as s:
        reviews = s.exec(select(func.count()).select_from(Review)).one()
        audited = s.exec(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.entity == "review")
        ).one()
    assert reviews >= before + 1  # every review committed before the backup began (+ the correction)
    assert reviews == audited  # one snapshot: no review without its audit entry
    with pytest.raises(Exception, match="exists"):
        restore_sqlite(tmp_path / "backup.db", tmp_path / "restored.db")
    assert backup_sqlite(tmp_path / "restored.db", tmp_path / "b2.db").tables["reviews"] == reviews
