"""Nobody where they don't belong: login on every endpoint, roles checked in the handlers (and
refusals audited), slow salted password hashes, and paths that cannot leave their directory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app.services.exports import export_reviews
from app.services.paths import UnsafePath, contained_path, safe_dir
from app.ui import actions
from app.ui.batch_tab import resolve_batch_path
from app.ui.state import Console, require
from db.audit import audit_entries
from db.store import open_store
from db.users import SCRYPT_N, hash_password, verify_password
from tests.conftest import tiny_cases

GOOD_ANSWER = {
    "decision": "DENY",
    "reasoning": "RET-10 applies.",
    "customer_response": "Sorry, this is outside the window.",
    "next_action": "Close the case.",
    "policy_refs": ["RET-10"],
}


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/config"),
        ("GET", "/gradio_api/info"),
        ("GET", "/gradio_api/openapi.json"),
        ("POST", "/gradio_api/call/compare"),
        ("POST", "/gradio_api/call/submit_review"),
        ("POST", "/gradio_api/call/export"),
        ("POST", "/gradio_api/queue/join"),
        ("GET", "/gradio_api/file=/etc/passwd"),
    ],
)
def test_anonymous_gets_401_everywhere(served, method, path):
    body = {"data": [json.dumps(tiny_cases()[0])], "fn_index": 0, "session_hash": "x"}
    response = httpx.request(method, served.url.rstrip("/") + path, json=body if method == "POST" else None)
    assert response.status_code == 401, (path, response.status_code)


def test_roles_are_enforced_in_the_handlers_and_audited(served):
    agent = Client(served.url, auth=served.auth("ann"), verbose=False)
    reviewer = Client(served.url, auth=served.auth("rita"), verbose=False)
    case_id = served.batch_case_ids[0]
    with pytest.raises(AppError, match="may not export"):
        agent.predict(api_name="/export")
    with pytest.raises(AppError, match="may not export"):
        reviewer.predict(api_name="/export")
    with pytest.raises(AppError, match="may not correct"):
        agent.predict(case_id, "correct", json.dumps(GOOD_ANSWER), "", api_name="/submit_review")
    with pytest.raises(AppError, match="may not approve"):
        agent.predict(case_id, "approve_finetuned", "", "", api_name="/submit_review")
    with served.store.session() as s:
        denied = [(e.actor, e.entity_id) for e in audit_entries(s, action="denied")]
    assert {("ann", "export"), ("rita", "export"), ("ann", "correct"), ("ann", "approve")} <= set(denied)


@pytest.mark.parametrize("action", ["compare", "flag", "approve", "correct", "export", "batch"])
def test_no_user_no_action(db_url, action):
    """A request without a logged-in user (auth switched off by mistake) is refused, not served."""
    console = Console(engine=None, store=open_store(db_url))
    with pytest.raises(gr.Error, match="anonymous"):
        require(console, SimpleNamespace(username=None), action)
    with pytest.raises(gr.Error, match="anonymous"):
        actions.export(console, None)


def test_passwords_are_slow_salted_scrypt():
    first, second = hash_password("same-password"), hash_password("same-password")
    assert first != second and first.startswith("scrypt$") and SCRYPT_N >= 2**14
    started = time.perf_counter()
    assert verify_password("same-password", first) and not verify_password("Same-password", first)
    assert (time.perf_counter() - started) / 2 > 0.01  # >10 ms per guess
    assert not verify_password("x", "md5$abc") and not verify_password("x", "garbage")


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "cases.jsonl").write_text("{}\n")
    (tmp_path / "secret.jsonl").write_text("{}\n")
    (root / "link-out.jsonl").symlink_to(tmp_path / "secret.jsonl")
    (root / "dir-out").symlink_to(tmp_path)
    return root


@pytest.mark.parametrize(
    "candidate",
    ["../secret.jsonl", "sub/../../secret.jsonl", "sub/../sub/cases.jsonl", "/etc/passwd",
     "link-out.jsonl", "dir-out/secret.jsonl", "", "a\x00b"],
)
def test_paths_cannot_escape(tmp_path, candidate):
    root = _tree(tmp_path)
    if candidate == "/etc/passwd" or candidate.startswith("link") or candidate.startswith("dir"):
        candidate = candidate if candidate.startswith("/") else str(root / candidate)
    with pytest.raises(UnsafePath):
        contained_path(root, candidate)
    console = Console(engine=None, store=None, batch_root=root)  # type: ignore[arg-type]
    with pytest.raises(gr.Error):
        resolve_batch_path(console, None, candidate)


def test_paths_inside_are_fine(tmp_path):
    root = _tree(tmp_path)
    assert contained_path(root, "sub/cases.jsonl") == (root / "sub" / "cases.jsonl").resolve()
    assert contained_path(root, str(root / "sub" / "cases.jsonl")).is_file()


def test_export_dir_cannot_escape(tmp_path, db_url):
    root = _tree(tmp_path)
    store = open_store(db_url)
    for bad in (root / "dir-out", root / ".." / "exports"):
        with pytest.raises(UnsafePath), store.session() as s:
            export_reviews(s, "otto", bad)
    assert safe_dir(root / "exports") == (root / "exports").resolve()


def test_no_handler_acts_for_a_user_without_a_role(tmp_path, db_url):
    """Every event handler of the page (API and private UI events alike), called directly as a
    user the store does not know: nothing is stored but the audited refusals. The Queue tools'
    handlers (bulk approve, undo, the bulk-action list, saved filters) each refuse outright."""
    import inspect

    from sqlmodel import Session, select

    from app.ui.interface import build_app
    from db.cases import add_case
    from db.models import AuditEntry, CaseRecord, Export, ModelRun, Review
    from policies import parse_case

    store = open_store(db_url)
    with store.session() as s:
        pk = add_case(s, parse_case(tiny_cases()[0]), "batch", "system").id
    demo = build_app(None, store, export_dir=tmp_path / "exports", batch_root=tmp_path)
    intruder = SimpleNamespace(username="intruder", query_params={}, headers={})
    values = {"case_json": json.dumps(tiny_cases()[1]), "case_id": f"#{pk}", "action": "flag",
              "note": "x", "note_v": "x", "ref": f"#{pk}", "pk": pk, "path_v": "cases.jsonl"}
    refused = 0
    queue_tools: dict[str, bool] = {}  # handler -> refused the intruder
    for dep in demo.fns.values():
        fn = dep.fn
        if fn is not None and fn.__module__ == "app.ui.queue_tools":
            queue_tools[fn.__qualname__] = False  # a lambda checks no role: it stays False
        if fn is None or fn.__name__ == "<lambda>":
            continue
        params = inspect.signature(fn).parameters
        kwargs = {n: values.get(n) for n in params if n not in ("progress", "evt")}
        kwargs["request"] = intruder
        if "evt" in params:
            kwargs["evt"] = SimpleNamespace(row_value=[str(pk)], index=[0, 0], value=str(pk))
        try:
            fn(**kwargs)
        except gr.Error as exc:
            refused += "may not" in str(exc.message)
            if fn.__qualname__ in queue_tools:
                queue_tools[fn.__qualname__] = "may not" in str(exc.message)
        except Exception:  # noqa: BLE001, S110 - a handler failing on odd arguments did nothing either
            pass
    with Session(store.engine) as s:
        assert s.exec(select(Review)).all() == [] and s.exec(select(Export)).all() == []
        assert s.exec(select(ModelRun)).all() == [] and len(s.exec(select(CaseRecord)).all()) == 1
        actions_logged = {e.action for e in s.exec(select(AuditEntry)) if e.actor == "intruder"}
    assert actions_logged == {"denied"} and refused >= 10
    assert len(queue_tools) >= 7 and any(q.endswith("refresh_choices") for q in queue_tools)
    assert [q for q, ok in queue_tools.items() if not ok] == []


def test_queue_tools_undo_and_list_as_each_role(store, tmp_path):
    """Issue 17, finding 5, through the Queue tools' handlers: the bulk-action list shows each user
    only what they may undo (their own; ops: all; agents: none), and undoing someone else's bulk
    action is refused (named owner, audited, nothing deleted) unless the caller is ops."""
    from sqlmodel import select

    from app.services.bulk import bulk_approve
    from app.services.queue import QueueFilter
    from app.ui.interface import build_app
    from app.ui.queue_tools import ANY
    from db.models import BulkAction, Review
    from db.users import create_user
    from tests.app.services.test_review_throughput import _add

    with store.session() as s:
        create_user(s, "rex", "reviewer", "review-pass-2")
    ids: dict[str, int] = {}
    for i, owner in enumerate(("otto", "rita", "rex")):
        _add(store, f"C-40000{i}")
        with store.session() as s:
            ids[owner] = bulk_approve(s, owner, QueueFilter(preset="agreed_clean")).id
    demo = build_app(None, store, export_dir=tmp_path / "exports", batch_root=tmp_path)
    handlers = {
        dep.fn.__name__: dep.fn
        for dep in demo.fns.values()
        if dep.fn is not None and dep.fn.__module__ == "app.ui.queue_tools"
    }
    undo, listing = handlers["undo"], handlers["refresh_choices"]
    no_filter = (ANY, ANY, ANY, ANY, False, ANY)

    def as_user(name: str) -> SimpleNamespace:
        return SimpleNamespace(username=name, query_params={}, headers={}, session_hash=f"s-{name}")

    def listed(name: str) -> list[int]:
        undo_pick, _filters = listing(request=as_user(name))
        return sorted(value for _label, value in undo_pick.choices)

    def message(name: str, bulk_id: int) -> str:
        out = undo(bulk_id, *no_filter, request=as_user(name))
        return next(v for v in out.values() if isinstance(v, str))

    for outsider, need in (("intruder", "compare"), (None, "compare")):
        with pytest.raises(gr.Error, match=f"may not {need}"):
            listing(request=as_user(outsider))  # type: ignore[arg-type]
    assert listed("ann") == []
    assert listed("rita") == [ids["rita"]] and listed("rex") == [ids["rex"]]
    assert listed("otto") == sorted(ids.values())
    for name in ("intruder", "ann"):
        with pytest.raises(gr.Error, match="may not approve"):
            undo(ids["otto"], *no_filter, request=as_user(name))
    refusal = message("rita", ids["otto"])
    assert refusal.startswith("Not undone") and f"#{ids['otto']}" in refusal and "'otto'" in refusal
    assert message("rex", ids["rita"]).startswith("Not undone")
    with store.session() as s:
        assert len(s.exec(select(Review)).all()) == 3  # nothing deleted
        assert all(a.undone_at is None for a in s.exec(select(BulkAction)))
        denied = {(e.actor, e.entity, e.entity_id) for e in audit_entries(s, action="denied")}
    assert {("rita", "bulk_action", str(ids["otto"])), ("rex", "bulk_action", str(ids["rita"]))} <= denied
    assert {("intruder", "permission", "approve"), ("ann", "permission", "approve")} <= denied
    assert message("rita", ids["rita"]) == f"Undid bulk action #{ids['rita']}."  # the owner
    assert message("otto", ids["rex"]) == f"Undid bulk action #{ids['rex']}."  # ops: anyone's
    assert listed("otto") == [ids["otto"]] and listed("rita") == []
    with store.session() as s:
        assert [r.reviewer for r in s.exec(select(Review))] == ["otto"]
