"""Corrections as preference data (issue 16 item 5): the export writes TRL preference pairs beside the
SFT file, and a DPO retrain trains on (reviewed answer, the model answer it replaced) pairs only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from app.services.exports import export_reviews, preferences_path
from app.services.jobs import JobError, RetrainRequest, Runner, RunnerConfig, write_job_data
from app.services.reviews import submit_review
from db.cases import add_case, runs_for_case, save_run
from db.models import Export
from db.store import Store
from engine.dpo import preference_example
from engine.registry import REPO_ROOT
from engine.sft_data import RunConfig
from engine.training import parse_run_config
from policies import parse_case
from tests.app.services.loop_fixtures import fake_python, rows_for, short_answer
from tests.conftest import TINY_FORMAT, make_answer


def _corrections(store: Store, n: int = 6, approve_one: bool = True) -> list[int]:
    """``n`` FRD-1 cases the fine-tuned model answered wrongly (DENY), corrected by a reviewer; one
    more case approved (no pair). Out: the corrected cases' row ids."""
    pks = []
    for i, row in enumerate(rows_for(("FRD-1",), n + 1, seed=5, prefix="C-PR")):
        case = parse_case(row["input"])
        with store.session() as s:
            pk = add_case(s, case, "try", "rita").id or 0
            for variant in ("base", "finetuned"):
                save_run(s, pk, make_answer(case, variant, "DENY"), "rita")
            runs = runs_for_case(s, pk)
            if i == n and approve_one:
                submit_review(s, pk, "approve_finetuned", "rita", runs=runs)
            else:
                submit_review(s, pk, "correct", "rita", runs=runs, answer=short_answer(case))
                pks.append(pk)
    return pks


def test_export_writes_preference_pairs_beside_the_sft_file(store: Store, tmp_path: Path) -> None:
    _corrections(store)
    with store.session() as s:
        result = export_reviews(s, "otto", tmp_path / "exports", TINY_FORMAT, include_inconsistent=True)
    assert result.count == 7 and result.preference_count == 6  # the approval gives no pair
    assert result.preferences_path == str(preferences_path(result.path))
    pairs = [json.loads(ln) for ln in Path(result.preferences_path).read_text().splitlines()]
    sft = [json.loads(ln) for ln in Path(result.path).read_text().splitlines()]
    corrected = [r for r in sft if json.loads(r["messages"][-1]["content"])["decision"] == "ESCALATE"]
    for pair, row in zip(pairs, corrected, strict=True):
        assert pair["prompt"] == row["messages"][:-1] and pair["chosen"] == row["messages"][-1:]
        assert json.loads(pair["rejected"][0]["content"])["decision"] == "DENY"
        assert json.loads(pair["chosen"][0]["content"])["decision"] == "ESCALATE"
        preference_example(pair, TINY_FORMAT)  # a valid TRL preference row
    manifest = json.loads(Path(result.manifest_path).read_text())
    assert manifest["preferences"]["count"] == 6 and manifest["preferences"]["file"].endswith(
        ".preferences.jsonl")


def test_dpo_job_trains_on_pairs_only(store: Store, tmp_path: Path) -> None:
    pks = _corrections(store)
    with store.session() as s:
        export_reviews(s, "otto", tmp_path / "exports", TINY_FORMAT, include_inconsistent=True)
        export_id = s.exec(select(Export.id)).one()
    runner = Runner(store, RunnerConfig(repo_root=REPO_ROOT, runs_dir=tmp_path / "runs",
                                        python=fake_python(tmp_path)))
    plan = runner.plan("base", "dpo")
    assert plan.method == "dpo" and plan.recipe == "data/models/default-ft-retrain-dpo.yaml"
    job = runner.start("otto", RetrainRequest([export_id], holdout_share=0.0, method="dpo",
                                              allow_no_holdout=True))
    runner.cancel("otto", job.id or 0)
    cmd = json.loads(job.command_json)
    train_args = cmd[cmd.index("--") + 1:]
    pref_file = Path(job.run_dir) / "preferences.jsonl"
    assert ["--method", "dpo"] == train_args[train_args.index("--method"):train_args.index("--method") + 2]
    assert train_args[train_args.index("--dataset") + 1] == str(pref_file)
    assert "--mix_weights" not in train_args  # no base training set mixed into DPO
    cfg = parse_run_config(train_args)
    assert (cfg.method, cfg.dataset, cfg.eval_dataset) == ("dpo", [str(pref_file)], None)
    rows = [json.loads(ln) for ln in pref_file.read_text().splitlines()]
    assert len(rows) == len(pks) == 6
    with store.session() as s:
        for row in rows:
            assert row["chosen"]["decision"] == "ESCALATE" and row["rejected"]["decision"] == "DENY"
            assert row["rejected"] == json.loads(runs_for_case(s, pks[rows.index(row)])["finetuned"]
                                                 .answer_json)
    assert json.loads(job.request_json)["skipped_without_pair"] == 1  # the approval


def test_dpo_is_refused_without_pairs_or_recipe(store: Store, tmp_path: Path) -> None:
    for row in rows_for(("FRD-1",), 3, seed=6, prefix="C-NP"):  # corrections without a model answer
        case = parse_case(row["input"])
        with store.session() as s:
            pk = add_case(s, case, "try", "rita").id or 0
            submit_review(s, pk, "correct", "rita", runs={}, answer=short_answer(case))
    with store.session() as s:
        export_reviews(s, "otto", tmp_path / "exports", TINY_FORMAT, include_inconsistent=True)
        export_id = s.exec(select(Export.id)).one()
        with pytest.raises(JobError, match="DPO needs pairs"):
            write_job_data(s, RetrainRequest([export_id], holdout_share=0.0, method="dpo"), tmp_path / "r1")
    no_dpo = Runner(store, RunnerConfig(runs_dir=tmp_path / "runs", dpo_train_config=None))
    assert "no DPO recipe" in (no_dpo.plan("base", "dpo").refusal or "")
    with pytest.raises(JobError, match="no DPO recipe"):
        no_dpo.start("otto", RetrainRequest([export_id], method="dpo"))
    with pytest.raises(JobError, match="method: 'ppo'"):
        no_dpo.start("otto", RetrainRequest([export_id], method="ppo"))


def test_run_config_method_from_the_recipe() -> None:
    cfg = parse_run_config(["--config", "data/models/default-ft-retrain-dpo.yaml"])
    assert (cfg.method, cfg.dpo_beta, cfg.eval_dataset) == ("dpo", 0.1, None)
    assert RunConfig().method == "sft"
