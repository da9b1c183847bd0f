"""Issue 6 end to end, with micro models: corrections -> export -> retrain (subprocess) -> evaluate ->
promote -> serve -> roll back, and every step in the audit log.

The champion is trained without any FRD-1 case (unauthorized charges), so it answers them with
the one decision it knows; reviewers correct a few dozen such cases to ESCALATE; the Runner trains
ft-v2 on the base set plus that export in a subprocess, evaluates it against ft-v1 on the eval set
(both rules) and on held-out corrections, and ops promote it. What is asserted: FRD-1 accuracy of
the challenger is above the champion's on the eval set; the real comparison is stored per dataset
and the gate decides on it exactly as engine.champion.gate_verdicts says; the gate forced both ways
(fixture evaluations derived from the real one, written into ft-v2's row: worse on eval but far
better on the holdout is refused, equal on eval is promoted), so every later check always runs;
atomic promotion and rollback; the serving Engine swaps its ``finetuned`` adapter without a reload.
Not asserted: that overall accuracy rises. A micro model this small shifts towards ESCALATE
rather than learning to tell the rules apart (docs/loop.md has the figures and a larger run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from app.services.exports import export_reviews
from app.services.jobs import JobBusy, RetrainRequest, Runner, RunnerConfig
from app.services.reviews import submit_review
from app.services.versions import PromotionRefused, promote, rollback, serve_champion
from db.audit import audit_entries
from db.cases import add_case
from db.models import Export
from db.store import open_store
from db.users import create_user
from db.versions import champion, ensure_bundled_version, get_version, list_versions
from engine.champion import accuracy_on_rule, gate_refusal, gate_verdicts, verdict_line
from engine.sft_data import RunConfig
from policies import parse_case
from tests.app.services.loop_fixtures import (
    KNOWN_RULES,
    TARGET_RULE,
    TINY_TRAIN_ARGS,
    rows_for,
    short_answer,
    train_args,
)
from tests.conftest import write_jsonl

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loop_dir(tiny_base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data files and the champion adapter ft-v1 (trained without TARGET_RULE)."""
    from engine.training import parse_run_config, train

    root = tmp_path_factory.mktemp("loop")
    paths = {
        "root": root,
        "train": write_jsonl(root / "train.jsonl", rows_for(KNOWN_RULES, 32, seed=1, prefix="C-TR")),
        "val": write_jsonl(root / "val.jsonl", rows_for(KNOWN_RULES, 4, seed=2, prefix="C-VA")),
        "eval": write_jsonl(root / "eval.jsonl", rows_for((*KNOWN_RULES, TARGET_RULE), 18, seed=3,
                                                            prefix="C-EV")),
        "ft_v1": root / "ft-v1",
    }
    cfg: RunConfig = parse_run_config(train_args(tiny_base_dir, paths["train"], paths["val"], paths["ft_v1"]))
    train(cfg)
    return paths


def _forced(evaluation: dict, worse_on_eval: bool) -> dict:
    """The real ``evaluation`` with its gate figures set: on eval the challenger has one more
    hard-violation case than the champion (``worse_on_eval``) or the champion's figures exactly;
    on the holdout it is far better (worse_on_eval) or far worse than the champion."""
    forced = json.loads(json.dumps(evaluation))
    ev, ho = forced["datasets"]["eval"], forced["datasets"]["holdout"]
    ev["hard_violations"]["challenger"] = ev["hard_violations"]["champion"] + (1 if worse_on_eval else 0)
    ev["summary"]["challenger"]["decision_accuracy"] = ev["summary"]["champion"]["decision_accuracy"]
    winner, loser = ("challenger", "champion") if worse_on_eval else ("champion", "challenger")
    ho["summary"][winner]["decision_accuracy"], ho["hard_violations"][winner] = 1.0, 0
    ho["summary"][loser]["decision_accuracy"], ho["hard_violations"][loser] = 0.0, ho["summary"][loser]["n"]
    return forced


