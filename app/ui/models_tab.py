"""Models tab (ops): adapter versions, retraining as a watched subprocess (with what a job would
train: the Runner's plan for the served model), champion vs challenger, promotion and rollback.
Handlers only translate: the work is db.versions', db.jobs' and engine.champion's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape
from typing import Any

import gradio as gr
import pandas as pd
from gradio.blocks import Block

from app.services.jobs import JobError, RetrainPlan, RetrainRequest, Runner
from app.services.versions import change_champion
from app.ui.state import Console, require, username_of
from db.exports import list_exports
from db.shadow import set_shadow_share
from db.users import role_allows, role_of_user
from db.versions import VersionError, get_version, list_versions
from engine.champion import comparison_markdown

REFRESH_S = 2.0  # how often the page asks the Runner about the running job
# what a job's status and progress stage read as on the page
RUNNING_WORDS = {"starting": "starting", "training": "training", "evaluating": "evaluating",
                 "done": "finishing (registering the new version)"}
SETTLED_WORDS = {"succeeded": "finished", "failed": "failed", "cancelled": "cancelled"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")  # colours, cursor moves, titles
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # what is left of control characters, bar \t \n


@dataclass
class ModelsTab:
    versions: gr.Dataframe
    job_status: gr.HTML


def versions_frame(console: Console) -> pd.DataFrame:
    """One row per version, newest first, with its eval-set headline figures when evaluated."""
    rows = []
    with console.store.session() as s:
        for v in list_versions(s):
            ev = (v.evaluation() or {}).get("datasets", {}).get("eval", {}).get("summary", {})
            ch = ev.get("challenger", {})
            rows.append([v.name, v.status, f"{ch['decision_accuracy']:.1%}" if ch else "",
                         f"{ch['violation_rate']:.1%}" if ch else "", v.created_by,
                         v.created_at.strftime("%Y-%m-%d %H:%M"), v.path])
    return pd.DataFrame(rows, columns=["version", "status", "eval accuracy", "violation rate", "by",
                                       "created", "path"])


def export_choices(console: Console) -> list[tuple[str, int]]:
    with console.store.session() as s:
        exports = list_exports(s)
    return [(f"#{e.id}: {e.count} examples, {e.created_at:%Y-%m-%d %H:%M} ({e.path})", e.id or 0)
            for e in exports]


def status_words(status: str, stage: str) -> str:
    """A job's state in words: the stage while it runs ("training"), else how it ended ("finished")."""
    if status == "running":
        return RUNNING_WORDS.get(stage, stage)
    return SETTLED_WORDS.get(status, status)


def plain_log(text: str) -> str:
    """A log tail as plain text: of a line a progress bar redrew with carriage returns only its last
    state is kept (as a terminal shows it), and colour codes and other control characters go."""
    lines = []
    for line in _ANSI.sub("", text or "").split("\n"):
        redrawn = [part for part in line.split("\r") if part.strip()]
        lines.append(_CONTROL.sub("", redrawn[-1] if redrawn else "").rstrip())
    return "\n".join(lines)


def job_html(runner: Runner) -> tuple[str, pd.DataFrame, str]:
    """(status line, loss frame, log tail) of the running job, else of the latest one."""
    jobs = runner.jobs(limit=1)
    if not jobs:
        return "No retraining job yet.", pd.DataFrame({"step": [], "loss": []}), ""
    view = runner.view(jobs[0])
    color = {"failed": "#b91c1c", "succeeded": "#15803d", "cancelled": "#92400e"}.get(view["status"], "")
    stage = status_words(view["status"], view["stage"])
    if view["status"] == "running" and view["stage"] == "evaluating" and view["eval"]:
        stage += f" {view['eval'].get('eval_stage', '')} {view['eval'].get('eval_done', 0)}" \
                 f"/{view['eval'].get('eval_total', 0)}"
    last = f", loss {view['loss'][-1][1]:.4f}" if view["loss"] else ""
    html = (f"<div class='job-status' style='color:{color}'>Job #{view['id']} → <b>{escape(view['version'])}"
            f"</b>: {escape(stage)}, step {view['step']}/{view['max_steps']}"
            f"{escape(last)}</div>")
    if view["status"] == "failed":
        html += "<div>The champion is unchanged. Log tail below.</div>"
    loss = pd.DataFrame(view["loss"], columns=["step", "loss"]) if view["loss"] else \
        pd.DataFrame({"step": [], "loss": []})
    return html, loss, plain_log(view["error"] or view["log_tail"])


