"""Signing in (issue 17, finding 6): throttling, lockout and an audit entry around every attempt.

:func:`login` is what the console's ``launch(auth=...)`` callable runs. The policy:

- a user name is locked after :data:`MAX_FAILURES` consecutive failed logins, for
  ``LOCK_BASE_S * 2 ** (failures - MAX_FAILURES)`` seconds (30 s, 60 s, 2 min, ... capped at
  :data:`MAX_LOCK_S`, 15 min); while locked even the right password is refused, and the refusal
  costs no password check. A successful login resets the user name's counter. Unknown user names
  are counted and locked like real ones;
- a client address (when known, see :class:`ClientAddressMiddleware`) is locked the same way after
  :data:`ADDRESS_MAX_FAILURES` failures across all user names (password spraying); its counter is
  not reset by a success (an attacker's own account would reset it), it is forgotten after
  :data:`ADDRESS_FORGET_S` without a failure;
- when the address is not known, failures are also rate-limited per process: after
  :data:`PROCESS_MAX_FAILURES` failed logins within :data:`PROCESS_WINDOW_S`, every login is refused
  until the window has room again (:class:`ProcessRate`);
- every failure is audited (``login_failed``), every refusal of a locked or throttled login too
  (``login_locked``), a success as ``login``; the actor is the attempted user name, made printable
  and cut to :data:`ACTOR_CHARS` characters; no password is ever written anywhere.

The counters live in the store (``login_attempts``, :mod:`db.users`), so a restart does not clear
them. Locks are refusals, never sleeps: Gradio runs the auth callable on its event loop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from db.audit import audit
from db.models import utcnow
from db.store import Store
from db.users import authenticate, clear_login_failures, login_attempt, save_login_failure

log = logging.getLogger("policyops.requests")  # one line per refused request (app.ui.errors)
LOGIN_REFUSALS = {"wrong": "wrong user name or password", "locked": "locked out",
                  "throttled": "too many failures from this process"}

MAX_FAILURES = 5  # consecutive failures of one user name before it is locked
ADDRESS_MAX_FAILURES = 20  # failures from one client address (any user names) before it is locked
LOCK_BASE_S = 30.0  # the first lock; each further failure doubles it
MAX_LOCK_S = 15 * 60.0  # no lock is longer
ADDRESS_FORGET_S = 60 * 60.0  # an address's counter is forgotten after this long without a failure
PROCESS_MAX_FAILURES = 30  # address unknown: failed logins per window, per process, before throttling
PROCESS_WINDOW_S = 60.0
ACTOR_CHARS = 64  # the attempted user name in the audit log and the counters is cut to this

Clock = Callable[[], datetime]

# The client address of the HTTP request being served, set by ClientAddressMiddleware.
CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("policyops_client_address", default=None)


@dataclass(frozen=True)
class LoginResult:
    """What :func:`login` decided. ``outcome``: ok, wrong (bad user name or password), locked (the
    user name or address is locked out) or throttled (too many failures in this process)."""

    ok: bool
    username: str
    outcome: str
    role: str | None = None
    failures: int = 0  # the user name's consecutive failures after this attempt
    retry_after_s: float = 0.0  # locked/throttled, or a failure that started a lock: seconds to wait


def lock_seconds(failures: int, threshold: int = MAX_FAILURES) -> float:
    """How long ``failures`` consecutive failures lock a user name (or address): 0 below the threshold."""
    if failures < threshold:
        return 0.0
    return min(LOCK_BASE_S * 2.0 ** min(failures - threshold, 32), MAX_LOCK_S)


def safe_actor(username: str) -> str:
    """The attempted user name as it may appear in the audit log: printable, at most ACTOR_CHARS."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in username.strip())[:ACTOR_CHARS]
    return cleaned or "anonymous"


