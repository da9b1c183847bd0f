"""Moving through the queue case by case, and answering the next case before the reviewer gets there.

:func:`neighbour_case` is what ``j`` / ``k`` open. :class:`Prefetcher` answers the next case in a
background thread through :func:`app.services.answers.compare_case`, which serves cached runs and computes
each (case, model version) at most once (its engine lock re-checks the cache), so a prefetch and
a reviewer opening the same case never run the models twice.
"""

from __future__ import annotations

import threading
from typing import Any

from app.services.answers import compare_case, engine_versions
from app.services.queue import QueueFilter, queue_rows
from db.models import DONE_STATUSES
from db.store import Store


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
