"""Four console processes on one PostgreSQL store (what a team runs): reviews from 20 reviewers
spread over them are stored once each with their audit entry, and two exports at once through two
consoles share the reviews out, each exported once. Counted in the database itself, with
scripts/stress.py's functions.

The consoles are forked from the test process (everything already imported and the tiny model
loaded, so they start in a second) and serve the real app; the one case's model answers are computed
in the test process before the reviews, so the consoles only read and write the store. The README's
figure run is ``stress.py --consoles 4`` with ``python -m app`` consoles and the embedded model.
``RELIABILITY_LOAD_REVIEWS`` (5) reviews per client.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import secrets
import sys
import time
from pathlib import Path

import pytest

from app.services.answers import compare_case
from db.cases import add_case
from db.store import open_store
from policies import parse_case
from tests.conftest import tiny_cases

CONSOLES = 4
CLIENTS = 20
REVIEWS_PER_CLIENT = int(os.environ.get("RELIABILITY_LOAD_REVIEWS", "5"))
STRESS = Path(__file__).resolve().parents[2] / "scripts" / "stress.py"


def _stress():
    spec = importlib.util.spec_from_file_location("stress", STRESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["stress"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _serve(engine: object, db_url: str, port: int, export_dir: str) -> None:
    """A console process: its own store handle, the app behind its login, until terminated."""
    from app.ui.interface import build_app, make_auth
    from db.store import open_store

    store = open_store(db_url)
    demo = build_app(engine, store, export_dir=Path(export_dir), batch_root=Path(export_dir).parent,
                     prefetch=False)  # the parent computed the answers: the model never runs here
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=port, auth=make_auth(store), prevent_thread_lock=True,
                quiet=True, allowed_paths=[])
    while True:
        time.sleep(3600)


@pytest.mark.parametrize("store_kind", ["postgresql"])
def test_four_consoles_lose_nothing_and_export_each_review_once(db_url, tmp_path, tiny_engine):
    stress = _stress()
    ports = [stress._free_port() for _ in range(CONSOLES)]
    fork = multiprocessing.get_context("fork")
    exports = str(tmp_path / "exports")
    procs = [fork.Process(target=_serve, args=(tiny_engine, db_url, p, exports), daemon=True) for p in ports]
    for proc in procs:
        proc.start()
    auth = stress.add_ops_user(db_url)
    consoles = stress.Consoles([f"http://127.0.0.1:{p}/" for p in ports], auth, procs)
    try:
        stress.wait_for_consoles(consoles, ports, time.monotonic() + 120, tmp_path)
        reviewers = stress.add_reviewers(db_url, CLIENTS)
        store = open_store(db_url)  # the case's model answers computed here, once
        pk = store.write(lambda s: add_case(s, parse_case(tiny_cases()[0]), "batch", auth[0]).id)
        compare_case(store, tiny_engine, pk, auth[0])
        tally, tag = stress.Tally(), secrets.token_hex(4)
        sent = stress.run_reviews(consoles.urls, reviewers, tiny_cases()[0]["case_id"], REVIEWS_PER_CLIENT,
                                  tally, float("inf"), tag)
        rows, distinct, audited = stress.stored_reviews(db_url, tag)  # counted in the database
        assert tally.review_errors == []
        assert sent == rows == distinct == audited == CLIENTS * REVIEWS_PER_CLIENT  # 0 lost, 0 twice

        seeded = stress.seed_corrections(db_url, tiny_cases()[1:9], auth[0])
        results = stress.run_exports(consoles.urls[:2], auth, 2)  # at once, through two consoles
        assert stress.check_exports(results, seeded) == (len(seeded), 0, 0, [])
    finally:
        consoles.stop()
