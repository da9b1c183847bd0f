"""Models tab (ops): adapter versions, retraining as a watched subprocess (with what a job would
train: the Runner's plan for the served model), champion vs challenger, promotion and rollback.
Handlers only translate: the work is db.versions', db.jobs' and engine.champion's."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from gradio.blocks import Block

from app.services.jobs import JobError, NoHoldout, RetrainPlan, RetrainRequest, Runner
from app.services.metrics import evaluation_reports, report_figures
from app.services.versions import change_champion
from app.ui.state import Console, allows, require
from db.exports import list_exports
from db.shadow import set_shadow_share
from db.versions import VersionError, get_version, list_versions
from engine.champion import comparison_markdown

REFRESH_S = 2.0  # how often the page asks the Runner about the running job
NOT_EVALUATED = "not evaluated yet"
# what a job's status and progress stage read as on the page
RUNNING_WORDS = {"starting": "starting", "training": "training", "evaluating": "evaluating",
                 "done": "finishing (registering the new version)"}
SETTLED_WORDS = {"succeeded": "finished", "failed": "failed", "cancelled": "cancelled"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")  # colours, cursor moves, titles
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # what is left of control characters, bar \t \n


@dataclass
class ModelsTab:
    """The tab's widgets the page needs, and its refresh: ``tab.select(t.refresh, t.refresh_inputs,
    t.refresh_outputs)`` brings the export list, the versions and the version dropdown up to date
    when ops come back to the tab (after an export in the Export tab, say)."""

    versions: gr.Dataframe
    job_status: gr.HTML
    refresh: Callable[..., dict[Block, Any]]
    refresh_inputs: list[Block]
    refresh_outputs: list[Block]


def _eval_summary(evaluation: dict[str, Any] | None, side: str) -> dict[str, Any]:
    """One side's (champion / challenger) eval-set summary of a stored comparison ({} when absent)."""
    return ((evaluation or {}).get("datasets", {}).get("eval", {}).get("summary", {}) or {}).get(side) or {}


def eval_headlines(versions: list[Any]) -> dict[str, dict[str, Any]]:
    """Each version's eval-set summary: from its own evaluation (as the challenger), else from the
    newest evaluation that compared a challenger against it (as the champion: how the bundled ft-v1
    gets its figures). A version in neither has none."""
    out: dict[str, dict[str, Any]] = {}
    for v in versions:  # newest first: the newest comparison against a champion wins
        evaluation = v.evaluation()
        own = _eval_summary(evaluation, "challenger")
        if own:
            out[v.name] = own
        against = (evaluation or {}).get("champion_version")
        if against and against not in out and _eval_summary(evaluation, "champion"):
            out[against] = _eval_summary(evaluation, "champion")
    return out


def versions_frame(console: Console, reports_root: Path = Path(".")) -> pd.DataFrame:
    """One row per version, newest first, with its eval-set headline figures: from the stored
    comparison that measured it; for the champion no comparison measured yet (the bundled ft-v1
    before its first challenger), from the newest ``scripts/evaluate.py`` eval report of the model
    version it is served as, marked "(report)"; else "not evaluated yet"."""
    with console.store.session() as s:
        versions = list_versions(s)
        figures = eval_headlines(versions)
        rows = []
        for v in versions:
            ev = figures.get(v.name)
            accuracy = f"{ev['decision_accuracy']:.1%}" if ev else NOT_EVALUATED
            violations = f"{ev['violation_rate']:.1%}" if ev else NOT_EVALUATED
            if not ev and v.status == "champion" and (report := _champion_report(console, reports_root)):
                accuracy = f"{report['decision accuracy']:.1%} (report)"
                violations = f"{report['violation rate']:.1%} (report)"
            rows.append([v.name, v.status, accuracy, violations, v.created_by,
                         v.created_at.strftime("%Y-%m-%d %H:%M"), v.path])
    return pd.DataFrame(rows, columns=["version", "status", "eval accuracy", "violation rate", "by",
                                       "created", "path"])


