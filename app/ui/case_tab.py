"""Case tab: the case, its policy sections, base vs fine-tuned with the guard's verdicts, and the
review actions (approve, flag as ambiguous, correct), laid out to fit one screen with the action
bar always in view (CSS in :mod:`app.ui.look`). Roles are checked in :mod:`app.ui.actions`.

Inside the page a case travels as its integer row id (``gr.State``); only the case box and links
take text (``C-...`` id or ``#row``). Handlers return ``{component: value}``: what they leave out
stays as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any

import gradio as gr
from gradio.blocks import Block

from app.services.case_view import CaseView, case_view
from app.services.navigation import Prefetcher, neighbour_case
from app.ui import actions
from app.ui.diffs import correction_diff_html, model_diff_html
from app.ui.render import answer_html, case_html, policy_markdown
from app.ui.shortcuts import OPEN_CORRECTION_JS, REFUSAL_HTML
from app.ui.state import Console, username_of
from db.models import ModelRun
from policies import DECISIONS, RULE_IDS

Updates = dict[Block, Any]  # what a handler returns: the components it fills, with their values


@dataclass
class CaseWidgets:
    """The components the case view fills."""

    case_pk: gr.State
    case_panel: gr.HTML
    policy: gr.Markdown
    base_panel: gr.HTML
    ft_panel: gr.HTML
    note: gr.Textbox
    decision: gr.Dropdown
    reasoning: gr.Textbox
    customer_response: gr.Textbox
    next_action: gr.Textbox
    refs: gr.Dropdown
    from_run: gr.State
    status_msg: gr.HTML
    model_diff: gr.HTML
    review_diff: gr.HTML

    def all(self) -> list[gr.components.Component]:
        return list(vars(self).values())


@dataclass
class CaseTab:
    outputs: list[gr.components.Component]  # every component the handlers below may fill
    open: Callable[[int, gr.Request], Updates]  # (case row id, request) -> {component: value}
    open_ref: Callable[[str, gr.Request], Updates]  # (typed case id or #row, request) -> the same
    widgets: CaseWidgets
    act: Callable[[str], Callable[..., Updates]]  # review action -> the handler of its button
    gated: list[tuple[Block, str]]  # (component, the permission it needs to be shown)


# what the case panel says before a case is open (the answers' panels stay empty until then)
NO_CASE_HTML = (
    '<div class="no-case"><b>No case open.</b> Click a row in the Queue, type a case id '
    "(<code>C-...</code>) or its <code>#row</code> above, or press <kbd>j</kbd> for the next case that "
    "needs a human.</div>"
)


def _message(text: str, ok: bool = True) -> str:
    colour = "#15803d" if ok else "#b91c1c"
    return f"<div class='review-status' style='color:{colour}'>{escape(text)}</div>"


def render(w: CaseWidgets, cv: CaseView, message: str = "", form: dict[str, Any] | None = None) -> Updates:
    """Every widget of the view for ``cv``: case, policy, both answers, an empty note, the correction
    form (``form``, else the answer a correction starts from), a message, the base vs fine-tuned diff
    and the viewer's latest visible correction vs the model answer it started from. Every per-case
    input is filled here, so nothing typed for one case carries over to the next."""
    draft, shadow, correction = form or cv.draft, cv.shadow, cv.correction
    ft_html = answer_html("Fine-tuned", cv.runs.get("finetuned"), cv.consistency("finetuned"))
    if shadow:
        ft_html += answer_html(f"Challenger (shadow, {shadow.model_version})", shadow)
    return {
        w.case_pk: cv.case_pk,
        w.case_panel: case_html(cv.case, cv.status, cv.case_pk, cv.record.in_eval_set),
        w.policy: policy_markdown(cv.case),
        w.base_panel: answer_html("Base", cv.runs.get("base"), cv.consistency("base")),
        w.ft_panel: ft_html,
        w.note: "",
        w.decision: draft.get("decision"),
        w.reasoning: draft.get("reasoning", ""),
        w.customer_response: draft.get("customer_response", ""),
        w.next_action: draft.get("next_action", ""),
        w.refs: draft.get("policy_refs", []),
        w.from_run: cv.start.id if cv.start else None,
        w.status_msg: message,
        w.model_diff: model_diff_html(cv.answer("base"), cv.answer("finetuned")),
        w.review_diff: correction_diff_html(
            correction.start, correction.corrected, correction.reviewer, correction.review_id
        )
        if correction
        else "",
    }


def create_case_tab(console: Console) -> CaseTab:
    """Declare the Case tab's widgets and wire its events. One case fits one screen (1440x900): the
    facts strip and the customer message, both answers with their guard verdicts next to the
    correction form, and the action bar; the diffs and the policy come below it (:mod:`app.ui.look`
    bounds the panels and keeps the bar in view)."""
    with gr.Row(elem_id="case-top", equal_height=True):
        case_ref = gr.Textbox(
            show_label=False, placeholder="Case: C-... id or #row", container=False, scale=0, min_width=280,
            elem_id="case-ref",
        )
        open_btn = gr.Button("Open case", scale=0, min_width=110, elem_id="open-case")
        gr.HTML("<small>Press <kbd>?</kbd> for keyboard shortcuts.</small>", scale=1, elem_id="case-hint")
    prefetcher = Prefetcher(console.store, console.engine, enabled=console.prefetch)
    case_pk = gr.State(None)
    from_run = gr.State(None)
    case_panel = gr.HTML(NO_CASE_HTML, elem_id="case-panel")
    with gr.Row(elem_id="case-work"):
        base_panel = gr.HTML(elem_id="base-answer")
        ft_panel = gr.HTML(elem_id="ft-answer")
        with gr.Accordion("Correct the answer", open=True, elem_id="correction-form") as correction_form:
            with gr.Row():
                decision = gr.Dropdown(list(DECISIONS), label="Decision", elem_id="corr-decision")
                refs = gr.Dropdown(list(RULE_IDS), multiselect=True, label="Policy refs", elem_id="corr-refs")
            reasoning = gr.Textbox(label="Reasoning", lines=2, max_lines=3, elem_id="corr-reasoning")
            customer_response = gr.Textbox(
                label="Customer response", lines=2, max_lines=3, elem_id="corr-response"
            )
            next_action = gr.Textbox(label="Next action", elem_id="corr-next")
            correct_btn = gr.Button("Save correction", variant="primary", elem_id="save-correction")
    with gr.Column(elem_id="action-bar"):  # sticky (app/ui/look.py): always in view
        with gr.Row(elem_id="action-buttons"):
            note = gr.Textbox(
                show_label=False, placeholder="Note (required to flag)", container=False, scale=3,
                min_width=200, elem_id="review-note",
            )
            approve_base = gr.Button("Approve base", scale=0, min_width=120, elem_id="approve-base")
            approve_ft = gr.Button("Approve fine-tuned", scale=0, min_width=150, elem_id="approve-ft")
            flag_btn = gr.Button("Flag as ambiguous", scale=0, min_width=150, elem_id="flag-case")
            # opens the form and focuses the reasoning, as the c key does (no server call)
            correct_open = gr.Button("Correct the answer", scale=0, min_width=150, elem_id="correct-case")
            prev_btn = gr.Button("← Previous (k)", scale=0, min_width=120, elem_id="case-prev")
            next_btn = gr.Button("Next (j) →", scale=0, min_width=110, elem_id="case-next")
        with gr.Row(elem_id="action-status"):
            status_msg = gr.HTML(elem_id="review-message")
            gr.HTML(REFUSAL_HTML, elem_id="shortcut-refusal-box")  # filled by the shortcuts' script
    # below the bar, for a closer look (the bar stays pinned to the window's bottom edge)
    with gr.Accordion("Base vs fine-tuned", open=True):
        model_diff = gr.HTML(elem_id="model-diff")
    review_diff = gr.HTML(elem_id="review-diff")
    with gr.Accordion("Applicable policy sections", open=False):
        policy = gr.Markdown()
    w = CaseWidgets(
        case_pk=case_pk,
        case_panel=case_panel,
        policy=policy,
        base_panel=base_panel,
        ft_panel=ft_panel,
        note=note,
        decision=decision,
        reasoning=reasoning,
        customer_response=customer_response,
        next_action=next_action,
        refs=refs,
        from_run=from_run,
        status_msg=status_msg,
        model_diff=model_diff,
        review_diff=review_diff,
    )
    outputs = w.all()

    def only_message(message: str) -> Updates:
        """Leave every output as it is except the status message."""
        return {status_msg: message}

    history: dict[str, list[int]] = {}  # per browser session: the cases opened, for "previous"

    def opened(pk: int, runs: dict[str, ModelRun], request: gr.Request) -> Updates:
        user = username_of(request)
        seen = history.setdefault(getattr(request, "session_hash", None) or "", [])
        if not seen or seen[-1] != pk:
            seen.append(pk)
        prefetcher.after_open(pk, user or "anonymous")
        return render(w, case_view(console.store, pk, runs, user))

    def open_pk(pk: int, request: gr.Request) -> Updates:
        """Open the case with row id ``pk``."""
        return opened(pk, actions.open_case(console, request, pk), request)

    def open_case(ref: str, request: gr.Request) -> Updates:
        """Open the case typed in the case box (``C-...`` id or ``#row``)."""
        pk, runs = actions.open_case_ref(console, request, ref)
        return opened(pk, runs, request)

    def move(step: int) -> Callable[..., Updates]:
        def handler(pk: int | None, request: gr.Request) -> Updates:
            seen = history.get(getattr(request, "session_hash", None) or "", [])
            if step < 0 and len(seen) >= 2:  # previous: the case opened before this one
                seen.pop()
                return open_pk(seen.pop(), request)
            viewer = username_of(request)
            if step > 0:
                target = prefetcher.next_after(pk, viewer)
            else:
                target = neighbour_case(console.store, console.engine, pk, step, viewer=viewer)
            if target is None:
                return only_message(_message("No more cases.", ok=False))
            return open_pk(target, request)

        return handler

    def act(action: str) -> Callable[..., Updates]:
        def handler(
            pk: int | None,
            note_v: str,
            decision_v: str | None,
            reasoning_v: str,
            response_v: str,
            next_v: str,
            refs_v: list[str] | None,
            request: gr.Request,
        ) -> Updates:
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
                saved = actions.review(console, request, pk, action, answer, note_v)
            except gr.Error as exc:  # refused: keep the form as typed, say why
                return only_message(_message(f"Not saved: {exc.message}", ok=False))
            message = _message(f"Saved review #{saved.review_id} ({saved.status}).")
            if saved.warning:  # saved all the same; the reviewer sees why it may stay out of training
                message += f"<div class='review-warning' style='color:#b45309'>{escape(saved.warning)}</div>"
            # re-rendered from the runs the review was judged against: the case is opened once
            cv = case_view(console.store, pk, saved.runs, username_of(request))
            mine = cv.correction if cv.correction and cv.correction.review_id == saved.review_id else None
            # a saved correction stays in the form: the view shows what was saved
            return render(w, cv, message, form=mine.corrected if mine else None)

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
    correct_open.click(None, js=OPEN_CORRECTION_JS)
    # the bar's button and the form share the label "Correct the answer" and the permission
    gated: list[tuple[Block, str]] = [
        (approve_base, "approve"), (approve_ft, "approve"), (flag_btn, "flag"), (correction_form, "correct"),
        (correct_open, "correct"),
    ]
    return CaseTab(outputs=outputs, open=open_pk, open_ref=open_case, widgets=w, act=act, gated=gated)
