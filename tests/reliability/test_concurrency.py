"""Concurrent reviewers and model calls against the live console (real gradio_client calls).

Counts come from the environment so CI can run a lighter load with the same 20 clients:
``RELIABILITY_CLIENTS`` (20) and ``RELIABILITY_REVIEWS_PER_CLIENT`` (50).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from gradio_client import Client
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

import db.store as store_mod
from app.services.answers import compare_case
from db.cases import resolve_case_ref
from db.models import AuditEntry, Review
from db.store import open_store
from db.users import create_user
from tests.conftest import tiny_cases

CLIENTS = int(os.environ.get("RELIABILITY_CLIENTS", "20"))
# 20 x 50 takes ~65 s on 2 shared cores; CI keeps the 20 concurrent clients with fewer reviews each.
REVIEWS_PER_CLIENT = int(os.environ.get("RELIABILITY_REVIEWS_PER_CLIENT", "10"))


def _precompute(served, engine, case_id: str) -> None:
    with Session(served.store.engine) as s:
        pk = resolve_case_ref(s, case_id)
    compare_case(served.store, engine, pk, "otto")


def test_concurrent_reviewers_lose_nothing(served, tiny_engine):
    case_id = served.batch_case_ids[0]
    _precompute(served, tiny_engine, case_id)
    start = threading.Barrier(CLIENTS)
    # One reviewer per client: each stays inside the per-user write quota (30 reviews a minute), and
    # every review after a user's first on the case is an explicit revision (one review per case and
    # reviewer otherwise).
    with served.store.session() as s:
        for i in range(CLIENTS):
            create_user(s, f"load{i}", "reviewer", f"load-pass-{i:04d}")

    def reviewer(i: int) -> list[int]:
        client = Client(served.url, auth=(f"load{i}", f"load-pass-{i:04d}"), verbose=False)
        start.wait()  # everyone submits at once
        return [
            client.predict(case_id, "flag", "", f"c{i}-r{j}", "", True, api_name="/submit_review")[
                "review_id"
            ]
            for j in range(REVIEWS_PER_CLIENT)
        ]

    with ThreadPoolExecutor(CLIENTS) as pool:
        ids = [rid for got in pool.map(reviewer, range(CLIENTS)) for rid in got]

    total = CLIENTS * REVIEWS_PER_CLIENT
    assert len(ids) == len(set(ids)) == total
    with Session(served.store.engine) as s:
        notes = s.exec(select(Review.note).where(Review.status == "flagged_ambiguous")).all()
        flagged = AuditEntry.action == "review_flagged_ambiguous"
        audited = s.exec(select(func.count()).select_from(AuditEntry).where(flagged)).one()
    assert sorted(notes) == sorted(f"c{i}-r{j}" for i in range(CLIENTS) for j in range(REVIEWS_PER_CLIENT))
    assert audited == total


def test_store_write_survives_contention(db_url):
    """Read-then-write units of work from 20 threads: none fails with 'database is locked'."""
    from app.services.reviews import submit_review
    from db.cases import add_case
    from db.store import open_store
    from db.users import create_user
    from policies import parse_case

    store = open_store(db_url)
    store.write(lambda s: create_user(s, "otto", "ops", "ops-pass-12"))
    pk = store.write(lambda s: add_case(s, parse_case(tiny_cases()[0]), "try", "otto").id)

    def worker(i: int) -> None:
        for j in range(25):
            store.write(lambda s, j=j: submit_review(s, pk, "flag", "otto", runs={}, note=f"{i}-{j}"))

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(worker, range(20)))
    with Session(store.engine) as s:
        assert s.exec(select(func.count()).select_from(Review)).one() == 500
        on_reviews = AuditEntry.entity == "review"
        assert s.exec(select(func.count()).select_from(AuditEntry).where(on_reviews)).one() == 500


def test_concurrent_compares_load_the_model_once(served, tiny_engine, monkeypatch):
    from engine import Engine

    loads: list[str] = []
    real_load = Engine.load.__func__

    def counting_load(cls, *args, **kwargs):
        loads.append(repr(args))
        return real_load(cls, *args, **kwargs)

    monkeypatch.setattr(Engine, "load", classmethod(counting_load))
    payloads = [json.dumps(tiny_cases()[k % 4]) for k in range(20)]
    clients = [Client(served.url, auth=served.auth("ann"), verbose=False) for _ in range(4)]
    proc = psutil.Process()
    rss_before = proc.memory_info().rss
    with ThreadPoolExecutor(20) as pool:
        outs = list(pool.map(lambda k: clients[k % 4].predict(payloads[k], api_name="/compare"), range(20)))
    rss_growth = proc.memory_info().rss - rss_before
    assert all(set(o["answers"]) == {"base", "finetuned"} for o in outs)
    assert loads == []  # served from the one engine loaded at start
    run_ids = {(o["case_id"], o["answers"]["base"]["run_id"]) for o in outs}
    assert len(run_ids) == 4  # each case computed once, then served from the store
    assert rss_growth < 300 * 2**20, f"memory grew by {rss_growth / 2**20:.0f} MiB"


def test_store_write_retries_only_while_locked(tmp_path, monkeypatch):
    """A unit of work that meets 'database is locked' is rolled back and run again; others are not."""
    monkeypatch.setattr(store_mod, "BACKOFF_S", 0.001)
    store = open_store(tmp_path / "retry.db")
    tries: list[int] = []

    def flaky(session) -> str:
        tries.append(1)
        if len(tries) < 3:
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        return "done"

    assert store.write(flaky) == "done" and len(tries) == 3
    tries.clear()
    with pytest.raises(OperationalError, match="no such table"):
        store.write(lambda s: (tries.append(1), s.connection().exec_driver_sql("SELECT * FROM nope")))
    assert len(tries) == 1
    with pytest.raises(OperationalError, match="locked"):
        store.write(lambda s: (_ for _ in ()).throw(
            OperationalError("x", {}, sqlite3.OperationalError("database is locked"))), attempts=2)
