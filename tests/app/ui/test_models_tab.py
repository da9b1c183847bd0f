"""Models tab helpers: the versions table and the job status line read from the store and run dir."""

from __future__ import annotations

import json
from pathlib import Path

from app.services.jobs import LOG_FILE, RetrainPlan, Runner, RunnerConfig
from app.ui.models_tab import job_html, plan_markdown, status_words, versions_frame
from app.ui.state import Console
from db.models import TrainingJob
from db.store import open_store
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
