"""Issue 17, finding 10: a batch run is a background job: chunked, saved as it goes, cancellable,
and an interactive compare waits at most one chunk for the engine. Batch runs live in the store: a
restarted console resumes its unfinished run (answering only what is left), another console takes
over only a run gone silent, and a cancel from any console stops it."""

from __future__ import annotations

import threading
import time

import pytest
from sqlmodel import select

from app.services.answers import compare_case
from app.services.batches import cancel_batches, latest_batches, resume_stale_batches, start_batch, summary
from db.audit import audit_entries
from db.batches import finish_batch_run, report_progress
from db.cases import add_case
from db.models import ModelRun
from engine.types import ModelAnswer
from policies import parse_case
from tests.conftest import tiny_cases

CHUNK_S = 0.3  # the fake engine's time per chunk
# a killed console is played by a worker thread ended with SystemExit, which pytest reports
KILLED = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


class SlowEngine:
    """Answers like the real engine's compare / compare_many, taking CHUNK_S per call."""

    variants = ("base", "finetuned")

    def __init__(self, die_after: int | None = None, block_after: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.die_after = die_after  # calls answered before the console is killed (its worker ends silently)
        self.block_after = block_after  # calls answered before the engine stalls until released
        self.release = threading.Event()

    def model_version(self, variant: str) -> str:
        return f"{variant}-v1"

    def _answer(self, case, variant):
        return ModelAnswer(
            case.case_id, variant, f"{variant}-v1", "invalid", "", None, "fake", 0.0, 1, 1, False
        )

    def compare_many(self, cases, variants, progress=None):
        assert self.lock.acquire(blocking=False), "two engine calls at once"
        try:
            if self.die_after is not None and len(self.calls) >= self.die_after:
                raise SystemExit  # the worker's thread ends, its run left running: a killed process
            if self.block_after is not None and len(self.calls) >= self.block_after:
                self.release.wait(30)
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


def _until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.both_stores
def test_batch_saves_chunk_by_chunk_and_can_be_cancelled(store):
    engine = SlowEngine()
    job = start_batch(store, engine, _cases(40), "otto", source="data/b.jsonl", chunk=4)
    time.sleep(CHUNK_S * 2.5)
    assert 0 < _stored_runs(store) < 80  # answers are saved as chunks finish, not at the end
    job.cancel()
    assert job.wait(5) and job.row().status == "cancelled"
    saved = _stored_runs(store)
    assert saved % 8 == 0 and saved < 80 and job.row().done == saved // 2
    time.sleep(CHUNK_S * 2)
    assert _stored_runs(store) == saved  # nothing more after the cancel
    run = latest_batches(store, "otto")[0]
    assert (run.id, run.source, run.total) == (job.run_id, "data/b.jsonl", 40)
    assert summary(run) == f"batch {run.id}: cancelled, {run.done} of 40 cases answered"


@KILLED
@pytest.mark.both_stores
def test_a_restarted_console_resumes_its_batch_and_answers_only_what_is_left(store):
    killed = SlowEngine(die_after=1)  # answers one chunk, then its console is killed
    first = start_batch(store, killed, _cases(12, offset=200), "otto", console="host:7860", chunk=4)
    assert first.wait(10)
    assert (first.row().status, first.row().done, _stored_runs(store)) == ("running", 4, 8)

    # another console (another address) leaves a run alone until it has been silent BATCH_STALE_S
    assert resume_stale_batches(store, SlowEngine(), console="host:7861", chunk=4) == []
    # the live process itself (its Batch tab opened) never takes over its own runs
    assert resume_stale_batches(store, SlowEngine(), console="host:7860", chunk=4) == []

    restarted = SlowEngine()  # the console's next process, on the same address: at once
    [job] = resume_stale_batches(store, restarted, console="host:7860", chunk=4, process="restarted")
    assert job.run_id == first.run_id and job.wait(10)
    run = job.row()
    assert (run.status, run.done, run.resumes) == ("succeeded", 12, 1)
    assert restarted.calls == [("batch", 4), ("batch", 4)]  # the 8 cases left, not the first chunk again
    assert _stored_runs(store) == 24
    assert "resumed once after a console stopped" in summary(run)
    with store.session() as s:
        actions = [e.action for e in audit_entries(s, entity="batch_run")]
    assert actions == ["batch_start", "batch_resume", "batch_succeeded"]


@KILLED
@pytest.mark.both_stores
def test_another_console_takes_over_a_silent_run_and_a_cancel_reaches_any_console(store):
    first = start_batch(store, SlowEngine(die_after=0), _cases(12, offset=300), "otto", console="host:7860",
                        chunk=4)
    assert first.wait(10)
    other = SlowEngine(block_after=1)
    # another console, once the run has been silent stale_s (0 here)
    [job] = resume_stale_batches(store, other, console="host:7861", stale_s=0.0, chunk=4)
    with store.session() as s:  # a stalled first worker that wakes up now finds the run is not its own
        assert report_progress(s, first.run_id, first.owner, 8) == "lost"
        assert not finish_batch_run(s, first.run_id, first.owner, "succeeded")
    _until(lambda: job.row().done == 4 and other.lock.locked())  # the second chunk is under way
    assert cancel_batches(store, "rita", runs_of="otto") == [job.run_id]
    assert "running, 4 of 12 cases answered, stopping after this chunk" in summary(job.row())
    other.release.set()
    assert job.wait(10)
    run = job.row()
    assert (run.status, run.done) == ("cancelled", 8)  # the chunk under way is saved, then it stops
    assert other.calls == [("batch", 4), ("batch", 4)]
    assert _stored_runs(store) == 16
    assert cancel_batches(store, "otto", runs_of="otto") == []  # nothing left running
    with store.session() as s:
        entries = audit_entries(s, entity="batch_run")
    assert [(e.actor, e.action) for e in entries] == [
        ("otto", "batch_start"), ("system", "batch_resume"), ("rita", "batch_cancel"),
        ("otto", "batch_cancelled"),
    ]


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
    assert job.wait(5)