def _aware(at: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; they were written as UTC."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


class ProcessRate:
    """Failed logins of this process in a sliding window; used when the client address is unknown,
    so that guesses spread over many user names are slowed down too. Thread-safe."""

    def __init__(self, max_failures: int = PROCESS_MAX_FAILURES, window_s: float = PROCESS_WINDOW_S):
        self.max_failures, self.window_s = max_failures, window_s
        self._failures: deque[datetime] = deque()
        self._lock = threading.Lock()

    def _trim(self, now: datetime) -> None:
        while self._failures and (now - self._failures[0]).total_seconds() >= self.window_s:
            self._failures.popleft()

    def wait_s(self, now: datetime) -> float:
        """0 when a login may be tried now, else the seconds until the window has room."""
        with self._lock:
            self._trim(now)
            if len(self._failures) < self.max_failures:
                return 0.0
            return max(self.window_s - (now - self._failures[0]).total_seconds(), 0.001)

    def failed(self, now: datetime) -> None:
        with self._lock:
            self._trim(now)
            self._failures.append(now)


def _subjects(name: str, address: str | None) -> list[tuple[str, str]]:
    subjects = [("user", name)]
    if address:
        subjects.append(("address", address[:ACTOR_CHARS]))
    return subjects


def _locked_for(session: Session, subjects: list[tuple[str, str]], now: datetime) -> tuple[str, float] | None:
    """(kind, seconds left) of the longest lock on any of ``subjects`` at ``now``, or None."""
    longest: tuple[str, float] | None = None
    for kind, subject in subjects:
        row = login_attempt(session, kind, subject)
        until = _aware(row.locked_until) if row is not None else None
        if until is not None and until > now:
            left = (until - now).total_seconds()
            if longest is None or left > longest[1]:
                longest = (kind, left)
    return longest


def _refuse(
    store: Store, actor: str, address: str | None, outcome: str, kind: str, wait: float, failures: int = 0
) -> LoginResult:
    def write(s: Session) -> None:
        audit(s, actor, "login_locked", "user", actor, None,
              {"address": address, "locked": kind, "retry_after_s": round(wait, 3)})

    store.write(write)
    return LoginResult(False, actor, outcome, failures=failures, retry_after_s=wait)


def login(
    store: Store,
    username: str,
    password: str,
    address: str | None = None,
    *,
    clock: Clock | None = None,
    rate: ProcessRate | None = None,
) -> LoginResult:
    """Check ``username``/``password`` under the throttling policy (see the module doc) and audit it.

    ``address``: the client's address, when the caller knows it. ``clock``: returns the current UTC
    time (tests inject one). ``rate``: the per-process failure window, applied when ``address`` is
    None. A refused login also leaves one line in the log (the user name as audited, never the
    password), like every other refused request.
    """
    result = _login(store, username, password, address, clock=clock, rate=rate)
    if not result.ok:
        wait = f", retry after {result.retry_after_s:.0f} s" if result.retry_after_s else ""
        log.info("request refused at login for %r from %s: %s%s", result.username,
                 address or "an unknown address", LOGIN_REFUSALS.get(result.outcome, result.outcome), wait)
    return result


def _login(
    store: Store,
    username: str,
    password: str,
    address: str | None,
    *,
    clock: Clock | None,
    rate: ProcessRate | None,
) -> LoginResult:
    now = (clock or utcnow)()
    name = safe_actor(username)  # the counters' key and the audit actor
    subjects = _subjects(name, address)

    # Refusals that need no password check: a process-wide flood, or a lock on the name or address.
    if rate is not None and address is None:
        wait = rate.wait_s(now)
        if wait:
            return _refuse(store, name, address, "throttled", "process", wait)
    with store.session() as s:
        locked = _locked_for(s, subjects, now)
    if locked:
        return _refuse(store, name, address, "locked", *locked)

    with store.session() as s:  # the slow part (scrypt, also for unknown names), outside any write lock
        user = authenticate(s, username, password)
    role = user.role if user is not None else None

    def record(s: Session) -> LoginResult:
        # Checked again in the write transaction: attempts that raced past the check above while the
        # last allowed failure was being counted are refused now, whatever their password.
        again = _locked_for(s, subjects, now)
        if again:
            kind, wait = again
            audit(s, name, "login_locked", "user", name, None,
                  {"address": address, "locked": kind, "retry_after_s": round(wait, 3)})
            return LoginResult(False, name, "locked", retry_after_s=wait)
        if user is not None:
            clear_login_failures(s, "user", name)
            audit(s, name, "login", "user", name, None, {"address": address})
            return LoginResult(True, name, "ok", role=role)
        counts: dict[str, int] = {}
        wait = 0.0
        for kind, subject in subjects:
            row = login_attempt(s, kind, subject)
            last = _aware(row.last_failure_at) if row is not None else None
            stale = kind == "address" and last is not None and (now - last).total_seconds() > ADDRESS_FORGET_S
            failures = 1 if row is None or stale else row.failures + 1
            seconds = lock_seconds(failures, MAX_FAILURES if kind == "user" else ADDRESS_MAX_FAILURES)
            until = now + timedelta(seconds=seconds) if seconds else None
            save_login_failure(s, kind, subject, failures, now, until)
            counts[kind], wait = failures, max(wait, seconds)
        audit(s, name, "login_failed", "user", name, None,
              {"address": address, "failures": counts["user"], "address_failures": counts.get("address"),
               "locked_for_s": wait})
        return LoginResult(False, name, "wrong", failures=counts["user"], retry_after_s=wait)

    result = store.write(record)
    if not result.ok and result.outcome == "wrong" and rate is not None and address is None:
        rate.failed(now)
    return result


class ClientAddressMiddleware:
    """Pure ASGI middleware: makes each HTTP request's client address visible to :func:`login`.

    Gradio calls the ``auth=`` callable with the user name and password only, from inside its
    ``/login`` route; that route runs in the request's task, so the context variable set here is
    what the callable reads (:data:`CLIENT_ADDRESS`). Install it with
    ``launch(app_kwargs={"middleware": [starlette.middleware.Middleware(ClientAddressMiddleware)]})``.
    The address is what uvicorn reports (behind a proxy on 127.0.0.1: the X-Forwarded-For client).
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        token = CLIENT_ADDRESS.set(str(client[0]) if client else None)
        try:
            await self.app(scope, receive, send)
        finally:
            CLIENT_ADDRESS.reset(token)
