"""Batch runs as background jobs (issue 17, finding 10): chunked, saved as they go, cancellable,
sharing the engine fairly with interactive compares, and kept in the store.

A batch stores its cases and its row (``db.batches``) first, then answers them CHUNK_CASES at a time;
each chunk's answers are written with the run's progress in one transaction (a killed console loses
at most one chunk). Between chunks the job yields the engine to any interactive call waiting for it
(:data:`app.services.answers.ENGINE`) and reads its row: a cancel asked from any console stops it
there. The worker's heartbeat is that row: when a console stops mid-batch, its next start
(:func:`resume_stale_batches`) takes the run over at once, and any other console after BATCH_STALE_S
without a report; the new worker answers what is left (answers already stored are not computed again).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.services.answers import ENGINE, cached_runs, compared_variants, remember_versions
from db.batches import (
    batch_case_pks,
    claim_stale_runs,
    create_batch_run,
    finish_batch_run,
    get_batch_run,
    recent_batch_runs,
    report_progress,
    request_cancel,
)
from db.cases import add_case, case_of, get_case, save_run
from db.models import BatchRun
from db.store import Store
from policies import Case

CHUNK_CASES = 8  # cases per engine turn: one chunk is the longest an interactive compare waits
# A running batch whose worker has not reported for this long lost its console; a worker reports
# before it waits for the engine and after every chunk, so only a stopped console goes this quiet.
BATCH_STALE_S = 600.0
log = logging.getLogger(__name__)


@dataclass
class BatchJob:
    """This process's worker on one batch run (row ``run_id`` of ``batch_runs``)."""

    run_id: int
    owner: str
    actor: str  # who started the run: its answers are saved as theirs
    store: Store
    _thread: threading.Thread | None = field(default=None, repr=False)

    def row(self) -> BatchRun:
        with self.store.session() as s:
            run = get_batch_run(s, self.run_id)
        assert run is not None, f"batch run {self.run_id} vanished"
        return run

    def cancel(self) -> None:
        """Ask the run to stop after the chunk being answered (its answers are saved), as its owner."""
        self.store.write(lambda s: request_cancel(s, self.actor, None, run_id=self.run_id))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until this worker ends (True) or ``timeout`` passes (False)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()


def summary(run: BatchRun) -> str:
    """One line for the Batch tab: ``batch 3: running, 16 of 40 cases answered (resumed once)``."""
    line = f"batch {run.id}: {run.status}, {run.done} of {run.total} cases answered"
    if run.status == "running" and run.cancel_requested:
        line += ", stopping after this chunk"
    if run.resumes:
        line += f" (resumed {'once' if run.resumes == 1 else f'{run.resumes} times'} after a console stopped)"
    return line + (f" ({run.error})" if run.error else "")


PROCESS = uuid.uuid4().hex[:12]  # this console process, in its workers' owner tokens


def worker_token(console: str, process: str | None = None) -> str:
    """A worker's owner token, ``CONSOLE/PROCESS/RANDOM`` (see :func:`db.batches.claim_stale_runs`)."""
    return f"{console.replace('/', '_')}/{process or PROCESS}/{uuid.uuid4().hex[:12]}"


def start_batch(
    store: Store, engine: Any, cases: Sequence[Case], actor: str, source: str = "", console: str = "console",
    chunk: int = CHUNK_CASES,
) -> BatchJob:
    """Store ``cases`` (source ``batch``) and the run's row, then answer them in a background thread.
    ``console`` names the console process's address (``host:port``), so its next start resumes
    the run at once if it stops mid-batch."""
    owner = worker_token(console)

    def create(s: Any) -> tuple[int, list[int]]:
        pks = [add_case(s, c, "batch", actor).id or 0 for c in cases]
        return create_batch_run(s, actor, source, pks, owner).id or 0, pks

    run_id, pks = store.write(create)
    return _launch(BatchJob(run_id, owner, actor, store), engine, list(zip(pks, cases, strict=True)), chunk)


def resume_stale_batches(store: Store, engine: Any, console: str = "console", stale_s: float = BATCH_STALE_S,
                         chunk: int = CHUNK_CASES, process: str | None = None) -> list[BatchJob]:
    """Take over the batches whose console stopped mid-run (an earlier process of ``console``, or any
    console silent for ``stale_s`` seconds) and answer what they have left. The console calls it on
    start and whenever the Batch tab is opened; returns the resumed jobs."""
    owner = worker_token(console, process)  # tests play a restarted process with ``process``
    runs = store.write(lambda s: [(r.id or 0, r.actor) for r in claim_stale_runs(s, owner, stale_s)])
    jobs = []
    for run_id, actor in runs:
        with store.session() as s:
            todo = [(pk, case_of(get_case(s, pk))) for pk in batch_case_pks(s, run_id)]
        log.info("resuming batch run %d (%d cases; answers already stored are kept)", run_id, len(todo))
        jobs.append(_launch(BatchJob(run_id, owner, actor, store), engine, todo, chunk))
    return jobs


def cancel_batches(store: Store, actor: str, runs_of: str | None) -> list[int]:
    """Ask ``runs_of``'s running batches (everyone's when None: ops) to stop; returns their ids."""
    return store.write(lambda s: request_cancel(s, actor, runs_of))


def latest_batches(store: Store, actor: str | None, limit: int = 5) -> list[BatchRun]:
    """``actor``'s latest batch runs (everyone's when None), newest first."""
    with store.session() as s:
        return recent_batch_runs(s, actor, limit)


def _launch(job: BatchJob, engine: Any, todo: list[tuple[int, Case]], chunk: int) -> BatchJob:
    """Start ``job``'s worker thread over ``todo`` (case row id, case), in file order."""
    job._thread = threading.Thread(target=_run, args=(job, engine, todo, chunk), name=f"batch-{job.run_id}",
                                   daemon=True)
    job._thread.start()
    return job


def _run(job: BatchJob, engine: Any, todo: list[tuple[int, Case]], chunk: int) -> None:
    store, run_id, owner = job.store, job.run_id, job.owner
    try:
        for start in range(0, len(todo), chunk):
            said = store.write(lambda s: report_progress(s, run_id, owner))  # also before a long wait
            if said != "go":
                if said == "cancel":
                    store.write(lambda s: finish_batch_run(s, run_id, owner, "cancelled"))
                return
            part = [(pk, c) for pk, c in todo[start:start + chunk] if cached_runs(store, engine, pk) is None]
            done = min(len(todo), start + chunk)
            if not part:
                store.write(lambda s, done=done: report_progress(s, run_id, owner, done))
                continue
            with ENGINE.batch_turn():  # waits while interactive calls want the engine
                results = engine.compare_many([c for _, c in part], variants=compared_variants(engine))
            remember_versions(engine, results[0] if results else {})

            def save(s: Any, part: list[tuple[int, Case]] = part, results: list[Any] = results,
                     done: int = done) -> str:
                if report_progress(s, run_id, owner, done) == "lost":
                    return "lost"  # another console answers this run now: its answers, not ours
                for (pk, _), answers in zip(part, results, strict=True):
                    for answer in answers.values():
                        save_run(s, pk, answer, job.actor)
                return "saved"

            if store.write(save) == "lost":
                return
        store.write(lambda s: finish_batch_run(s, run_id, owner, "succeeded"))
    except Exception as exc:  # noqa: BLE001 - the job reports its failure instead of dying silently
        error = f"{type(exc).__name__}: {exc}"
        log.warning("batch run %d failed: %s", run_id, error)
        store.write(lambda s: finish_batch_run(s, run_id, owner, "failed", error))
