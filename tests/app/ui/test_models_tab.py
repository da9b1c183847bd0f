"""Models tab helpers: the versions table and the job status line read from the store and run dir."""

from __future__ import annotations

import json
from pathlib import Path

from app.services.jobs import Runner
from app.ui.models_tab import job_html, versions_frame
from app.ui.state import Console
from db.models import TrainingJob
from db.store import open_store
from db.versions import ensure_bundled_version, register_version
from engine.champion import comparison_markdown


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
