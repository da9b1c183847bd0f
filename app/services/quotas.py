"""Per-user write quotas (issue 17, finding 1): a token bucket per (user, kind of write).

With a store the buckets are rows of it (``quota_buckets``), read and spent in one write transaction,
so several consoles over one store (the team set-up) draw on one bucket per user; without one (a
single console, or tests) they live in the process. A retry sent with an idempotency key spends
nothing (the caller checks the key first). A refusal names the limit and says when to retry:
``quota: at most 30 reviews per minute per user; try again in 2 s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db.quotas import get_bucket, put_bucket

if TYPE_CHECKING:
    from db.store import Store

REVIEWS_PER_MINUTE = 30  # a reviewer reads a case before judging it: 2 s a review is already fast
CASES_PER_MINUTE = 30  # cases sent to /compare (each may cost two model answers)
BATCHES_PER_HOUR = 6  # batch runs started (each may hold thousands of cases)


class QuotaExceeded(ValueError):
    """A write over its user's quota; the message starts with ``quota:`` and names the limit."""


@dataclass(frozen=True)
class Limit:
    """``count`` writes of one kind per ``per_s`` seconds per user; ``noun`` names them in messages."""

    noun: str
    count: int
    per_s: float

    def describe(self) -> str:
        unit = {60.0: "minute", 3600.0: "hour"}.get(float(self.per_s), f"{self.per_s:g} s")
        return f"at most {self.count} {self.noun} per {unit} per user"


DEFAULT_LIMITS: dict[str, Limit] = {
    "review": Limit("reviews", REVIEWS_PER_MINUTE, 60.0),
    "case": Limit("compares", CASES_PER_MINUTE, 60.0),
    "batch": Limit("batch runs", BATCHES_PER_HOUR, 3600.0),
}


@dataclass
class Quotas:
    """Token buckets: each (user, kind) holds up to ``count`` tokens, refilled at count/per_s a second.

    ``store``: keep the buckets in the store, shared by every console over it (``clock`` must then
    be a wall clock, as the default is); None keeps them in this process."""

    limits: dict[str, Limit] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    clock: Callable[[], float] = time.time
    store: Store | None = None
    _buckets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # tokens, at
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, user: str, kind: str) -> None:
        """Spend one token of ``user``'s ``kind`` bucket, or raise :class:`QuotaExceeded`."""
        limit = self.limits.get(kind)
        if limit is None:
            return
        if self.store is None:
            with self._lock:
                self._buckets[(user, kind)] = self._spend(limit, self._buckets.get((user, kind)))
            return

        def spend(session: Any) -> None:
            put_bucket(session, user, kind, *self._spend(limit, get_bucket(session, user, kind)))

        self.store.write(spend)  # a refusal raises inside: nothing is written

    def _spend(self, limit: Limit, bucket: tuple[float, float] | None) -> tuple[float, float]:
        """The bucket after one token is spent, or :class:`QuotaExceeded` when none is left."""
        rate = limit.count / limit.per_s
        now = self.clock()
        tokens, at = bucket or (float(limit.count), now)
        tokens = min(float(limit.count), tokens + max(now - at, 0.0) * rate)
        if tokens < 1.0:
            raise QuotaExceeded(f"quota: {limit.describe()}; try again in {(1.0 - tokens) / rate:.0f} s")
        return tokens - 1.0, now