def test_corrections_retrain_promote_rollback(loop_dir: dict[str, Path], tiny_base_dir: Path) -> None:
    root = loop_dir["root"]
    store = open_store(root / "loop.db")
    with store.session() as s:
        create_user(s, "olga", "ops", "ops-password-1")
        create_user(s, "rita", "reviewer", "reviewer-password-1")
        ensure_bundled_version(s, loop_dir["ft_v1"], str(tiny_base_dir))
    # Reviewers correct FRD-1 cases the champion gets wrong.
    for row in rows_for((TARGET_RULE,), 32, seed=4, prefix="C-CO"):
        case = parse_case(row["input"])
        with store.session() as s:
            record = add_case(s, case, "try", "rita")
            submit_review(s, record.id or 0, "correct", "rita", runs={}, answer=short_answer(case))
    with store.session() as s:  # short answers are terse on purpose: exported, marked inconsistent
        export = export_reviews(s, "olga", root / "exports", include_inconsistent=True)
    with store.session() as s:
        export_id = s.exec(select(Export.id)).one()

    runner = Runner(store, RunnerConfig(
        repo_root=REPO, runs_dir=root / "runs", base_model=str(tiny_base_dir),
        base_dataset=str(loop_dir["train"]), eval_set=str(loop_dir["eval"]), train_config=None,
        extra_args=[*TINY_TRAIN_ARGS, "--eval_dataset", str(loop_dir["val"])],
        eval_max_new_tokens=96,
    ))
    job = runner.start("olga", RetrainRequest([export_id], base_weight=1.0, corrections_weight=1.0,
                                              holdout_share=0.25))
    assert job.version_name == "ft-v2" and export.count == 32
    with pytest.raises(JobBusy):
        runner.start("olga", RetrainRequest([export_id]))
    job = runner.wait(job.id or 0, timeout_s=300)
    assert job.status == "succeeded", runner.view(job)["log_tail"]
    view = runner.view(job)
    assert view["stage"] == "done" and view["max_steps"] == 80 and view["loss"]

    with store.session() as s:
        v2 = get_version(s, "ft-v2")
        evaluation = v2.evaluation()
        assert v2.status == "challenger" and v2.run_config_json and v2.data_hashes_json
    assert evaluation is not None and evaluation["champion_version"] == "ft-v1"
    before = accuracy_on_rule(evaluation, "eval", TARGET_RULE, "champion")
    after = accuracy_on_rule(evaluation, "eval", TARGET_RULE, "challenger")
    verdicts = gate_verdicts(evaluation)
    print(json.dumps({"eval": {"before": before, "after": after},
                      "holdout": [accuracy_on_rule(evaluation, "holdout", TARGET_RULE, side)
                                  for side in ("champion", "challenger")],
                      "gate": [verdict_line(v) for v in verdicts]}))
    assert before is not None and after is not None and after > before

    # The real comparison is kept per dataset (no total over datasets) and the gate reads it as
    # gate_verdicts does; this check changes nothing (rolled back): the forced paths below do.
    assert "hard_violations" not in evaluation and set(evaluation["datasets"]) == {"eval", "holdout"}
    assert [(v.dataset, v.gating, v.has_figures) for v in verdicts] == [("eval", True, True),
                                                                      ("holdout", False, True)]
    refusal = gate_refusal(verdicts)
    with store.session() as s:
        try:
            promote(s, "olga", "ft-v2")
            decided = None
        except PromotionRefused as exc:
            decided = str(exc)
        s.rollback()
    assert decided == (f"ft-v2: {refusal}; not promoted" if refusal else None)

    # The gate forced to refuse: worse on eval, far better on the held-out corrections (the gaming case).
    with store.session() as s:
        v2 = get_version(s, "ft-v2")
        v2.evaluation_json = json.dumps(_forced(evaluation, worse_on_eval=True))
        s.add(v2)
    hv = evaluation["datasets"]["eval"]["hard_violations"]["champion"]
    with store.session() as s, pytest.raises(PromotionRefused) as refused:
        promote(s, "olga", "ft-v2")
    assert str(refused.value) == (f"ft-v2: on eval, {hv + 1} case{'' if hv == 0 else 's'} with hard "
                                  f"violations against the champion's {hv}; not promoted")
    with store.session() as s:
        assert champion(s).name == "ft-v1"  # type: ignore[union-attr]

    # The gate forced to pass: as good as the champion on eval, worse on the held-out corrections.
    with store.session() as s:
        v2 = get_version(s, "ft-v2")
        v2.evaluation_json = json.dumps(_forced(evaluation, worse_on_eval=False))
        s.add(v2)
    with store.session() as s:
        promote(s, "olga", "ft-v2")
    with store.session() as s:
        assert champion(s).name == "ft-v2"  # type: ignore[union-attr]
        assert {v.name: v.status for v in list_versions(s)} == {"ft-v2": "champion", "ft-v1": "retired"}

    # The serving engine switches its "finetuned" adapter to the champion, base untouched.
    from engine import Engine

    engine = Engine.load(str(loop_dir["ft_v1"]))
    base_model = engine.backend.model.get_base_model()
    case = parse_case(rows_for((TARGET_RULE,), 1, seed=9, prefix="C-SV")[0]["input"])
    with store.session() as s:
        assert serve_champion(engine, s) == "ft-v2"
    assert engine.backend.model.get_base_model() is base_model
    assert engine.model_version("finetuned").endswith("ft-v2")
    served = engine.decide(case).raw_text
    assert served == Engine.load(str(root / "runs" / "ft-v2")).decide(case).raw_text

    with store.session() as s:
        rollback(s, "olga", "ft-v1")
    with store.session() as s:
        assert champion(s).name == "ft-v1"  # type: ignore[union-attr]
        actions = [e.action for e in audit_entries(s)]
    for step in ("review_corrected", "export", "retrain_start", "register_version", "retrain_succeeded",
                 "promote", "rollback"):
        assert step in actions, step
