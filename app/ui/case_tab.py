"""Case tab: the case, its policy sections, base vs fine-tuned with the guard's verdicts, and the
review actions (approve, flag as ambiguous, correct). Roles are checked in :mod:`app.ui.actions`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any

import gradio as gr

from app.services.navigation import Prefetcher, neighbour_case
from app.services.review_log import latest_correction
from app.services.reviews import better_run
from app.services.second_opinion import visible_status
from app.ui import actions
from app.ui.diffs import correction_diff_html, model_diff_html
from app.ui.render import answer_html, case_html, policy_markdown
from app.ui.state import Console, username_of
from db.cases import case_of, get_case, run_answer
from db.models import ModelRun
from db.shadow import shadow_run
from policies import DECISIONS, RULE_IDS, expected_decision


@dataclass
class CaseTab:
    outputs: list[gr.components.Component]  # what opening a case fills, in :func:`view` order
    open: Callable[..., tuple[Any, ...]]  # (case_ref, request) -> values for ``outputs``


def _message(text: str, ok: bool = True) -> str:
    colour = "#15803d" if ok else "#b91c1c"
    return f"<div class='review-status' style='color:{colour}'>{escape(text)}</div>"


def view(
    console: Console, case_pk: int, runs: dict[str, ModelRun], message: str = "", viewer: str | None = None
) -> tuple[Any, ...]:
    """Values for every output of the tab: case, policy, both answers, the correction form, a message,
    the base vs fine-tuned diff and the viewer's latest visible correction vs its model answer."""
    with console.store.session() as s:
        record = get_case(s, case_pk)
        status = visible_status(s, case_pk, viewer)  # a hidden second-opinion verdict stays hidden
        correction = latest_correction(s, case_pk, viewer)
        shadow = shadow_run(s, case_pk)  # the challenger's answer, when shadow mode routed this case
    case = case_of(record)
    start = better_run(runs, expected_decision(case).decision)
    draft = (run_answer(start) if start else None) or {}
    return (
        case_pk,
        case_html(case, status, case_pk, record.in_eval_set),
        policy_markdown(case),
        answer_html("Base", runs.get("base")),
        answer_html("Fine-tuned", runs.get("finetuned"))
        + (answer_html(f"Challenger (shadow, {shadow.model_version})", shadow) if shadow else ""),
        draft.get("decision"),
        draft.get("reasoning", ""),
        draft.get("customer_response", ""),
        draft.get("next_action", ""),
        draft.get("policy_refs", []),
        start.id if start else None,
        message,
        model_diff_html(*(run_answer(runs[v]) if v in runs else None for v in ("base", "finetuned"))),
        correction_diff_html(
            correction.start, correction.corrected, correction.reviewer, correction.review_id
        )
        if correction
        else "",
    )