def plan_markdown(plan: RetrainPlan) -> str:
    """What a job would train (Runner.plan), in one line: base, recipe, its main settings, the start."""
    if plan.refusal:
        return f"**Retraining is off:** {plan.refusal}"
    st = plan.settings
    try:
        steps, epochs = int(float(st.get("max_steps", -1))), float(st.get("num_train_epochs", 0))
    except (TypeError, ValueError):
        steps, epochs = -1, 0.0
    length = f"{steps} steps" if steps > 0 else f"{epochs:g} epoch{'' if epochs == 1 else 's'}"
    details = ", ".join([
        f"lr {st.get('learning_rate', '?')}", length,
        f"LoRA r {st.get('lora_r', '?')} alpha {st.get('lora_alpha', '?')} "
        f"on {st.get('lora_target_modules', '?')}",
        f"quantisation {st.get('quantization', '?')}", f"precision {st.get('precision', '?')}",
    ])
    whose = f" (the served model **{escape(plan.model)}**)" if plan.model else ""
    start = f"the champion **{escape(plan.start_version)}** (`{plan.start}`)" if plan.start_version \
        else "a fresh adapter on the base"
    what = "A DPO job (reviewed answers preferred over those they replaced)" if plan.method == "dpo" \
        else "A job"
    line = (f"{what} trains on base `{plan.base}`{whose} with recipe `{plan.recipe or 'none'}` "
            f"({escape(details)}), starting from {start}.")
    return line + (f"\n\n**Note:** {escape(plan.note)}" if plan.note else "")