def _champion_report(console: Console, reports_root: Path) -> dict[str, Any] | None:
    """The newest eval report of the model version the champion is served as (None: no engine, or
    no report of it)."""
    engine = console.engine
    if engine is None or "finetuned" not in getattr(engine, "variants", ()):
        return None
    return report_figures(evaluation_reports(reports_root), engine.model_version("finetuned"))


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


def latest_job_key(runner: Runner) -> str:
    """``"id:status"`` of the latest job ("" when none): the tick compares it to see a job settle."""
    jobs = runner.jobs(limit=1)
    return f"{jobs[0].id}:{jobs[0].status}" if jobs else ""


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
    if st.get("max_train_minutes") is not None:
        length += f" (at most {st['max_train_minutes']} minutes)"
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
            no_holdout = gr.Checkbox(False, label="train without a held-out slice",
                                     elem_id="models-no-holdout",
                                     info="needed when no correction would be held out: the challenger "
                                          "is then compared on the frozen sets only")
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
    seen_job = gr.State("")  # "id:status" of the latest job this page has shown (a settled job
    # refreshes the lists once)
    with gr.Accordion("Shadow mode", open=False):
        with gr.Row():
            share = gr.Slider(0.0, 1.0, 0.0, step=0.05, label="share of new cases also answered by the "
                              "newest challenger (variant 'challenger', shown in the case view)")
            save_share = gr.Button("Save share", elem_id="models-shadow-save")
        share_note = gr.Markdown()

    def job_view() -> dict[Block, Any]:
        status_html, loss_frame, tail = job_html(runner)
        return {job_status: status_html, loss: loss_frame, log: tail}

    def lists() -> dict[Block, Any]:
        """The lists another tab or a finished job changes: versions, exports, the version dropdown."""
        frame = versions_frame(console)
        return {versions: frame, exports: gr.CheckboxGroup(choices=export_choices(console)),
                pick: gr.Dropdown(choices=list(frame["version"]))}

    def refresh(how: str, meth: str, request: gr.Request) -> dict[Block, Any]:
        require(console, request, "retrain")
        runner.refresh()
        return {**lists(), plan: plan_markdown(runner.plan(how, meth)), **job_view(),
                seen_job: latest_job_key(runner)}

    def show_plan(how: str, meth: str, request: gr.Request) -> str:
        require(console, request, "retrain")
        return plan_markdown(runner.plan(how, meth))

    def tick(seen: str, request: gr.Request) -> dict[Block, Any]:
        if not allows(console.store, request, "retrain"):  # not require(): a tick refuses nothing
            return gr.skip()  # one skip() leaves every output as it is
        runner.refresh()  # settles a finished job: its version appears in the table
        key = latest_job_key(runner)
        if key != seen and not key.endswith(":running"):  # a job settled: its version can be picked
            return {**lists(), **job_view(), seen_job: key}
        return {versions: versions_frame(console), **job_view(), seen_job: key}

    def do_start(ids: list[int], bw: float, cw: float, share: float, without_holdout: bool, how: str,
                 meth: str, request: gr.Request) -> dict[Block, Any]:
        actor = require(console, request, "retrain")
        try:
            runner.start(actor, RetrainRequest([int(i) for i in ids or []], float(bw), float(cw),
                                               float(share), how, meth, bool(without_holdout)))
        except NoHoldout as exc:
            raise gr.Error(f"{exc} (tick \"train without a held-out slice\")", print_exception=False) from exc
        except JobError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc
        return {**job_view(), seen_job: latest_job_key(runner)}

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

    start.click(do_start, [exports, base_weight, corr_weight, holdout, no_holdout, init, method],
                [job_status, loss, log, seen_job], api_visibility="private")
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
    refresh_outputs = [versions, exports, pick, plan, job_status, loss, log, seen_job]
    gr.Button("Refresh").click(refresh, [init, method], refresh_outputs, api_visibility="private")
    gr.Timer(REFRESH_S).tick(tick, seen_job, [versions, exports, pick, job_status, loss, log, seen_job],
                             api_visibility="private", show_progress="hidden")
    return ModelsTab(versions=versions, job_status=job_status, refresh=refresh,
                     refresh_inputs=[init, method], refresh_outputs=refresh_outputs)
