"""Review use cases on a real SQLite store: reviews, refused corrections, queue order, exports, metrics."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from app.services.exports import ExportError, export_reviews
from app.services.metrics import corrections_per_rule, model_metrics, reviewer_agreement
from app.services.queue import QueueFilter, queue_rows
from app.services.reviews import ReviewError, submit_review
from db.audit import audit_entries
from db.cases import add_case, runs_for_case, save_run
from db.models import ExportItem
from policies import InvalidAnswer
from tests.conftest import case_with_runs, make_answer, make_case


def test_reviews_and_refused_correction(store):
    pk, runs = case_with_runs(store)
    with store.session() as s:
        approved = submit_review(s, pk, "approve_finetuned", "rita", runs=runs)
        assert approved.status == "approved" and approved.model_run_id == runs["finetuned"].id
    bad = dict(json.loads(runs["base"].answer_json), decision="MAYBE")
    with pytest.raises(InvalidAnswer) as err:
        with store.session() as s:
            submit_review(s, pk, "correct", "rita", runs=runs, answer=bad)
    assert err.value.fields == ["decision"]
    with pytest.raises(ReviewError, match="answer: not valid JSON"):
        with store.session() as s:
            submit_review(s, pk, "correct", "rita", runs=runs, answer="{oops")
    with pytest.raises(ReviewError, match="note"):
        with store.session() as s:
            submit_review(s, pk, "flag", "ann", runs=runs, note="  ")
    with store.session() as s:
        reviews = audit_entries(s, entity="review")
        assert [r.action for r in reviews] == ["review_approved"]  # refused ones wrote nothing
        good = dict(json.loads(runs["base"].answer_json), decision="APPROVE_REFUND_WITH_FEE")
        corrected = submit_review(s, pk, "correct", "rita", runs=runs, answer=json.dumps(good), note="fee")
        # started from the answer matching the guard's expected decision
        assert corrected.model_run_id == runs["finetuned"].id


def test_queue_sorted_by_need_for_human(store):
    calm, _ = case_with_runs(store, "C-calm", base="APPROVE_REFUND_WITH_FEE", ft="APPROVE_REFUND_WITH_FEE")
    split, _ = case_with_runs(store, "C-split", base="DENY", ft="APPROVE_REFUND_WITH_FEE")
    flagged, runs = case_with_runs(
        store, "C-flag", base="APPROVE_REFUND_WITH_FEE", ft="APPROVE_REFUND_WITH_FEE", price=77.0
    )
    with store.session() as s:
        submit_review(s, flagged, "flag", "ann", runs=runs, note="customer says two items")
        rows = queue_rows(s)
        assert [r.case_pk for r in rows] == [flagged, split, calm]
        assert rows[1].disagree and not rows[2].needs_human
        assert [r.case_pk for r in queue_rows(s, QueueFilter(disagree_only=True))] == [split]
        assert [r.case_pk for r in queue_rows(s, QueueFilter(status="flagged_ambiguous"))] == [flagged]
        assert queue_rows(s, QueueFilter(region="UK")) == []


def test_export_bookkeeping_no_double_export_and_eval_refused(store, tmp_path):
    pk1, runs1 = case_with_runs(store, "C-1")
    pk2, runs2 = case_with_runs(store, "C-2", price=88.0)
    eval_case = make_case("C-EVAL", price=55.0)
    with store.session() as s:
        eval_pk = add_case(s, eval_case, "eval", "system", in_eval_set=True).id
        save_run(s, eval_pk, make_answer(eval_case, "finetuned", "APPROVE_REFUND_WITH_FEE"), "system")
        # the eval case again under another id: still refused
        leak_pk = add_case(s, make_case("C-LEAK", price=55.0), "try", "ann").id
        save_run(s, leak_pk, make_answer(make_case("C-LEAK", price=55.0), "finetuned", "DENY"), "ann")
    with store.session() as s:
        for pk in (pk1, eval_pk, leak_pk):
            submit_review(s, pk, "approve_finetuned", "rita", runs=runs_for_case(s, pk))
        r2 = submit_review(s, pk2, "approve_finetuned", "rita", runs=runs2)
    with store.session() as s:
        result = export_reviews(s, "otto", tmp_path / "exports")
    assert result.count == 2 and sorted(result.skipped["eval_set"]) == sorted(
        [r.id for r in _reviews_of(store, (eval_pk, leak_pk))]
    )
    lines = open(result.path).read().splitlines()
    assert len(lines) == 2
    roles = [m["role"] for m in json.loads(lines[0])["messages"]]
    assert roles == ["system", "user", "assistant"]
    manifest = json.loads(open(result.manifest_path).read())
    assert manifest["sha256"] == result.sha256 and manifest["count"] == 2 and r2.id in manifest["review_ids"]
    with store.session() as s:
        assert len(s.exec(select(ExportItem)).all()) == 2
        assert audit_entries(s, action="export")[0].actor == "otto"
        with pytest.raises(ExportError, match="nothing to export"):
            export_reviews(s, "otto", tmp_path / "exports")
    with store.session() as s:  # a new review of the same answer is a duplicate example
        submit_review(s, pk1, "approve_finetuned", "otto", runs=runs1, note="again")
    with store.session() as s:
        with pytest.raises(ExportError, match="duplicate"):
            export_reviews(s, "otto", tmp_path / "exports")
    assert not [p for p in (tmp_path / "exports").iterdir() if p.name.startswith(".")]  # no temp files left


def _reviews_of(store, pks):
    from db.reviews import latest_review

    with store.session() as s:
        return [latest_review(s, pk) for pk in pks]


def test_metrics(store):
    pk, runs = case_with_runs(store, "C-1", base="DENY", ft="APPROVE_REFUND_WITH_FEE")
    with store.session() as s:
        submit_review(s, pk, "correct", "rita", runs=runs, answer=json.loads(runs["finetuned"].answer_json))
        mm = model_metrics(s)
        acc = mm[mm.metric == "decision accuracy"].set_index("variant")["value"]
        assert acc["base"] == 0.0 and acc["finetuned"] == 1.0
        agree = reviewer_agreement(s).set_index("variant")["agreement"]
        assert agree["finetuned"] == 1.0 and agree["base"] == 0.0
        assert corrections_per_rule(s).to_dict("records") == [{"rule": "RET-11", "corrections": 1}]


def test_export_refuses_a_frozen_case_under_other_ids_and_message(store, tmp_path):
    """A case equal to an eval case but for its ids and message is the same case to the model."""
    from app.services.exports import eval_fingerprints_of
    from policies import parse_case
    from policies.leakage import FrozenKeys, frozen_keys
    from policies.prompt import PromptFormat

    eval_case = make_case("C-EV-7", price=61.0)
    frozen_file = tmp_path / "eval.jsonl"
    frozen_file.write_text(json.dumps({"id": "C-EV-7", "input": eval_case.to_json_dict()}) + "\n")
    twin_data = eval_case.to_json_dict()
    twin_data.update(case_id="C-TWIN", message="Another customer writes about the same order.")
    twin_data["customer"]["id"], twin_data["order"]["id"] = "U-TWIN", "O-TWIN"
    twin = parse_case(twin_data)
    with store.session() as s:
        twin_pk = add_case(s, twin, "try", "ann").id
        save_run(s, twin_pk, make_answer(twin, "finetuned", "APPROVE_REFUND"), "ann")
    clean_pk, clean_runs = case_with_runs(store, "C-CLEAN", price=62.0)
    with store.session() as s:
        twin_review = submit_review(s, twin_pk, "approve_finetuned", "rita", runs=runs_for_case(s, twin_pk))
        submit_review(s, clean_pk, "approve_finetuned", "rita", runs=clean_runs)
    tiny = PromptFormat(policy="titles", instructions="short", max_message_chars=0, case="fields")
    with store.session() as s:
        frozen = frozen_keys([frozen_file], tiny)
        result = export_reviews(s, "otto", tmp_path / "exports", tiny, frozen=frozen)
    assert result.count == 1 and result.skipped == {"frozen_set": [twin_review.id]}
    manifest = json.loads(open(result.manifest_path).read())
    assert manifest["frozen_sets"] == [str(frozen_file)] and manifest["case_ids"] == ["C-CLEAN"]
    # the console's eval fingerprints carry the fields key too: refused without a frozen file
    with store.session() as s:
        submit_review(s, twin_pk, "approve_finetuned", "otto", runs=runs_for_case(s, twin_pk), note="again")
    with store.session() as s, pytest.raises(ExportError, match="1 refused as frozen_set"):
        export_reviews(s, "otto", tmp_path / "exports", PromptFormat(), eval_fingerprints_of([eval_case]),
                       frozen=FrozenKeys(PromptFormat()))


# --- issue 17: bounded, clean notes and corrections ------------------------------------------------
def _stored(store) -> tuple[int, int]:
    """(review rows, review audit entries) in the store."""
    from db.models import Review

    with store.session() as s:
        return len(s.exec(select(Review)).all()), len(audit_entries(s, entity="review"))


@pytest.mark.parametrize("action", ["flag", "approve_finetuned", "correct"])
def test_a_30_mb_note_is_refused_and_nothing_stored(store, action):
    pk, runs = case_with_runs(store)
    answer = json.loads(runs["finetuned"].answer_json)
    too_long = r"^note: is 31,457,280 characters long; at most 2,000 are allowed$"
    with pytest.raises(ReviewError, match=too_long):
        with store.session() as s:
            submit_review(s, pk, action, "rita", runs=runs, answer=answer, note="n" * (30 * 2**20))
    with pytest.raises(ReviewError, match=r"^note: is 2,001 characters long"):
        with store.session() as s:
            submit_review(s, pk, action, "rita", runs=runs, answer=answer, note="n" * 2001)
    assert _stored(store) == (0, 0)
    with store.session() as s:  # 2,000 characters (after stripping) are fine
        review = submit_review(s, pk, action, "rita", runs=runs, answer=answer, note=" " + "n" * 2000 + "\n")
        assert review.note == "n" * 2000
    assert _stored(store) == (1, 1)


@pytest.mark.parametrize(("note", "found"), [
    ("two items\x1b[2K", "control character (U+001B) at position 9"),
    ("nul\x00", "control character (U+0000) at position 3"),
    ("bell\x07", "control character (U+0007) at position 4"),
    ("see \u202eereh", "bidi control character (U+202E) at position 4"),
    ("hidden\u200bword", "zero-width character (U+200B) at position 6"),
])
def test_a_note_with_hidden_characters_is_refused(store, note, found):
    pk, runs = case_with_runs(store)
    with pytest.raises(ReviewError) as err:
        with store.session() as s:
            submit_review(s, pk, "flag", "ann", runs=runs, note=note)
    assert str(err.value) == f"note: holds a {found}"
    assert _stored(store) == (0, 0)
    with store.session() as s:  # a multiline note is fine
        assert submit_review(s, pk, "flag", "ann", runs=runs, note="two items:\n\t- a\n\t- b").id


@pytest.mark.parametrize(("field", "bad"), [
    ("reasoning", "RET-11 applies.\x1b[31m FULL REFUND"), ("reasoning", "RET-11 applies. \u202eDNUFER"),
    ("customer_response", "Sorry.\x00"), ("next_action", "Send a label \u202e"),
])
def test_an_unclean_correction_is_refused_and_never_exported(store, tmp_path, field, bad):
    pk, runs = case_with_runs(store, "C-1")
    clean_pk, clean_runs = case_with_runs(store, "C-2", price=88.0)
    corrected = dict(json.loads(runs["finetuned"].answer_json), **{field: bad})
    for answer in (corrected, json.dumps(corrected)):  # as a dict and as the console's JSON text
        with pytest.raises(InvalidAnswer) as err:
            with store.session() as s:
                submit_review(s, pk, "correct", "rita", runs=runs, answer=answer, note="fix")
        assert err.value.fields == [field] and str(err.value).startswith(f"{field}: holds a ")
    assert _stored(store) == (0, 0)
    with store.session() as s:
        submit_review(s, clean_pk, "approve_finetuned", "rita", runs=clean_runs)
    with store.session() as s:
        result = export_reviews(s, "otto", tmp_path / "exports")
    assert result.count == 1
    for path in (result.path, result.manifest_path):
        text = open(path, encoding="utf-8").read()
        assert not any(ch in text for ch in ("\x1b", "\u202e", "\x00", "\\u001b", "\\u202e", "\\u0000"))
    assert json.loads(open(result.manifest_path).read())["case_ids"] == ["C-2"]


def test_saved_filter_names_are_one_printable_line(store):
    from app.services.saved_filters import MAX_NAME_CHARS, SavedFilterError, save_filter, saved_filters

    assert MAX_NAME_CHARS <= 80
    with store.session() as s:
        for name, found in [("US\nreturns", "a line break (U+000A)"), ("US\treturns", "a tab (U+0009)"),
                            ("US \u202ereturns", "bidi control character (U+202E)"),
                            ("US\u200breturns", "zero-width character (U+200B)"),
                            ("US\x1b[31m", "control character (U+001B)"), ("x" * (MAX_NAME_CHARS + 1), "")]:
            with pytest.raises(SavedFilterError, match="^name: ") as err:
                save_filter(s, "rita", name, QueueFilter(region="US"))
            assert found in str(err.value)
        assert saved_filters(s, "rita") == []
        saved = save_filter(s, "rita", "  Retours – UK «vip»  ", QueueFilter(region="UK"))
        assert saved.name == "Retours – UK «vip»"


def test_queue_counts_follow_the_filter(store):
    """The line over the queue counts what the filter selects: matching, pending, flagged, ..."""
    from app.services.queue import queue_counts

    case_with_runs(store, "C-calm", base="APPROVE_REFUND_WITH_FEE", ft="APPROVE_REFUND_WITH_FEE")
    case_with_runs(store, "C-split", base="DENY", ft="APPROVE_REFUND_WITH_FEE")
    flagged, runs = case_with_runs(
        store, "C-flag", base="APPROVE_REFUND_WITH_FEE", ft="APPROVE_REFUND_WITH_FEE", price=77.0
    )
    with store.session() as s:
        submit_review(s, flagged, "flag", "ann", runs=runs, note="customer says two items")
        every = queue_counts(queue_rows(s))
        split = queue_counts(queue_rows(s, QueueFilter(disagree_only=True)))
        none = queue_counts(queue_rows(s, QueueFilter(region="UK")))
    assert (every.matching, every.pending, every.flagged, every.disagree) == (3, 2, 1, 1)
    assert (split.matching, split.pending, split.flagged, split.disagree) == (1, 1, 0, 1)
    assert every.sentence().startswith("**3** matching · 2 pending · 1 flagged · ")
    assert none.matching == 0 and none.sentence().startswith("**0** matching")


def test_bulk_with_nothing_selected_says_why(store):
    """Issue 18: a bulk approve that selects nothing says so, and why (no answers yet: they are
    computed when a case is opened or by a batch run)."""
    from app.services.bulk import BulkError, bulk_approve, bulk_candidates, why_none_selected

    with store.session() as s:
        add_case(s, make_case("C-unanswered"), "batch", "otto")
    clean = QueueFilter(preset="agreed_clean")
    with store.session() as s:
        assert bulk_candidates(s, clean) == []
        why = why_none_selected(s, clean)
        assert why.startswith("No case matches the preset 'both models agree with the guard")
        assert "when a case is opened, or by a batch run" in why
        assert why_none_selected(s, QueueFilter(region="UK")) == "No case matches the filter."
        assert "none has a valid fine-tuned answer yet" in why_none_selected(s, QueueFilter())
        with pytest.raises(BulkError, match="^filter: No case matches the preset"):
            bulk_approve(s, "otto", clean)
