"""Next/previous in queue order, and the background answer for the next case (never computed twice)."""

from __future__ import annotations

import threading
import time
from collections import Counter

from app.services.answers import ENGINE, compare_case, engine_versions
from app.services.navigation import BackgroundAnswers, Prefetcher, neighbour_case, next_unanswered
from app.services.queue import QueueFilter, queue_rows
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


def _wait_for(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_idle_console_answers_pending_cases_in_the_background(store):
    """Issue 18: while nobody asks, pending cases get their answers (queue order, each once), so the
    queue's presets are filled before a case is opened; an interactive call keeps the engine first;
    stop() ends the thread."""
    engine = CountingEngine()
    with store.session() as s:
        pks = [add_case(s, make_case(f"C-60000{i}"), "batch", "otto").id for i in range(4)]
    compare_case(store, engine, pks[0], "rita")  # answered already: never again
    background = BackgroundAnswers(store, engine, idle_s=0.05)
    with ENGINE.interactive():  # a reviewer's compare holds the engine: the background waits
        background.start()
        time.sleep(0.3)
        assert background.done == [] and sum(engine.calls.values()) == 1
    assert _wait_for(lambda: len(background.done) == 3)
    assert sorted(background.done) == sorted(pks[1:]) and max(engine.calls.values()) == 1
    assert next_unanswered(store, engine) is None
    with store.session() as s:
        rows = queue_rows(s, QueueFilter(preset="agreed_clean"), engine_versions(engine))
    assert {r.case_pk for r in rows} <= set(pks)  # every case has both answers: the preset can judge it
    assert all(len(r.decisions) == 2 for r in rows)
    background.stop(timeout_s=5)
    assert not background.running


def test_background_answers_stay_off_unless_started(store):
    engine = CountingEngine()
    with store.session() as s:
        add_case(s, make_case("C-610000"), "batch", "otto")
    background = BackgroundAnswers(store, engine, idle_s=0.0)
    time.sleep(0.2)
    assert not background.running and engine.calls == Counter()
    background.stop()  # stopping a thread never started is harmless
