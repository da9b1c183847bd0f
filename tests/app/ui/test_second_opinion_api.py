"""Second opinions through the API: the second reviewer never sees the first verdict, neither in
/reviews nor in /submit_review's answer, until both have reviewed."""

from __future__ import annotations

from gradio_client import Client

from app.services.second_opinion import set_second_opinion_share
from db.cases import resolve_case_ref
from tests.app.ui.test_review_browser import _seed


def test_second_reviewer_never_sees_first_verdict_through_api(served, tiny_engine):
    case_id = served.batch_case_ids[0]
    with served.store.session() as s:
        set_second_opinion_share(s, "otto", 1.0)  # every case is reviewed twice
        pk = resolve_case_ref(s, case_id)
    _seed(served, tiny_engine, pk, ft_agrees=False)
    rita = Client(served.url, auth=served.auth("rita"), verbose=False)
    otto = Client(served.url, auth=served.auth("otto"), verbose=False)
    first = rita.predict(case_id, "flag", "", "the message asks for two things", api_name="/submit_review")
    assert first["status"] == "flagged_ambiguous"
    hidden = otto.predict(case_id, api_name="/reviews")
    assert hidden["second_opinion"] is True
    assert hidden["reviews"] == [] and hidden["status"] == "pending"
    assert [r["reviewer"] for r in rita.predict(case_id, api_name="/reviews")["reviews"]] == ["rita"]
    second = otto.predict(case_id, "approve_base", "", "", api_name="/submit_review")
    assert second["status"] == "approved"  # its own review only
    both = otto.predict(case_id, api_name="/reviews")
    assert [(r["reviewer"], r["status"]) for r in both["reviews"]] == [
        ("rita", "flagged_ambiguous"),
        ("otto", "approved"),
    ]
