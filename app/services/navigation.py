"""Moving through the queue case by case, and answering the next case before the reviewer gets there.

:func:`neighbour_case` is what ``j`` / ``k`` open. :class:`Prefetcher` answers the next case in a
background thread through :func:`app.services.answers.compare_case`, which serves cached runs and computes
each (case, model version) at most once (its engine lock re-checks the cache), so a prefetch and
a reviewer opening the same case never run the models twice.

:class:`BackgroundAnswers` does the same for the whole queue while nobody is asking: when the engine
has been idle for a moment it answers the top pending case that has no answer of the current models
yet, one case per turn of the engine gate (:meth:`~app.services.answers.EngineGate.batch_turn`, so an
interactive call waits at most one case). Answers computed ahead fill the queue's columns and its
presets (``agreed_clean`` needs both answers) before anyone opens a case.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from app.services.answers import ENGINE, compare_case, compared_variants, engine_versions
from app.services.queue import QueueFilter, queue_rows
from db.models import DONE_STATUSES
from db.store import Store

log = logging.getLogger(__name__)
IDLE_S = 2.0  # seconds without an interactive engine call before the background answers a case
RECHECK_S = 10.0  # seconds between looks at the queue when every pending case is answered


def neighbour_case(
    store: Store,
    engine: Any,
    current: int | None,
    step: int,
    qfilter: QueueFilter | None = None,
    viewer: str | None = None,
) -> int | None:
    """The case to open after (``step=1``) or before (``step=-1``) ``current`` in queue order.

    Next is the first case after the current one that is not reviewed yet (wrapping round);
    previous is the row just above. With no current case, the top of the queue. None when there is none.
    """
    with store.session() as s:
        rows = queue_rows(s, qfilter or QueueFilter(), engine_versions(engine), viewer)
    pks = [r.case_pk for r in rows]
    if not pks:
        return None
    if current not in pks:
        return pks[0] if step > 0 else pks[-1]
    i = pks.index(current)
    if step < 0:
        return pks[i - 1] if i > 0 else None
    after = rows[i + 1 :] + rows[:i]
    todo = [r.case_pk for r in after if r.status not in DONE_STATUSES]
    return todo[0] if todo else (pks[i + 1] if i + 1 < len(pks) else None)


class Prefetcher:
    """Answers the case after the one being read, one background thread at a time."""

    def __init__(self, store: Store, engine: Any, enabled: bool = True):
        self.store, self.engine, self.enabled = store, engine, enabled
        self._busy: set[int] = set()
        self._lock = threading.Lock()
        self.done: list[int] = []  # case ids prefetched, for tests and benchmarks
        # current case -> the next case chosen (and answered) for it. Answering a case changes its
        # priority, so "next" asked later could pick another case; this keeps j on the prefetched one.
        self.planned: dict[int, int] = {}

    def next_after(self, current: int | None, viewer: str | None) -> int | None:
        """The case to open after ``current``: the one prefetched for it, else the queue's next."""
        if current is not None and current in self.planned:
            return self.planned.pop(current)
        return neighbour_case(self.store, self.engine, current, 1, viewer=viewer)

    def after_open(self, current: int, actor: str) -> threading.Thread | None:
        """Start answering the next case after ``current``; returns the thread (None: nothing to do)."""
        if not self.enabled:
            return None
        thread = threading.Thread(target=self._run, args=(current, actor), daemon=True, name="prefetch")
        thread.start()
        return thread

    def _run(self, current: int, actor: str) -> None:
        nxt = neighbour_case(self.store, self.engine, current, 1, viewer=actor)
        if nxt is None or nxt == current:
            return
        self.planned[current] = nxt
        with self._lock:
            if nxt in self._busy:
                return
            self._busy.add(nxt)
        try:
            compare_case(self.store, self.engine, nxt, actor)
            self.done.append(nxt)
        except Exception:  # noqa: BLE001 - a failed prefetch only means the case is answered on open
            pass
        finally:
            with self._lock:
                self._busy.discard(nxt)


def next_unanswered(store: Store, engine: Any, skip: set[int] | frozenset[int] = frozenset()) -> int | None:
    """The first pending case in queue order without an answer of each of the engine's current
    versions (cases in ``skip`` left out); None when every pending case is answered."""
    versions = engine_versions(engine)
    wanted = set(compared_variants(engine))
    with store.session() as s:
        rows = queue_rows(s, QueueFilter(status="pending"), versions)
    for row in rows:
        if row.case_pk not in skip and not wanted <= set(row.decisions):
            return row.case_pk
    return None


class BackgroundAnswers:
    """Answers pending cases while the console is idle: a daemon thread, stopped by :meth:`stop`.

    Each case goes through :func:`app.services.answers.compare_case` in a background turn of the
    engine gate after ``idle_s`` seconds without an interactive call, so a reviewer's compare never
    waits more than the one case being answered, and nothing is computed twice (the prefetch, an open
    and this thread share the store's cache). A case whose answering fails is not tried again by
    this thread (it is answered, or its error shown, when someone opens it).
    """

    def __init__(self, store: Store, engine: Any, idle_s: float = IDLE_S, actor: str = "background"):
        self.store, self.engine, self.idle_s, self.actor = store, engine, idle_s, actor
        self.done: list[int] = []  # cases answered by this thread, in order (tests, the log)
        self.failed: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        """Start the thread (once); returns it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="background-answers")
            self._thread.start()
        return self._thread

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread and wait for it, at most ``timeout_s`` (a case being answered ends first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while ENGINE.wait_idle(self.idle_s, self._stop):
            try:
                pk = next_unanswered(self.store, self.engine, self.failed)
            except Exception as exc:  # noqa: BLE001 - a store hiccup: look again later
                log.warning("background answers: reading the queue failed: %s", exc)
                pk = None
            if pk is None:
                self._stop.wait(RECHECK_S)
                continue
            try:
                compare_case(self.store, self.engine, pk, self.actor, background=True)
                self.done.append(pk)
            except Exception as exc:  # noqa: BLE001 - the case is answered (or fails visibly) on open
                self.failed.add(pk)
                log.warning("background answers: case #%s failed: %s: %s", pk, type(exc).__name__, exc)
