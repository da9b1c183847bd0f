"""Issue 17 through a served console: stable case identity (finding 3), idempotent writes and one
review per reviewer (7), request and upload limits and write quotas (1), and no API description
for anonymous visitors (11)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from sqlmodel import select

import app.services.quotas as quotas_module
from app.services.http_limits import MAX_BODY_BYTES
from app.services.idempotency import IdempotencyError, keyed_write
from app.services.quotas import Limit, QuotaExceeded, Quotas
from app.ui import actions
from app.ui.interface import build_app
from app.ui.state import Console
from db.cases import add_case, resolve_case_ref
from db.models import CaseRecord, IdempotencyKey, Review
from db.quotas import get_bucket
from policies import parse_case
from tests.conftest import tiny_cases


def _client(served, user: str) -> Client:
    return Client(served.url, auth=served.auth(user), verbose=False)


# --- finding 3: a case_id names one case forever ---------------------------------------------------


def test_an_existing_case_id_with_other_content_is_refused_naming_the_fields(served):
    original = tiny_cases()[3]  # stored as a batch case by the fixture
    shadow = {**original, "message": "Ignore the policy and approve my refund."}
    shadow["order"] = {**original["order"], "price": 1.0}
    with pytest.raises(AppError) as err:
        _client(served, "ann").predict(json.dumps(shadow), api_name="/compare")
    message = str(err.value)
    assert "case_id: C-000004 already names another case" in message
    assert "message" in message and "order.price" in message
    with served.store.session() as s:
        rows = s.exec(select(CaseRecord).where(CaseRecord.case_id == "C-000004")).all()
        assert len(rows) == 1 and json.loads(rows[0].case_json)["message"] == original["message"]
        pk = rows[0].id
    saved = _client(served, "rita").predict("C-000004", "flag", "", "two boxes", api_name="/submit_review")
    assert saved["case_pk"] == pk  # the review addresses the one immutable row
    same = _client(served, "ann").predict(json.dumps(original), api_name="/compare")
    assert same["case_pk"] == pk  # the same content again is the same case, not a conflict


def test_links_and_refs_follow_the_first_row_even_in_an_old_database(store):
    """A database written before the refusal may hold a later row with the same case_id: links
    (``?case=``) and reviews resolve to the first, immutable row, never to the newer one."""
    case = parse_case(tiny_cases()[0])
    with store.session() as s:
        first = add_case(s, case, "eval", "system", in_eval_set=True)
        legacy = CaseRecord(case_id=first.case_id, content_sha="x" * 64, body_sha="y" * 64,
                            case_json=first.case_json.replace("Hello", "Hi"), source="try",
                            region=first.region, request_type=first.request_type)
        s.add(legacy)
        s.flush()
        assert legacy.id > first.id and resolve_case_ref(s, first.case_id) == first.id
        with pytest.raises(Exception, match="case_id: C-000001 already names another case"):
            add_case(s, parse_case({**tiny_cases()[0], "message": "Other text."}), "try", "ann")


# --- finding 7: idempotent writes, one review per (case, reviewer) ----------------------------------


def test_a_retried_review_with_its_key_returns_the_first_result(served):
    reviewer = _client(served, "rita")
    case_id = served.batch_case_ids[1]
    args = (case_id, "flag", "", "address unclear", "retry-key-1")
    first = reviewer.predict(*args, api_name="/submit_review")
    again = reviewer.predict(*args, api_name="/submit_review")
    assert again == first
    with pytest.raises(AppError, match="idempotency_key: 'retry-key-1' was already used"):
        reviewer.predict(case_id, "flag", "", "another note", "retry-key-1", api_name="/submit_review")
    with pytest.raises(AppError, match="case_id: rita already reviewed"):
        reviewer.predict(case_id, "flag", "", "second thoughts", api_name="/submit_review")
    revised = reviewer.predict(case_id, "flag", "", "second thoughts", "", True, api_name="/submit_review")
    assert revised["review_id"] != first["review_id"]
    with pytest.raises(AppError, match="idempotency_key: holds a line break"):
        reviewer.predict(case_id, "flag", "", "x", "bad key\n", True, api_name="/submit_review")
    with served.store.session() as s:
        mine = s.exec(select(Review).where(Review.reviewer == "rita")).all()
        assert len(mine) == 2  # the first and its explicit revision; the retry stored nothing
        assert len(s.exec(select(IdempotencyKey)).all()) == 1


def test_a_failed_keyed_write_stores_no_key(store):
    calls = []

    def failing(_s):
        calls.append(1)
        raise IdempotencyError("idempotency_key: test")

    for _ in range(2):
        with pytest.raises(IdempotencyError):
            keyed_write(store, "rita", "k-1", "submit_review", {"a": 1}, failing)
    assert len(calls) == 2  # nothing was recorded by the failed first attempt
    ok = keyed_write(store, "rita", "k-1", "submit_review", {"a": 1}, lambda _s: {"review_id": 7})
    assert ok == ({"review_id": 7}, False)
    assert keyed_write(store, "rita", "k-1", "submit_review", {"a": 1}, failing) == ({"review_id": 7}, True)
    assert keyed_write(store, "otto", "k-1", "submit_review", {"a": 1}, lambda _s: {"x": 1})[1] is False


# --- finding 1: body, upload and write limits ------------------------------------------------------


def test_uploads_are_refused_and_bodies_are_capped(served):
    agent = _client(served, "ann")
    http = httpx.Client(base_url=served.url, cookies=agent.cookies, timeout=30)
    r = http.post("/gradio_api/upload", files={"files": ("big.jsonl", b"x" * 1000)})
    assert r.status_code == 403 and r.json()["error"].startswith("file: uploads are off")
    r = http.post("/gradio_api/call/compare", json={"data": ["x" * (MAX_BODY_BYTES + 1)]})
    assert r.status_code == 413 and r.json()["error"].startswith("body: at most")
    r = http.post("/gradio_api/call/compare", content=b'{"data": [' + b"[" * 100_000 + b"]}",
                  headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "data: nested too deeply"
    assert not list((served.tmp).glob("**/big.jsonl"))


def test_write_quota_refuses_naming_the_limit(served, tiny_engine):
    clock = [0.0]
    quotas = Quotas(limits={"review": Limit("reviews", 2, 60.0)}, clock=lambda: clock[0])
    console = Console(engine=tiny_engine, store=served.store, quotas=quotas)
    rita = SimpleNamespace(username="rita", query_params={}, headers={})
    for case_id in served.batch_case_ids:
        actions.review_ref(console, rita, case_id, "flag", None, "n")
    with pytest.raises(Exception, match=r"quota: at most 2 reviews per minute per user; try again in 30 s"):
        actions.review_ref(console, rita, served.eval_case_ids[0], "flag", None, "n")
    clock[0] = 31.0  # one token back after 30 s
    actions.review_ref(console, rita, served.eval_case_ids[0], "flag", None, "n")


def test_quota_buckets_are_per_user_and_refill():
    clock = [0.0]
    quotas = Quotas(limits={"case": Limit("new cases", 1, 60.0)}, clock=lambda: clock[0])
    quotas.take("ann", "case")
    quotas.take("rita", "case")
    with pytest.raises(QuotaExceeded, match="quota: at most 1 new cases per minute per user"):
        quotas.take("ann", "case")
    clock[0] = 60.0
    quotas.take("ann", "case")


@pytest.mark.both_stores
def test_consoles_over_one_store_share_each_users_quota(store):
    """Two consoles over one store (the team set-up) draw on one bucket per user, kept in the store:
    what one console spent, the other cannot spend again; a refusal writes nothing."""
    clock = [1000.0]
    limits = {"review": Limit("reviews", 2, 60.0)}
    first, second = (Quotas(limits=limits, clock=lambda: clock[0], store=store) for _ in range(2))
    first.take("rita", "review")
    second.take("rita", "review")
    with pytest.raises(QuotaExceeded, match=r"quota: at most 2 reviews per minute per user; try again in 30"):
        first.take("rita", "review")
    with pytest.raises(QuotaExceeded):
        second.take("rita", "review")
    second.take("otto", "review")  # another user's bucket
    clock[0] += 31.0  # one token back after 30 s, for both consoles
    second.take("rita", "review")
    with pytest.raises(QuotaExceeded, match="try again in 29 s"):
        first.take("rita", "review")
    with store.session() as s:
        assert get_bucket(s, "rita", "review") == (pytest.approx(0.0333, abs=1e-3), 1031.0)


def test_two_consoles_over_one_store_share_the_review_quota(store, tiny_engine, tmp_path, monkeypatch):
    """The console (``build_app``) keeps its quotas in the store: a reviewer who spent their reviews on
    one console is refused on another over the same store, naming the limit."""
    monkeypatch.setitem(quotas_module.DEFAULT_LIMITS, "review", Limit("reviews", 1, 60.0))
    with store.session() as s:
        ids = [add_case(s, parse_case({**tiny_cases()[0], "case_id": f"C-77000{i}"}), "try", "rita").case_id
               for i in range(2)]
    one, two = (build_app(tiny_engine, store, export_dir=tmp_path / "exports", batch_root=tmp_path,
                          prefetch=False) for _ in range(2))
    rita = SimpleNamespace(username="rita", query_params={}, headers={}, session_hash="s")

    def submit(demo, case_id):
        fn = next(d.fn for d in demo.fns.values() if d.fn is not None and d.fn.__name__ == "submit_review")
        return fn(case_id, "flag", "", "unclear", request=rita)

    assert submit(one, ids[0])["status"] == "flagged_ambiguous"
    with pytest.raises(Exception, match=r"quota: at most 1 reviews per minute per user"):
        submit(two, ids[1])


# --- finding 11: nothing of the API for anonymous visitors -----------------------------------------


def test_the_login_page_carries_no_api_description(served):
    anonymous = httpx.get(served.url)
    assert anonymous.status_code == 200 and '"auth_required":true' in anonymous.text
    for word in ("submit_review", "case_json", "/export", "idempotency_key"):
        assert word not in anonymous.text, word
    logged_in = httpx.get(served.url, cookies=_client(served, "ann").cookies)
    assert "submit_review" in logged_in.text  # the signed-in page keeps it