def create_models_tab(console: Console, runner: Runner) -> ModelsTab:
    """Declare the Models tab's widgets and wire its events."""
    gr.Markdown("Adapter versions. New ones arrive as **challenger**; promote one after comparing it "
                "with the champion, or roll back to any earlier version. Ops only.")
    versions = gr.Dataframe(interactive=False, label="Versions", elem_id="models-versions")
    with gr.Accordion("Retrain", open=True):
        exports = gr.CheckboxGroup(label="Exports of reviewer corrections", elem_id="models-exports")
        with gr.Row():
            base_weight = gr.Number(1.0, label="weight of the base training set", minimum=0)
            corr_weight = gr.Number(3.0, label="weight of the corrections", minimum=0)
            holdout = gr.Slider(0.0, 0.5, 0.2, step=0.05, label="share of corrections held out")
            init = gr.Radio(["champion", "base"], value="champion",
                            label="start from (champion: continue it; base: a fresh adapter)")
            method = gr.Radio(["sft", "dpo"], value="sft", elem_id="models-method",
                              label="method (sft: learn the corrected answers; dpo: prefer them over the "
                                    "model answers they replaced)")
        plan = gr.Markdown(plan_markdown(runner.plan("champion", "sft")), elem_id="models-plan")
        with gr.Row():
            start = gr.Button("Start retraining", variant="primary", elem_id="models-start")
            cancel = gr.Button("Cancel the job")
        job_status = gr.HTML(elem_id="models-job")
        loss = gr.LinePlot(x="step", y="loss", label="training loss", height=220)
        log = gr.Textbox(label="log tail", lines=8, max_lines=8, autoscroll=True)
    with gr.Accordion("Champion vs challenger", open=True):
        with gr.Row():
            pick = gr.Dropdown(label="version", choices=[], elem_id="models-pick")
            promote_btn = gr.Button("Promote to champion", variant="primary", elem_id="models-promote")
            rollback_btn = gr.Button("Roll back to this version", elem_id="models-rollback")
        verdict = gr.HTML(elem_id="models-verdict")
        compare = gr.Markdown(elem_id="models-compare")
    with gr.Accordion("Shadow mode", open=False):
        with gr.Row():
            share = gr.Slider(0.0, 1.0, 0.0, step=0.05, label="share of new cases also answered by the "
                              "newest challenger (variant 'challenger', shown in the case view)")
            save_share = gr.Button("Save share", elem_id="models-shadow-save")
        share_note = gr.Markdown()

    def job_view() -> dict[Block, Any]:
        status_html, loss_frame, tail = job_html(runner)
        return {job_status: status_html, loss: loss_frame, log: tail}

    def refresh(how: str, meth: str, request: gr.Request) -> dict[Block, Any]:
        require(console, request, "retrain")
        runner.refresh()
        frame = versions_frame(console)
        return {versions: frame, exports: gr.CheckboxGroup(choices=export_choices(console)),
                pick: gr.Dropdown(choices=list(frame["version"])),
                plan: plan_markdown(runner.plan(how, meth)), **job_view()}

    def show_plan(how: str, meth: str, request: gr.Request) -> str:
        require(console, request, "retrain")
        return plan_markdown(runner.plan(how, meth))

    def tick(request: gr.Request) -> dict[Block, Any]:
        with console.store.session() as s:  # no require(): a refusal every tick would flood the audit log
            allowed = role_allows(role_of_user(s, username_of(request)), "retrain")
        if not allowed:
            return gr.skip()  # one skip() leaves every output as it is
        runner.refresh()  # settles a finished job: its version appears in the table
        return {versions: versions_frame(console), **job_view()}

    def do_start(ids: list[int], bw: float, cw: float, share: float, how: str, meth: str,
                 request: gr.Request) -> dict[Block, Any]:
        actor = require(console, request, "retrain")
        try:
            runner.start(actor, RetrainRequest([int(i) for i in ids or []], float(bw), float(cw),
                                               float(share), how, meth))
        except JobError as exc:
            raise gr.Error(str(exc)) from exc
        return job_view()

    def do_cancel(request: gr.Request) -> dict[Block, Any]:
        actor = require(console, request, "retrain")
        active = runner.active()
        if active is None:
            raise gr.Error("no job is running")
        runner.cancel(actor, active.id or 0)
        return job_view()

    def show(name: str | None, request: gr.Request) -> str:
        require(console, request, "retrain")
        if not name:
            return ""
        with console.store.session() as s:
            v = get_version(s, name)
        ev = v.evaluation()
        return comparison_markdown(ev, name) if ev else f"{name} has no evaluation (the bundled version)."

    def change(name: str | None, how: str, start_from: str, meth: str,
               request: gr.Request) -> tuple[str, pd.DataFrame, str]:
        actor = require(console, request, "promote")
        if not name:
            raise gr.Error("version: pick one")
        try:
            served = change_champion(console.store, console.engine, actor, name, how)
        except VersionError as exc:
            return f"<div class='models-refused' style='color:#b91c1c'>{escape(str(exc))}</div>", \
                versions_frame(console), plan_markdown(runner.plan(start_from, meth))
        note = f"; the console now serves {served} as finetuned" if served else ""
        return f"<div class='models-ok'>{escape(name)} is the champion{escape(note)}.</div>", \
            versions_frame(console), plan_markdown(runner.plan(start_from, meth))  # a new champion to start

    start.click(do_start, [exports, base_weight, corr_weight, holdout, init, method],
                [job_status, loss, log], api_visibility="private")
    init.change(show_plan, [init, method], plan, api_visibility="private")
    method.change(show_plan, [init, method], plan, api_visibility="private")
    cancel.click(do_cancel, None, [job_status, loss, log], api_visibility="private")
    pick.change(show, pick, compare, api_visibility="private")
    def do_share(value: float, request: gr.Request) -> str:
        actor = require(console, request, "promote")
        with console.store.session() as s:
            set_shadow_share(s, actor, float(value))
        return f"Shadow share set to {float(value):.0%}."

    def do_promote(name: str | None, start_from: str, meth: str,
                   request: gr.Request) -> tuple[str, pd.DataFrame, str]:
        return change(name, "promote", start_from, meth, request)

    def do_rollback(name: str | None, start_from: str, meth: str,
                    request: gr.Request) -> tuple[str, pd.DataFrame, str]:
        return change(name, "rollback", start_from, meth, request)

    save_share.click(do_share, share, share_note, api_visibility="private")
    promote_btn.click(do_promote, [pick, init, method], [verdict, versions, plan], api_visibility="private")
    rollback_btn.click(do_rollback, [pick, init, method], [verdict, versions, plan], api_visibility="private")
    gr.Button("Refresh").click(refresh, [init, method],
                               [versions, exports, pick, plan, job_status, loss, log],
                               api_visibility="private")
    gr.Timer(REFRESH_S).tick(tick, None, [versions, job_status, loss, log], api_visibility="private",
                             show_progress="hidden")
    return ModelsTab(versions=versions, job_status=job_status)
