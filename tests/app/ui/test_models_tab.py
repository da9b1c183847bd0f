"""Models tab helpers: the versions table and the job status line read from the store and run dir."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from app.services.jobs import LOG_FILE, RetrainPlan, Runner, RunnerConfig
from app.ui.models_tab import (
    NOT_EVALUATED,
    create_models_tab,
    job_html,
    plan_markdown,
    status_words,
    versions_frame,
)
from app.ui.state import Console
from db.models import TrainingJob
from db.store import open_store
from db.users import create_user
from db.versions import ensure_bundled_version, register_version
from engine.champion import comparison_markdown
from engine.registry import REPO_ROOT, load_registry


def test_versions_and_job_views(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    console = Console(engine=None, store=store)
    summary = {"n": 4, "decision_accuracy": 0.5, "violation_rate": 0.25, "json_validity": 1.0,
               "latency_p50_s": 0.01}
    evaluation = {"champion_version": "ft-v1", "hard_violations": {"champion": 2, "challenger": 1},
                  "datasets": {"eval": {"summary": {"champion": summary, "challenger": summary},
                                        "per_rule": [{"rule": "FRD-1", "n": 2, "champion": 0.0,
                                                      "challenger": 1.0, "delta": 1.0}],
                                        "worse": [{"case_id": "C-1", "rule": "CAN-1", "label": "A",
                                                   "champion": "A", "challenger": "B"}], "better": []}}}
    with store.session() as s:
        ensure_bundled_version(s, "data/models/default-ft", "default-base")
        register_version(s, "olga", "ft-v2", tmp_path, "default-base", evaluation=evaluation)
    frame = versions_frame(console)
    assert list(frame["version"]) == ["ft-v2", "ft-v1"]
    assert list(frame["status"]) == ["challenger", "champion"]
    # the champion's cells come from the comparison that measured it (issue 18: they were blank)
    assert list(frame["eval accuracy"]) == ["50.0%", "50.0%"]
    assert list(frame["violation rate"]) == ["25.0%", "25.0%"]
    md = comparison_markdown(evaluation, "ft-v2")
    assert "| FRD-1 | 2 | 0% | 100% | +100% |" in md and "1 cases got worse" in md

    runner = Runner(store)
    assert job_html(runner)[0] == "No retraining job yet."
    run_dir = tmp_path / "runs" / "ft-v3"
    run_dir.mkdir(parents=True)
    (run_dir / "progress.json").write_text(json.dumps({"stage": "training", "step": 5, "max_steps": 20,
                                                       "loss": [[5, 1.5]]}))
    with store.session() as s:
        s.add(TrainingJob(version_name="ft-v3", run_dir=str(run_dir), status="failed", request_json="{}",
                          command_json="[]", created_by="olga", error="exit status 1\nboom"))
    html, loss, log = job_html(runner)
    assert "ft-v3" in html and "failed" in html and "champion is unchanged" in html
    assert list(loss["loss"]) == [1.5] and "boom" in log


def test_plan_line_says_what_a_job_trains(tmp_path: Path) -> None:
    """The Retrain accordion's line: the served model's base and recipe with its main settings, and the
    start (champion or base), filled from Runner.plan; a model without a recipe says retraining is off."""
    store = open_store(tmp_path / "p.db")
    reg = load_registry()
    qwen = Runner(store, RunnerConfig.for_spec(reg["qwen2.5-1.5b-ft"], repo_root=REPO_ROOT))
    line = plan_markdown(qwen.plan("champion"))  # no champion yet: a fresh adapter
    assert "base `Qwen/Qwen2.5-1.5B-Instruct`" in line and "**qwen2.5-1.5b-ft**" in line
    assert "recipe `data/models/qwen2.5-1.5b-retrain.yaml`" in line
    assert "lr 0.0002" in line and "300 steps" in line and "LoRA r 16 alpha 32 on all-linear" in line
    assert "quantisation nf4" in line and "precision bf16" in line and "a fresh adapter on the base" in line
    with store.session() as s:
        ensure_bundled_version(s, "data/models/default-ft", reg["default-ft"].base)
    default = Runner(store, RunnerConfig.for_spec(reg["default-ft"], repo_root=REPO_ROOT))
    line = plan_markdown(default.plan("champion"))
    assert "recipe `data/models/default-ft-retrain.yaml`" in line and "lr 0.0003" in line
    assert "1 epoch," in line and "quantisation none" in line
    assert "starting from the champion **ft-v1** (`data/models/default-ft`)" in line and "Note" not in line
    assert "a fresh adapter on the base" in plan_markdown(default.plan("base"))
    assert "**Note:** the champion ft-v1 was trained on base" in plan_markdown(qwen.plan("champion"))
    off = RetrainPlan(model="x", base="b", recipe=None, init="base", start="b", start_version=None,
                      settings={}, refusal="model x has no retrain recipe in data/models.toml")
    assert plan_markdown(off) == "**Retraining is off:** model x has no retrain recipe in data/models.toml"
    capped = RetrainPlan(model="x", base="b", recipe="r.yaml", init="base", start="b", start_version=None,
                         settings={"max_steps": 300, "max_train_minutes": 45})
    assert "300 steps (at most 45 minutes)" in plan_markdown(capped)
    assert "at most" not in line  # the bundled recipe has no time budget


def test_job_status_in_words_and_log_tail_as_plain_text(tmp_path: Path) -> None:
    """A job whose training is done but not yet registered reads "finishing", not "running (done)"; a
    tqdm bar redrawn with carriage returns and colour codes shows as its last state only."""
    store = open_store(tmp_path / "j.db")
    run_dir = tmp_path / "runs" / "ft-v4"
    run_dir.mkdir(parents=True)
    (run_dir / "progress.json").write_text(json.dumps({"stage": "done", "step": 20, "max_steps": 20,
                                                       "loss": [[20, 0.5]]}))
    bar = "\r 10%|#         | 2/20\r 50%|#####     | 10/20\r100%|##########| 20/20"
    (run_dir / LOG_FILE).write_text(f"\x1b[32mtraining\x1b[0m\n{bar}\nsaved adapter\n")
    with store.session() as s:
        s.add(TrainingJob(version_name="ft-v4", run_dir=str(run_dir), status="running", request_json="{}",
                          command_json="[]", created_by="olga"))
    html, _, log = job_html(Runner(store))
    assert "finishing" in html and "running" not in html and "(done)" not in html
    assert log == "training\n100%|##########| 20/20\nsaved adapter\n"
    assert status_words("succeeded", "done") == "finished"


def test_unmeasured_champion_says_so(tmp_path: Path) -> None:
    store = open_store(tmp_path / "u.db")
    with store.session() as s:
        ensure_bundled_version(s, "data/models/default-ft", "default-base")
    frame = versions_frame(Console(engine=None, store=store))
    assert list(frame["eval accuracy"]) == list(frame["violation rate"]) == [NOT_EVALUATED]


def test_an_unmeasured_champion_shows_its_eval_report(tmp_path: Path) -> None:
    """The bundled ft-v1 before its first challenger: the newest eval report of the model version it
    is served as (what the Metrics tab shows for it), marked as a report; another version's report
    is not its own."""
    store = open_store(tmp_path / "c.db")
    with store.session() as s:
        ensure_bundled_version(s, "data/models/default-ft", "default-base")
    reports = tmp_path / "reports"
    (reports / "benchmarks").mkdir(parents=True)
    summary = {"dataset": "data/generated/eval.jsonl", "model_versions": {"finetuned": "base@6+ft@6"},
               "variants": {"finetuned": {"n": 300, "decision_accuracy": 0.947, "violation_rate": 0.0133,
                                          "json_validity": 1.0}}}
    (reports / "benchmarks" / "eval_summary.json").write_text(json.dumps(summary))
    for served, shown in (("base@6+ft@6", ["94.7% (report)", "1.3% (report)"]),
                          ("base@6+ft@7", [NOT_EVALUATED, NOT_EVALUATED])):
        engine = SimpleNamespace(variants=["base", "finetuned"], model_version=lambda _v, m=served: m)
        frame = versions_frame(Console(engine=engine, store=store), reports_root=reports)
        assert [frame["eval accuracy"][0], frame["violation rate"][0]] == shown


def test_refresh_brings_exports_and_versions_up_to_date(tmp_path: Path) -> None:
    """Issue 18: the tab's refresh (wired to the tab's select by the page) lists an export made
    elsewhere and a version registered since the page loaded; only ops may call it."""
    from tests.app.services.loop_fixtures import export_corrections

    store = open_store(tmp_path / "r.db")
    with store.session() as s:
        create_user(s, "olga", "ops", "ops-password-1")
        create_user(s, "rita", "reviewer", "reviewer-password-1")
        ensure_bundled_version(s, "data/models/default-ft", "default-base")
    console = Console(engine=None, store=store)
    with gr.Blocks():
        tab = create_models_tab(console, Runner(store, RunnerConfig(runs_dir=tmp_path / "runs")))
    assert len(tab.refresh_inputs) == 2 and tab.versions in tab.refresh_outputs
    ops = SimpleNamespace(username="olga")
    first = tab.refresh("champion", "sft", ops)
    exports, pick = (first[c] for c in tab.refresh_outputs[1:3])
    assert exports.choices == [] and [c[0] for c in pick.choices] == ["ft-v1"]
    export_id = export_corrections(store, tmp_path, 2, seed=4, prefix="C-MT")
    with store.session() as s:
        register_version(s, "olga", "ft-v2", tmp_path, "default-base")
    later = tab.refresh("champion", "sft", ops)
    exports, pick = (later[c] for c in tab.refresh_outputs[1:3])
    assert [value for _, value in exports.choices] == [export_id]
    assert [c[0] for c in pick.choices] == ["ft-v2", "ft-v1"]
    with pytest.raises(gr.Error, match="retrain"):
        tab.refresh("champion", "sft", SimpleNamespace(username="rita"))


def test_a_settled_job_refreshes_the_lists_once(tmp_path: Path) -> None:
    """The page's timer: while a job runs only the table and the job view change; the first tick
    that sees it settled also refreshes the export list and the version dropdown."""
    store = open_store(tmp_path / "t.db")
    with store.session() as s:
        create_user(s, "olga", "ops", "ops-password-1")
        ensure_bundled_version(s, "data/models/default-ft", "default-base")
    with gr.Blocks() as demo:
        tab = create_models_tab(Console(engine=None, store=store), Runner(store))
    tick = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "tick")
    ops = SimpleNamespace(username="olga")
    exports, pick = tab.refresh_outputs[1:3]
    run_dir = tmp_path / "runs" / "ft-v2"
    run_dir.mkdir(parents=True)
    with store.session() as s:
        job = TrainingJob(version_name="ft-v2", run_dir=str(run_dir), status="running", request_json="{}",
                          command_json="[]", created_by="olga", pid=None)
        s.add(job)
        s.flush()
        job_id = job.id
    (run_dir / "exit_code").write_text("1\n")  # the next refresh settles it as failed
    running = tick(f"{job_id}:running", ops)
    assert exports in running and pick in running  # it settled on this tick: the lists come along
    seen = running[tab.refresh_outputs[-1]]
    assert seen == f"{job_id}:failed"
    quiet = tick(seen, ops)
    assert exports not in quiet and pick not in quiet and tab.versions in quiet
