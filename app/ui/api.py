"""The programmatic API (gradio_client): ``/compare``, ``/submit_review``, ``/reviews``, ``/export``.

Documented in app/API.md. Errors raise gr.Error whose message names the field at fault.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from app.services.reviews import MAX_ANSWER_CHARS, MAX_NOTE_CHARS
from app.services.second_opinion import is_double_review, visible_reviews
from app.ui import actions
from app.ui.errors import flag_param, text_param
from app.ui.state import Console, require, user_errors
from db.cases import get_case, resolve_case_ref

MODEL_CONCURRENCY = 1  # model calls running at once (one model in memory, serialised anyway)
MAX_REF_CHARS = 100  # a case reference, an action name or an idempotency key (longer: refused unread)
REVIEW_CONCURRENCY = 8  # /submit_review calls running at once (short SQLite write transactions)


def register(console: Console) -> None:
    """Declare the three endpoints inside the current gr.Blocks."""

    def compare(case_json: str, request: gr.Request) -> dict[str, Any]:
        """Compare base and fine-tuned on a case given as JSON text; answers with guard verdicts.
        A case_id already stored with other content is refused, naming the fields that differ."""
        case_json = text_param(case_json, "case_json", actions.MAX_CASE_JSON_CHARS)
        case_pk, runs = actions.compare_text(console, request, case_json, source="try")
        with console.store.session() as s:
            case_id = get_case(s, case_pk).case_id
        return {"case_pk": case_pk, "case_id": case_id, "answers": actions.runs_payload(runs)}

    def submit_review(
        case_id: str,
        action: str,
        answer_json: str = "",
        note: str = "",
        idempotency_key: str = "",
        revision: bool = False,
        request: gr.Request = None,  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """Review a case: approve_base | approve_finetuned | flag | correct (with answer_json).

        ``idempotency_key`` (optional, up to 64 of A-Z a-z 0-9 . _ : -): a retry with the same key
        returns the first result and stores nothing. One review per case and reviewer: send
        ``revision=true`` to replace your earlier review of the case. The answer saved by an approval
        or a correction is checked for consistency: ``consistency_issues`` lists what was found
        (``{"code", "message"}`` each; [] when none); the review is saved all the same."""
        case_id = text_param(case_id, "case_id", MAX_REF_CHARS)
        action = text_param(action, "action", MAX_REF_CHARS)
        answer = answer_json if isinstance(answer_json, dict) else text_param(
            answer_json, "answer_json", MAX_ANSWER_CHARS, optional=True
        )
        note = text_param(note, "note", MAX_NOTE_CHARS, optional=True)
        key = text_param(idempotency_key, "idempotency_key", MAX_REF_CHARS, optional=True)
        revise = flag_param(revision, "revision")
        return actions.review_ref(
            console, request, case_id, action, answer or None, note, idempotency_key=key, revision=revise
        ).payload()

    def reviews(case_id: str, request: gr.Request) -> dict[str, Any]:
        """A case's reviews the caller may see. On a second-opinion case, another reviewer's verdict
        stays hidden until two reviewers have both reviewed it."""
        case_id = text_param(case_id, "case_id", MAX_REF_CHARS)
        user = require(console, request, "compare")
        with user_errors(), console.store.session() as s:
            pk = resolve_case_ref(s, case_id)
            shown = visible_reviews(s, pk, user)
            double = is_double_review(s, pk)
        return {
            "case_pk": pk,
            "second_opinion": double,
            "status": shown[-1].status if shown else "pending",
            "reviews": [
                {
                    "review_id": r.id,
                    "reviewer": r.reviewer,
                    "status": r.status,
                    "note": r.note,
                    "answer": json.loads(r.answer_json) if r.answer_json else None,
                    "consistency_issues": r.consistency_issues,
                    "created_at": r.created_at.isoformat(),
                }
                for r in shown
            ],
        }

    def export(
        include_inconsistent: bool = False, request: gr.Request = None,  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """Export approved and corrected answers not exported yet (ops only): export_path, count, sha256.

        Answers with consistency issues are skipped (``skipped["inconsistent"]``) unless
        ``include_inconsistent=true``: then exported, marked in their rows, their review ids in ``marked``.
        (The key is not ``path``: Gradio treats a dict with a ``path`` key as a file to serve.)
        """
        include = flag_param(include_inconsistent, "include_inconsistent")
        result = actions.export(console, request, include)
        return {
            "export_path": result.path,
            "count": result.count,
            "sha256": result.sha256,
            "manifest": result.manifest_path,
            "review_ids": result.review_ids,
            "skipped": result.skipped,
            "marked": result.marked,
            "preferences_path": result.preferences_path,
            "preference_count": result.preference_count,
        }

    # Model endpoints share one queue slot: calls wait in Gradio's queue (memory stays flat) instead
    # of piling up threads on the engine lock. Reviews are short DB writes and may overlap.
    gr.api(compare, api_name="compare", concurrency_limit=MODEL_CONCURRENCY, concurrency_id="model")
    gr.api(submit_review, api_name="submit_review", concurrency_limit=REVIEW_CONCURRENCY)
    gr.api(reviews, api_name="reviews", concurrency_limit=REVIEW_CONCURRENCY)
    gr.api(export, api_name="export", concurrency_limit=1)
