"""Issue 17, finding 7 for bulk actions: the confirmation carries an idempotency key, so a
double-clicked or retried Confirm approves once and answers with the first bulk action."""

from __future__ import annotations

from types import SimpleNamespace

from sqlmodel import select

from app.services.bulk import bulk_approve_once
from app.ui.interface import build_app
from app.ui.queue_tools import ANY
from db.models import BulkAction, Review
from tests.app.services.test_review_throughput import AGREED, _add


def test_a_retried_bulk_approve_with_its_key_approves_once(store):
    for i in range(3):
        _add(store, f"C-30000{i}")
    first = bulk_approve_once(store, "rita", "confirm-1", AGREED)
    again = bulk_approve_once(store, "rita", "confirm-1", AGREED)
    assert again == (first[0], True) and first[1] is False and first[0]["count"] == 3
    with store.session() as s:
        assert len(s.exec(select(BulkAction)).all()) == 1 and len(s.exec(select(Review)).all()) == 3


def test_the_confirm_handler_uses_the_confirmations_key(store, tmp_path):
    for i in range(2):
        _add(store, f"C-31000{i}")
    demo = build_app(None, store, export_dir=tmp_path / "exports", batch_root=tmp_path)
    fns = {dep.fn.__name__: dep.fn for dep in demo.fns.values() if dep.fn is not None}
    rita = SimpleNamespace(username="rita", query_params={}, headers={})
    filters = (ANY, ANY, ANY, ANY, False, "agreed_clean")
    _, question, message, key = fns["ask"](*filters, request=rita).values()  # box, question, message, key
    assert message == ""
    assert "2" in question and key
    outs = [fns["confirm"](*filters, key, request=rita) for _ in range(2)]  # a double click
    messages = [next(v for k, v in out.items() if isinstance(v, str)) for out in outs]
    assert messages[0] == messages[1] and "approved 2 cases" in messages[0]
    with store.session() as s:
        assert len(s.exec(select(BulkAction)).all()) == 1
