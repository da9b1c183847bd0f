"""Handler cores shared by the tabs and the API endpoints: check the caller's role, call ``db``,
translate the result. Each raises gr.Error with a message naming the field at fault."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.services.answers import compare_case, compare_new_case, prompt_format_of
from app.services.exports import ExportResult, export_reviews
from app.services.idempotency import check_key, key_is_known, keyed_write
from app.services.reviews import REVIEW_ACTIONS, submit_review
from app.ui.state import ACTION_PERMISSION, Console, require, user_errors
from db.cases import get_case, resolve_case_ref, run_answer, run_guard
from db.models import ModelRun
from engine.consistency import ConsistencyIssue
from policies import InvalidCase, parse_case

MAX_CASE_JSON_CHARS = 2_000_000  # as the request-body limit: each field has its own bound, which names it


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
    if not isinstance(case_json, str | None):
        raise InvalidCase([("case_json", f"must be JSON text (got {type(case_json).__name__})")])
    if case_json is not None and len(case_json) > MAX_CASE_JSON_CHARS:
        raise InvalidCase([("case_json", f"at most {MAX_CASE_JSON_CHARS} characters (got {len(case_json)})")])
    try:
        data = json.loads(case_json or "")
    except json.JSONDecodeError as exc:
        raise InvalidCase(
            [("<root>", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from exc
    except RecursionError as exc:  # "[[[[..." deeper than the parser's stack
        raise InvalidCase([("<root>", "not valid JSON: nested too deeply")]) from exc
    except ValueError as exc:  # a number of more than 4,300 digits
        raise InvalidCase([("<root>", f"not valid JSON: {exc}")]) from exc
    return parse_case(data)


def compare_text(
    console: Console, request: gr.Request | None, case_json: str, source: str = "try"
) -> tuple[int, dict[str, ModelRun]]:
    """Validate, store and compare a pasted case; returns (case row id, runs by variant)."""
    user = require(console, request, "compare")
    with user_errors():
        case = parse_case_text(case_json)
        console.quotas.take(user, "case")
        # a case_id already stored with other content is refused here, naming the differing fields
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
    replayed: bool = False  # True when an idempotency key returned an earlier result
    # The saved answer's consistency issues (issue 18): warnings, the review was saved all the same;
    # () when it passed, or for a flag (no answer to check).
    consistency_issues: tuple[ConsistencyIssue, ...] = ()

    @property
    def warning(self) -> str:
        """The consistency issues as one message for the reviewer ("" when there are none)."""
        if not self.consistency_issues:
            return ""
        return ("Consistency warnings (the answer stays out of training data unless an export includes "
                "inconsistent answers): " + " ".join(i.message for i in self.consistency_issues))

    def payload(self) -> dict[str, Any]:
        """What the API answers: ``{review_id, case_pk, status, consistency_issues}`` (the issues as
        ``{"code", "message"}`` objects, [] when none)."""
        return {"review_id": self.review_id, "case_pk": self.case_pk, "status": self.status,
                "consistency_issues": [i.to_dict() for i in self.consistency_issues]}


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
    *,
    revision: bool = True,
) -> Reviewed:
    """Save a review of stored case ``case_pk``; the case is opened once, its runs come back.
    The case view's buttons are explicit acts on the case shown, so they revise by default."""
    user = _reviewer(console, request, action)
    runs = open_case(console, request, case_pk)
    return _save(console, user, case_pk, runs, action, answer, note, revision=revision)


def review_ref(
    console: Console,
    request: gr.Request | None,
    case_ref: str,
    action: str,
    answer: dict[str, Any] | str | None,
    note: str,
    *,
    idempotency_key: str = "",
    revision: bool = False,
) -> Reviewed:
    """Save a review of a case typed as text (``C-...`` id or ``#row``), for the API.

    ``idempotency_key``: a retry with the same key returns the first result and writes nothing.
    ``revision``: replace the caller's earlier review of the case (else a second one is refused)."""
    user = _reviewer(console, request, action)
    case_pk, runs = open_case_ref(console, request, case_ref)
    return _save(console, user, case_pk, runs, action, answer, note, idempotency_key, revision)


def _save(
    console: Console,
    user: str,
    case_pk: int,
    runs: dict[str, ModelRun],
    action: str,
    answer: dict[str, Any] | str | None,
    note: str,
    idempotency_key: str = "",
    revision: bool = False,
) -> Reviewed:
    def write(s: Any) -> dict[str, Any]:
        saved = submit_review(
            s, case_pk, action, user, runs=runs, answer=answer, note=note, revision=revision
        )
        issues = tuple(ConsistencyIssue.from_dict(i) for i in saved.consistency_issues or ())
        return Reviewed(saved.id or 0, case_pk, saved.status, runs, consistency_issues=issues).payload()

    arguments = {"case_pk": case_pk, "action": action, "answer": answer, "note": note, "revision": revision}
    with user_errors():
        key = check_key(idempotency_key)
        if not (key and key_is_known(console.store, user, key)):  # a retry spends no quota
            console.quotas.take(user, "review")
        first, replayed = keyed_write(console.store, user, key, "submit_review", arguments, write)
    issues = tuple(ConsistencyIssue.from_dict(i) for i in first.get("consistency_issues", ()))
    return Reviewed(first["review_id"], first["case_pk"], first["status"], runs, replayed, issues)


def export(console: Console, request: gr.Request | None, include_inconsistent: bool = False) -> ExportResult:
    """Export the reviewed answers not exported yet (ops only). ``include_inconsistent``: export the
    answers with consistency issues too, marked in their rows (else they are skipped and counted)."""
    user = require(console, request, "export")
    with user_errors():
        # one export at a time, publishing its files included, across console processes too
        with console.store.exclusive("export"), console.store.session(immediate=True) as s:
            return export_reviews(
                s, user, console.export_dir, prompt_format_of(console.engine), console.eval_fingerprints,
                include_inconsistent=include_inconsistent,
            )
