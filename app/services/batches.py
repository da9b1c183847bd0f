"""Batch runs as background jobs (issue 17, finding 10): chunked, saved as they go, cancellable,
and sharing the engine fairly with interactive compares.

A batch stores its cases first, then answers them CHUNK_CASES at a time; each chunk's answers are
written as soon as it is done (a killed console loses at most one chunk). Between chunks the job
yields the engine to any interactive call waiting for it (:data:`app.services.answers.ENGINE`), so
a reviewer's compare waits at most one chunk, and checks its cancel flag.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.services.answers import ENGINE, cached_runs, compared_variants, remember_versions
from db.cases import add_case, save_run
from db.store import Store
from policies import Case

CHUNK_CASES = 8  # cases per engine turn: one chunk is the longest an interactive compare waits
_ids = itertools.count(1)


@dataclass
class BatchJob:
    """One batch run in the background; read ``done``/``total``/``status`` for progress."""

    job_id: int
    actor: str
    total: int
    case_pks: list[int] = field(default_factory=list)
    done: int = 0
    status: str = "running"  # running / succeeded / cancelled / failed
    error: str | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def cancel(self) -> None:
        """Stop after the chunk being answered (its answers are saved)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (True) or ``timeout`` passes (False)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status != "running"

    def summary(self) -> str:
        return f"batch {self.job_id}: {self.status}, {self.done} of {self.total} cases answered" + (
            f" ({self.error})" if self.error else ""
        )


def start_batch(
    store: Store, engine: Any, cases: Sequence[Case], actor: str, chunk: int = CHUNK_CASES
) -> BatchJob:
    """Store ``cases`` (source ``batch``) and answer them in a background thread; returns the job."""
    pks = store.write(lambda s: [add_case(s, c, "batch", actor).id or 0 for c in cases])
    job = BatchJob(next(_ids), actor, len(cases), pks)
    job._thread = threading.Thread(
        target=_run, args=(job, store, engine, list(zip(pks, cases, strict=True)), chunk),
        name=f"batch-{job.job_id}", daemon=True,
    )
    job._thread.start()
    return job


def _run(job: BatchJob, store: Store, engine: Any, todo: list[tuple[int, Case]], chunk: int) -> None:
    try:
        for start in range(0, len(todo), chunk):
            if job._cancel.is_set():
                job.status = "cancelled"
                return
            part = [(pk, c) for pk, c in todo[start:start + chunk] if cached_runs(store, engine, pk) is None]
            if part:
                with ENGINE.batch_turn():  # waits while interactive calls want the engine
                    results = engine.compare_many([c for _, c in part], variants=compared_variants(engine))
                    remember_versions(engine, results[0] if results else {})
                    store.write(lambda s, part=part, results=results: [
                        save_run(s, pk, a, job.actor)
                        for (pk, _), answers in zip(part, results, strict=True) for a in answers.values()
                    ])
            job.done = min(job.total, start + chunk)
        job.status = "succeeded"
    except Exception as exc:  # noqa: BLE001 - the job reports its failure instead of dying silently
        job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"[:300]
