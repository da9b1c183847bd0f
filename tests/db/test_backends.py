"""What must behave the same on SQLite and PostgreSQL: NUL refused, the write lock (exports one at a
time), and the write retry on transient conflicts (locked / serialization failure / deadlock)."""

from __future__ import annotations

import sqlite3
import threading
import time

import psycopg.errors
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, StatementError

import db.store as store_mod
from db.models import NOTE_MAX_CHARS, USERNAME_MAX_CHARS, AuditEntry, TextTooLong, User
from db.reviews import add_review
from db.store import is_locked_error
from db.users import create_user
from tests.conftest import case_with_runs


def test_text_with_nul_is_refused(store):
    pk, _ = case_with_runs(store)
    with pytest.raises(StatementError, match="NUL"):
        store.write(lambda s: add_review(s, pk, "flagged_ambiguous", "rita", note="nul\x00byte"))
    with store.session() as s:  # nothing of the refused unit of work was kept
        assert s.exec(text("SELECT count(*) FROM reviews")).one()[0] == 0


def test_text_over_the_schema_limit_is_refused(store):
    pk, _ = case_with_runs(store)
    with pytest.raises(TextTooLong, match=f"reviews.note: .* at most {NOTE_MAX_CHARS}"):
        store.write(lambda s: add_review(s, pk, "flagged_ambiguous", "rita", note="x" * (NOTE_MAX_CHARS + 1)))
    with pytest.raises(TextTooLong, match=f"users.username: .* at most {USERNAME_MAX_CHARS}"):
        store.write(lambda s: create_user(s, "u" * (USERNAME_MAX_CHARS + 1), "agent", "long-enough-pw-1"))
    with store.session() as s:  # a lookup with a longer value finds nothing
        assert s.get(User, "u" * (USERNAME_MAX_CHARS + 1)) is None
    store.write(lambda s: add_review(s, pk, "flagged_ambiguous", "rita", note="x" * NOTE_MAX_CHARS))


def test_audit_log_refuses_update_and_delete(store):
    case_with_runs(store)
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), store.session() as s:
            s.exec(text(statement))
    with store.session() as s:
        assert s.get(AuditEntry, 1).actor != "mallory"


def test_write_lock_serialises_units_of_work(store):
    """Two immediate sessions (what an export holds) never overlap: the second waits for the first."""
    spans: list[tuple[str, float, float]] = []

    def hold(name: str, seconds: float) -> None:
        with store.session(immediate=True) as s:
            s.exec(text("SELECT count(*) FROM users")).one()  # the transaction (and its lock) begins here
            start = time.monotonic()
            time.sleep(seconds)
            spans.append((name, start, time.monotonic()))

    first = threading.Thread(target=hold, args=("first", 0.6))
    first.start()
    time.sleep(0.2)
    hold("second", 0.0)
    first.join()
    (_, _, first_end), (_, second_start, _) = sorted(spans, key=lambda x: x[1])
    assert second_start >= first_end - 0.01


def test_exclusive_spans_commits(store):
    """What an export holds from choosing its reviews to publishing its files, across processes
    (PostgreSQL: an advisory lock; SQLite: a file lock beside the database)."""
    order: list[str] = []

    def other() -> None:
        with store.exclusive("export"):
            order.append("other")

    with store.exclusive("export"):
        waiting = threading.Thread(target=other)
        waiting.start()
        time.sleep(0.5)
        with store.session() as s:  # commits inside the block do not let the other in
            s.exec(text("SELECT 1"))
        order.append("first")
    waiting.join(timeout=30)
    assert order == ["first", "other"]


@pytest.mark.parametrize("orig", [
    sqlite3.OperationalError("database is locked"),
    psycopg.errors.SerializationFailure("could not serialize access due to concurrent update"),
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
])
def test_write_retries_transient_conflicts(store, monkeypatch, orig):
    monkeypatch.setattr(store_mod, "BACKOFF_S", 0.001)
    tries: list[int] = []

    def flaky(session) -> str:
        tries.append(1)
        if len(tries) < 3:
            raise OperationalError("UPDATE", {}, orig)
        return "done"

    assert is_locked_error(OperationalError("x", {}, orig))
    assert store.write(flaky) == "done" and len(tries) == 3
    assert not is_locked_error(OperationalError("x", {}, psycopg.errors.UndefinedTable("no such table")))


class WithoutWriteLock(store_mod.Store):
    """Plain transactions (row locks only), so two units of work can deadlock."""

    def session(self, immediate: bool = False):  # type: ignore[override]
        return super().session(immediate=False)


def test_real_deadlock_is_retried(store, store_kind, monkeypatch):
    """Two units of work update two rows in opposite orders: PostgreSQL aborts one, Store.write reruns it."""
    if store_kind != "postgresql":
        pytest.skip("SQLite has one writer at a time: no row locks, no deadlock")
    monkeypatch.setattr(store_mod, "BACKOFF_S", 0.001)
    store.write(lambda s: s.exec(text("CREATE TABLE pair (id int primary key, n int)")))
    store.write(lambda s: s.exec(text("INSERT INTO pair VALUES (1, 0), (2, 0)")))
    unlocked = WithoutWriteLock(store.engine, store.url)
    both_hold_one = threading.Barrier(2)
    tries: list[str] = []

    def swap(name: str, first: int, second: int) -> None:
        def unit(s) -> None:
            tries.append(name)
            s.exec(text("UPDATE pair SET n = n + 1 WHERE id = :i"), params={"i": first})
            if tries.count(name) == 1:
                both_hold_one.wait(timeout=5)
            s.exec(text("UPDATE pair SET n = n + 1 WHERE id = :i"), params={"i": second})

        unlocked.write(unit)

    other = threading.Thread(target=swap, args=("b", 2, 1))
    other.start()
    swap("a", 1, 2)
    other.join()
    with store.session() as s:
        assert s.exec(text("SELECT sum(n) FROM pair")).one()[0] == 4  # both units done, once each
    assert len(tries) == 3  # one of them was aborted and ran again
