"""Batching concurrent requests: one worker thread runs the model; requests that wait together and
decode alike (same variant, grammar and settings) go through ``generate`` as one left-padded batch.

``engine.serve`` answers each HTTP request on its own thread; without this, eight concurrent
requests would run as eight batches of one, one after another. Waiting ``wait_s`` (a few ms) for
company costs little beside a generation and lets a GPU fill its batch.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from engine.backends.base import Generation, GenerationSettings

MAX_BATCH = 8  # prompts per generate call
WAIT_S = 0.02  # seconds the worker waits for more requests before it runs a batch that is not full


@dataclass
class Job:
    """One prompt to complete; ``future`` receives its :class:`Generation` or the batch's exception."""

    prompt: str
    variant: str
    constrained: bool
    settings: GenerationSettings
    grammar: Any = None  # engine.constrained.AnswerGrammar, or None: the backend's answer grammar
    future: Future[Generation] = field(default_factory=Future)

    @property
    def key(self) -> tuple[Any, ...]:
        """Jobs with equal keys may share a batch."""
        return (self.variant, self.constrained, id(self.grammar), self.settings)


class Batcher:
    """Runs :class:`Job` s on ``backend`` (a LocalPeftBackend) from one daemon thread, batched by key."""

    def __init__(self, backend: Any, max_batch: int = MAX_BATCH, wait_s: float = WAIT_S):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.backend, self.max_batch, self.wait_s = backend, max_batch, wait_s
        self.pending: deque[Job] = deque()
        self.cond = threading.Condition()
        self.batches = 0  # generate calls made (tests and logs read it)
        self.worker = threading.Thread(target=self._loop, name="engine-batcher", daemon=True)
        self.worker.start()

    def submit(self, job: Job) -> Future[Generation]:
        with self.cond:
            self.pending.append(job)
            self.cond.notify_all()
        return job.future

    def _next_batch(self) -> list[Job]:
        with self.cond:
            self.cond.wait_for(lambda: bool(self.pending))
            self.cond.wait_for(lambda: len(self.pending) >= self.max_batch, timeout=self.wait_s)
            key = self.pending[0].key
            batch = [j for j in self.pending if j.key == key][: self.max_batch]
            for job in batch:
                self.pending.remove(job)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            batch = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            first = batch[0]
            try:
                prompts = [j.prompt for j in batch]
                generations = self.backend.generate(prompts, first.variant, first.constrained, first.settings,
                                                    grammar=first.grammar)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
                for job in batch:
                    job.future.set_exception(exc)
                continue
            self.batches += 1
            for job, generation in zip(batch, generations, strict=True):
                job.future.set_result(generation)
