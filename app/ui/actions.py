"""Handler cores shared by the tabs and the API endpoints: check the caller's role, call ``db``,
translate the result. Each raises gr.Error with a message naming the field at fault."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.services.answers import compare_case, compare_new_case, prompt_format_of
from app.services.exports import ExportResult, export_reviews
from app.services.reviews import REVIEW_ACTIONS, submit_review
from app.ui.state import ACTION_PERMISSION, Console, require, user_errors
from db.cases import get_case, resolve_case_ref, run_answer, run_guard
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


def open_case(console: Console, request: gr.Request | None, case_pk: int) -> dict[str, ModelRun]:
    """Runs of stored case ``case_pk`` by variant (computed now when missing)."""
    user = require(console, request, "compare")
    with user_errors():
        with console.store.session() as s:
            get_case(s, case_pk)  # an unknown row id: the message resolve_case_ref gives for "#12"
    return compare_case(console.store, console.engine, case_pk, user)


def open_case_ref(
    console: Console, request: gr.Request | None, case_ref: str
) -> tuple[int, dict[str, ModelRun]]:
    """Runs of a case typed as text (``C-...`` id, or ``#12`` / ``12`` for a row id); returns
    (case row id, runs by variant). Only text entry points (the case box, links, the API) use it."""
    user = require(console, request, "compare")
    with user_errors():
        with console.store.session() as s:
            case_pk = resolve_case_ref(s, case_ref)
    return case_pk, compare_case(console.store, console.engine, case_pk, user)


@dataclass(frozen=True)
class Reviewed:
    """A saved review, with the runs it was judged against (what the case view re-renders)."""

    review_id: int
    case_pk: int
    status: str
    runs: dict[str, ModelRun]

    def payload(self) -> dict[str, Any]:
        """What the API answers: ``{review_id, case_pk, status}``."""
        return {"review_id": self.review_id, "case_pk": self.case_pk, "status": self.status}


def _reviewer(console: Console, request: gr.Request | None, action: str) -> str:
    if action not in REVIEW_ACTIONS:
        raise gr.Error(f"action: must be one of {', '.join(REVIEW_ACTIONS)} (got {action!r})")
    return require(console, request, ACTION_PERMISSION[action])


def review(
    console: Console,
    request: gr.Request | None,
    case_pk: int,
    action: str,
    answer: dict[str, Any] | str | None,
    note: str,
) -> Reviewed:
    """Save a review of stored case ``case_pk``; the case is opened once, its runs come back."""
    user = _reviewer(console, request, action)
    runs = open_case(console, request, case_pk)
    return _save(console, user, case_pk, runs, action, answer, note)


def review_ref(
    console: Console,
    request: gr.Request | None,
    case_ref: str,
    action: str,
    answer: dict[str, Any] | str | None,
    note: str,
) -> Reviewed:
    """Save a review of a case typed as text (``C-...`` id or ``#row``), for the API."""
    user = _reviewer(console, request, action)
    case_pk, runs = open_case_ref(console, request, case_ref)
    return _save(console, user, case_pk, runs, action, answer, note)


def _save(
    console: Console,
    user: str,
    case_pk: int,
    runs: dict[str, ModelRun],
    action: str,
    answer: dict[str, Any] | str | None,
    note: str,
) -> Reviewed:
    with user_errors():
        saved = console.store.write(
            lambda s: submit_review(s, case_pk, action, user, runs=runs, answer=answer, note=note)
        )
    return Reviewed(saved.id or 0, case_pk, saved.status, runs)


def export(console: Console, request: gr.Request | None) -> ExportResult:
    """Export the reviewed answers not exported yet (ops only)."""
    user = require(console, request, "export")
    with user_errors():
        with console.store.session(immediate=True) as s:  # one export at a time
            return export_reviews(
                s, user, console.export_dir, prompt_format_of(console.engine), console.eval_fingerprints
            )
