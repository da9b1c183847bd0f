"""Next/previous in queue order, and the background answer for the next case (never computed twice)."""

from __future__ import annotations

import threading
from collections import Counter

from app.services.answers import compare_case
from app.services.navigation import Prefetcher, neighbour_case
from db.cases import add_case
from tests.conftest import make_answer, make_case


class CountingEngine:
    """A stand-in engine that answers instantly and counts the cases it answered."""

    variants = ["base", "finetuned"]

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def model_version(self, variant: str) -> str:
        return f"{variant}@v1"

    def compare(self, case, variants=("base", "finetuned")):
        with self.lock:
            self.calls[case.case_id] += 1
        return {v: make_answer(case, v, "DENY") for v in variants}


def test_next_case_is_answered_in_background_once(store):
    engine = CountingEngine()
    with store.session() as s:
        pks = [add_case(s, make_case(f"C-50000{i}"), "batch", "otto").id for i in range(3)]
    first = neighbour_case(store, engine, None, 1)
    compare_case(store, engine, first, "rita")
    prefetch = Prefetcher(store, engine)
    thread = prefetch.after_open(first, "rita")
    thread.join(timeout=30)
    nxt = prefetch.next_after(first, "rita")  # the case prefetched for ``first``
    assert nxt != first and prefetch.done == [nxt]
    before = sum(engine.calls.values())
    compare_case(store, engine, nxt, "rita")  # served from the store
    assert sum(engine.calls.values()) == before
    # a prefetch racing the reviewer's own open still answers the case once
    third = next(pk for pk in pks if pk not in (first, nxt))
    racers = [threading.Thread(target=compare_case, args=(store, engine, third, "rita")) for _ in range(3)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(timeout=30)
    assert max(engine.calls.values()) == 1
    assert neighbour_case(store, engine, nxt, -1) in pks
    assert Prefetcher(store, engine, enabled=False).after_open(first, "rita") is None
