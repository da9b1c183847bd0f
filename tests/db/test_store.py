"""Store: migrations, users and roles, cases and runs with audit entries, the append-only audit log."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from sqlmodel import select

from db.audit import audit_entries
from db.cases import add_case, save_run
from db.migrations import current_revision, head_revision
from db.models import AuditEntry
from db.store import open_store
from db.users import PermissionDenied, UserError, authenticate, authorize, create_user, ensure_admin
from policies.schema import InvalidCase
from tests.conftest import case_with_runs, make_answer, make_case


def test_store_opens_at_head_and_reopens(db_url, store_kind):
    store = open_store(db_url)
    assert current_revision(store.engine) == head_revision()
    again = open_store(db_url)  # already at head: nothing to do
    assert current_revision(again.engine) == head_revision()
    if store_kind == "sqlite":
        with again.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_users_passwords_and_roles(store):
    with store.session() as s:
        user = authenticate(s, "rita", "review-pass-1")
        assert user is not None and user.role == "reviewer"
        assert user.password_hash.startswith("scrypt$") and "review-pass-1" not in user.password_hash
        assert authenticate(s, "rita", "wrong-password") is None
        with pytest.raises(UserError, match="role"):
            create_user(s, "bob", "boss", "long-enough-pw")
        with pytest.raises(UserError, match="username"):
            create_user(s, "rita", "agent", "long-enough-pw")
        assert ensure_admin(s) is None  # users exist already
        entry = audit_entries(s, action="create_user")[0]
        assert "password_hash" not in entry.after_json
    with store.session() as s:
        with pytest.raises(PermissionDenied):
            authorize(s, "ann", "export")
    with store.session() as s:
        denied = audit_entries(s, action="denied")
        assert [(d.actor, d.entity_id) for d in denied] == [("ann", "export")]
        assert authorize(s, "otto", "correct") == "ops"


def test_first_start_generates_admin(db_url):
    store = open_store(db_url)
    with store.session() as s:
        boot = ensure_admin(s)
    assert boot is not None and boot.username == "admin" and len(boot.generated_password) >= 12
    with store.session() as s:
        assert authenticate(s, "admin", boot.generated_password).role == "ops"


def test_cases_and_runs_cached_and_audited(store):
    pk, runs = case_with_runs(store)
    case = make_case("C-1")
    with store.session() as s:
        assert add_case(s, case, "try", "ann").id == pk  # same content, same row
        again = save_run(s, pk, make_answer(case, "base", "ESCALATE"), "ann")
        assert again.id == runs["base"].id and again.decision == "DENY"  # never computed twice
        actions = [e.action for e in audit_entries(s)]
    assert actions.count("add_case") == 1 and actions.count("add_model_run") == 2
    # A case_id names one case forever: other content under the same id is refused, naming the field,
    # and nothing is stored (issue 17, finding 3).
    with pytest.raises(InvalidCase, match=r"order\.price"):
        with store.session() as s:
            add_case(s, make_case("C-1", price=99.0), "try", "ann")
    with store.session() as s:
        assert [e.action for e in audit_entries(s)].count("add_case") == 1


def test_audit_log_is_append_only(store):
    case_with_runs(store)
    with pytest.raises(DatabaseError, match="append-only"):
        with store.session() as s:
            s.exec(text("DELETE FROM audit_log"))
    with store.session() as s:
        assert s.exec(select(AuditEntry)).first() is not None


@pytest.mark.parametrize(("url", "said"), [
    ("/proc/no-such-folder/store.db", "sqlite:////proc/no-such-folder/store.db: No such file or directory"),
    ("mysql://u:secret@host/db", "mysql://u:***@host/db: the store is an SQLite file or a postgresql"),
    ("not a url://", "not a url://: Could not parse SQLAlchemy URL"),
    # a server that is not there: refused at once, the password never shown
    ("postgresql+psycopg://u:secret@127.0.0.1:1/db",
     "postgresql+psycopg://u:***@127.0.0.1:1/db: connection failed"),
])
def test_a_store_that_cannot_be_opened_is_named_in_one_line(url: str, said: str) -> None:
    from db.store import StoreUnavailable

    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)
    message = str(caught.value)
    assert message.startswith(f"cannot open the store at {said}") and "\n" not in message, message
    assert "secret" not in message
