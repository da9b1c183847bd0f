"""Handler cores shared by the tabs and the API endpoints: check the caller's role, call ``db``,
translate the result. Each raises gr.Error with a message naming the field at fault."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from app.services.answers import compare_case, compare_new_case, prompt_format_of
from app.services.exports import ExportResult, export_reviews
from app.services.reviews import REVIEW_ACTIONS, submit_review
from app.ui.state import ACTION_PERMISSION, Console, require, user_errors
from db.cases import resolve_case_ref, run_answer, run_guard
from db.models import ModelRun
from policies import InvalidCase, parse_case


def runs_payload(runs: dict[str, ModelRun]) -> dict[str, Any]:
    """Model runs as plain JSON: answer, status, figures and guard verdict per variant."""
    return {
        variant: {
            "model_version": run.model_version,
            "status": run.status,
            "decision": run.decision,
            "answer": run_answer(run),
            "raw_text": run.raw_text,
            "error": run.error,
            "latency_s": run.latency_s,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "truncated": run.truncated,
            "guard": run_guard(run),
            "run_id": run.id,
        }
        for variant, run in runs.items()
    }


def parse_case_text(case_json: str) -> Any:
    """A case from JSON text; raises InvalidCase naming the field (``<root>`` for broken JSON)."""
    try:
        data = json.loads(case_json or "")
    except json.JSONDecodeError as exc:
        raise InvalidCase(
            [("<root>", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from exc
    except RecursionError as exc:  # "[[[[..." deeper than the parser's stack
        raise InvalidCase([("<root>", "not valid JSON: nested too deeply")]) from exc
    return parse_case(data)


def compare_text(
    console: Console, request: gr.Request | None, case_json: str, source: str = "try"
) -> tuple[int, dict[str, ModelRun]]:
    """Validate, store and compare a pasted case; returns (case row id, runs by variant)."""
    user = require(console, request, "compare")
    with user_errors():
        case = parse_case_text(case_json)
    return compare_new_case(console.store, console.engine, case, source, user)


def open_case(
    console: Console, request: gr.Request | None, case_ref: str | int
) -> tuple[int, dict[str, ModelRun]]:
    """Runs of a stored case (computed now when missing); returns (case row id, runs by variant)."""
    user = require(console, request, "compare")
    with user_errors():
        with console.store.session() as s:
            case_pk = resolve_case_ref(s, case_ref)
    return case_pk, compare_case(console.store, console.engine, case_pk, user)


def review(
    console: Console,
    request: gr.Request | None,
    case_ref: str | int,
    action: str,
    answer: dict[str, Any] | str | None,
    note: str,
) -> dict[str, Any]:
    """Save a review of a case; returns ``{review_id, case_id, status}``."""
    if action not in REVIEW_ACTIONS:
        raise gr.Error(f"action: must be one of {', '.join(REVIEW_ACTIONS)} (got {action!r})")
    user = require(console, request, ACTION_PERMISSION[action])
    case_pk, runs = open_case(console, request, case_ref)
    with user_errors():
        saved = console.store.write(
            lambda s: submit_review(s, case_pk, action, user, runs=runs, answer=answer, note=note)
        )
    return {"review_id": saved.id, "case_pk": case_pk, "status": saved.status}


def export(console: Console, request: gr.Request | None) -> ExportResult:
    """Export the reviewed answers not exported yet (ops only)."""
    user = require(console, request, "export")
    with user_errors():
        with console.store.session(immediate=True) as s:  # one export at a time
            return export_reviews(
                s, user, console.export_dir, prompt_format_of(console.engine), console.eval_fingerprints
            )