def create_case_tab(console: Console) -> CaseTab:
    """Declare the Case tab's widgets and wire its events."""
    with gr.Row():
        case_ref = gr.Textbox(label="Case (C-... id or #row)", scale=3, elem_id="case-ref")
        open_btn = gr.Button("Open case", scale=1, elem_id="open-case")
        prev_btn = gr.Button("← Previous (k)", scale=1, elem_id="case-prev")
        next_btn = gr.Button("Next (j) →", scale=1, elem_id="case-next")
    gr.HTML("<small>Press <kbd>?</kbd> for keyboard shortcuts.</small>")
    prefetcher = Prefetcher(console.store, console.engine, enabled=console.prefetch)
    case_pk = gr.State(None)
    from_run = gr.State(None)
    status_msg = gr.HTML(elem_id="review-message")
    case_panel = gr.HTML(elem_id="case-panel")
    with gr.Accordion("Applicable policy sections", open=False):
        policy = gr.Markdown()
    with gr.Row(elem_id="answers"):
        base_panel = gr.HTML(elem_id="base-answer")
        ft_panel = gr.HTML(elem_id="ft-answer")
    with gr.Accordion("Base vs fine-tuned", open=True):
        model_diff = gr.HTML(elem_id="model-diff")
    gr.Markdown("### Review")
    note = gr.Textbox(label="Note (required to flag)", elem_id="review-note")
    with gr.Row():
        approve_base = gr.Button("Approve base", elem_id="approve-base")
        approve_ft = gr.Button("Approve fine-tuned", elem_id="approve-ft")
        flag_btn = gr.Button("Flag as ambiguous", elem_id="flag-case")
    with gr.Accordion("Correct the answer", open=True):
        decision = gr.Dropdown(list(DECISIONS), label="Decision", elem_id="corr-decision")
        reasoning = gr.Textbox(label="Reasoning", lines=2, elem_id="corr-reasoning")
        customer_response = gr.Textbox(label="Customer response", lines=3, elem_id="corr-response")
        next_action = gr.Textbox(label="Next action", elem_id="corr-next")
        refs = gr.Dropdown(list(RULE_IDS), multiselect=True, label="Policy refs", elem_id="corr-refs")
        correct_btn = gr.Button("Save correction", variant="primary", elem_id="save-correction")
    review_diff = gr.HTML(elem_id="review-diff")
    outputs = [
        case_pk,
        case_panel,
        policy,
        base_panel,
        ft_panel,
        decision,
        reasoning,
        customer_response,
        next_action,
        refs,
        from_run,
        status_msg,
        model_diff,
        review_diff,
    ]

    def only_message(message: str) -> tuple[Any, ...]:
        """Leave every output as it is except the status message."""
        return tuple(message if o is status_msg else gr.update() for o in outputs)

    history: dict[str, list[int]] = {}  # per browser session: the cases opened, for "previous"

    def open_case(ref: str, request: gr.Request) -> tuple[Any, ...]:
        pk, runs = actions.open_case(console, request, ref)
        user = username_of(request)
        seen = history.setdefault(getattr(request, "session_hash", None) or "", [])
        if not seen or seen[-1] != pk:
            seen.append(pk)
        prefetcher.after_open(pk, user or "anonymous")
        return view(console, pk, runs, viewer=user)

    def move(step: int) -> Callable[..., tuple[Any, ...]]:
        def handler(pk: int | None, request: gr.Request) -> tuple[Any, ...]:
            seen = history.get(getattr(request, "session_hash", None) or "", [])
            if step < 0 and len(seen) >= 2:  # previous: the case opened before this one
                seen.pop()
                return open_case(f"#{seen.pop()}", request)
            viewer = username_of(request)
            if step > 0:
                target = prefetcher.next_after(pk, viewer)
            else:
                target = neighbour_case(console.store, console.engine, pk, step, viewer=viewer)
            if target is None:
                return only_message(_message("No more cases.", ok=False))
            return open_case(f"#{target}", request)

        return handler

    def act(action: str) -> Callable[..., tuple[Any, ...]]:
        def handler(
            pk: int | None,
            note_v: str,
            decision_v: str | None,
            reasoning_v: str,
            response_v: str,
            next_v: str,
            refs_v: list[str] | None,
            request: gr.Request,
        ) -> tuple[Any, ...]:
            if pk is None:
                return only_message(_message("Open a case first.", ok=False))
            answer = None
            if action == "correct":
                answer = {
                    "decision": decision_v,
                    "reasoning": reasoning_v,
                    "customer_response": response_v,
                    "next_action": next_v,
                    "policy_refs": list(refs_v or []),
                }
            try:
                saved = actions.review(console, request, f"#{pk}", action, answer, note_v)
            except gr.Error as exc:  # refused: keep the form as typed, say why
                return only_message(_message(f"Not saved: {exc.message}", ok=False))
            _, runs = actions.open_case(console, request, f"#{pk}")
            message = _message(f"Saved review #{saved['review_id']} ({saved['status']}).")
            return view(console, pk, runs, message, viewer=username_of(request))

        return handler

    review_inputs = [case_pk, note, decision, reasoning, customer_response, next_action, refs]
    open_btn.click(open_case, [case_ref], outputs, api_visibility="private")
    case_ref.submit(open_case, [case_ref], outputs, api_visibility="private")
    prev_btn.click(move(-1), [case_pk], outputs, api_visibility="private")
    next_btn.click(move(1), [case_pk], outputs, api_visibility="private")
    for button, action in (
        (approve_base, "approve_base"),
        (approve_ft, "approve_finetuned"),
        (flag_btn, "flag"),
        (correct_btn, "correct"),
    ):
        button.click(act(action), review_inputs, outputs, api_visibility="private")
    return CaseTab(outputs=outputs, open=open_case)
