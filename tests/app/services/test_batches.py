"""Issue 17, finding 10: a batch run is a background job: chunked, saved as it goes, cancellable,
and an interactive compare waits at most one chunk for the engine."""

from __future__ import annotations

import threading
import time

from sqlmodel import select

from app.services.answers import compare_case
from app.services.batches import start_batch
from db.cases import add_case
from db.models import ModelRun
from engine.types import ModelAnswer
from policies import parse_case
from tests.conftest import tiny_cases

CHUNK_S = 0.3  # the fake engine's time per chunk


class SlowEngine:
    """Answers like the real engine's compare / compare_many, taking CHUNK_S per call."""

    variants = ("base", "finetuned")

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def model_version(self, variant: str) -> str:
        return f"{variant}-v1"

    def _answer(self, case, variant):
        return ModelAnswer(
            case.case_id, variant, f"{variant}-v1", "invalid", "", None, "fake", 0.0, 1, 1, False
        )

    def compare_many(self, cases, variants, progress=None):
        assert self.lock.acquire(blocking=False), "two engine calls at once"
        try:
            time.sleep(CHUNK_S)
            self.calls.append(("batch", len(cases)))
            return [{v: self._answer(c, v) for v in variants} for c in cases]
        finally:
            self.lock.release()

    def compare(self, case, variants):
        return self.compare_many([case], variants)[0]


def _cases(n: int, offset: int = 0):
    base = tiny_cases()[0]
    return [parse_case({**base, "case_id": f"B-{offset + i:05d}"}) for i in range(n)]


def _stored_runs(store) -> int:
    with store.session() as s:
        return len(s.exec(select(ModelRun)).all())


def test_batch_saves_chunk_by_chunk_and_can_be_cancelled(store):
    engine = SlowEngine()
    job = start_batch(store, engine, _cases(40), "otto", chunk=4)
    time.sleep(CHUNK_S * 2.5)
    assert 0 < _stored_runs(store) < 80  # answers are saved as chunks finish, not at the end
    job.cancel()
    assert job.wait(5) and job.status == "cancelled"
    saved = _stored_runs(store)
    assert saved % 8 == 0 and saved < 80 and job.done == saved // 2
    time.sleep(CHUNK_S * 2)
    assert _stored_runs(store) == saved  # nothing more after the cancel


def test_interactive_compare_waits_at_most_one_chunk(store):
    engine = SlowEngine()
    with store.session() as s:
        pk = add_case(s, parse_case(tiny_cases()[1]), "try", "rita").id
    job = start_batch(store, engine, _cases(40, offset=100), "otto", chunk=4)
    time.sleep(CHUNK_S * 1.5)  # a chunk is running
    started = time.perf_counter()
    runs = compare_case(store, engine, pk, "rita")
    waited = time.perf_counter() - started
    assert set(runs) == {"base", "finetuned"}
    assert waited < CHUNK_S * 2 + 0.3, waited  # the chunk running, then its own call
    job.cancel()
    job.wait(5)
