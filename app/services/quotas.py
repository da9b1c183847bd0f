"""Per-user write quotas (issue 17, finding 1): a token bucket per (user, kind of write), in process.

Counting stored rows would also cover several console processes, but costs a query per write and
cannot tell a review from its retry; one console process serves the store (the engine is in its
memory), so an in-process bucket is enough and costs nothing. A refusal names the limit and says
when to retry: ``quota: at most 30 reviews per minute per user; try again in 2 s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    """Token buckets: each (user, kind) holds up to ``count`` tokens, refilled at count/per_s a second."""

    limits: dict[str, Limit] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # tokens, at
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, user: str, kind: str) -> None:
        """Spend one token of ``user``'s ``kind`` bucket, or raise :class:`QuotaExceeded`."""
        limit = self.limits.get(kind)
        if limit is None:
            return
        rate = limit.count / limit.per_s
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get((user, kind), (float(limit.count), now))
            tokens = min(float(limit.count), tokens + (now - at) * rate)
            if tokens < 1.0:
                wait = (1.0 - tokens) / rate
                self._buckets[(user, kind)] = (tokens, now)
                raise QuotaExceeded(f"quota: {limit.describe()}; try again in {wait:.0f} s")
            self._buckets[(user, kind)] = (tokens - 1.0, now)
