"""Issue 18: the demo loop completes on a fresh store, set up the way ``python -m app`` sets it up.

A fresh store gets the demo queue (:func:`app.services.demo.seed_console`, what ``app/__main__.py``
calls): generated cases outside every frozen set. The idle console answers them in the background;
a reviewer corrects a few; ops export them (nothing refused as eval-set: the export is not empty),
retrain on the export (the Runner's subprocess, a micro run on the tiny model; a job holding no
correction out is refused until confirmed), and the challenger is promoted or refused by the gate
(either outcome completes the loop; which one a micro model earns is not the point).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlmodel import select

from app.services.answers import current_runs, prompt_format_of
from app.services.demo import DEMO_QUEUE, EVAL_SET, seed_console
from app.services.exports import export_reviews
from app.services.jobs import NoHoldout, RetrainRequest, Runner, RunnerConfig
from app.services.navigation import BackgroundAnswers
from app.services.reviews import submit_review
from app.services.versions import PromotionRefused, change_champion, serve_champion
from db.cases import read_case_rows
from db.models import CaseRecord, Export
from db.store import open_store
from db.users import create_user
from db.versions import champion, ensure_bundled_version
from policies.leakage import KNOWN_FORMATS, frozen_keys
from tests.app.services.loop_fixtures import KNOWN_RULES, TARGET_RULE, TINY_TRAIN_ARGS, rows_for
from tests.conftest import write_jsonl

REPO = Path(__file__).resolve().parents[3]
REVIEWED = 6  # cases the reviewer corrects


def test_demo_queue_is_outside_every_frozen_set() -> None:
    """No demo case shares its deciding fields or its prompt (in any known format) with the eval or
    stress set, and none has an eval-set case id: each review of one can be exported."""
    cases = read_case_rows(REPO / DEMO_QUEUE)
    assert 24 <= len(cases) <= 96 and len({c.case_id for c in cases}) == len(cases)
    eval_ids = {c.case_id for c in read_case_rows(REPO / EVAL_SET)}
    assert not eval_ids & {c.case_id for c in cases}
    for fmt in KNOWN_FORMATS:
        frozen = frozen_keys([REPO / EVAL_SET, REPO / "data/generated/stress.jsonl"], fmt)
        assert not [c.case_id for c in cases if frozen.match_case(c)]


def _wait_for(predicate, timeout_s: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_demo_loop_from_a_fresh_store(tmp_path: Path, tiny_base_dir: Path, tiny_ft_dir: Path) -> None:
    from engine import Engine

    store = open_store(tmp_path / "fresh.db")
    seed = seed_console(store, REPO / DEMO_QUEUE, REPO / EVAL_SET)
    demo_rows = {json.loads(ln)["id"]: json.loads(ln) for ln in (REPO / DEMO_QUEUE).read_text().splitlines()}
    assert seed.demo_added == len(demo_rows) and seed.eval_fingerprints
    assert seed_console(store, REPO / DEMO_QUEUE, REPO / EVAL_SET).demo_added == 0  # a restart adds nothing
    with store.session() as s:
        assert not s.exec(select(CaseRecord).where(CaseRecord.in_eval_set == True)).all()  # noqa: E712
        create_user(s, "rita", "reviewer", "reviewer-password-1")
        create_user(s, "otto", "ops", "ops-password-12")
        ensure_bundled_version(s, tiny_ft_dir, str(tiny_base_dir))
    engine = Engine.load(str(tiny_base_dir), adapters={"finetuned": str(tiny_ft_dir)}, device="cpu")
    with store.session() as s:
        assert serve_champion(engine, s) == "ft-v1"

    # The idle console answers the queue; the reviewer corrects the first cases answered.
    background = BackgroundAnswers(store, engine, idle_s=0.0)
    background.start()
    try:
        assert _wait_for(lambda: len(background.done) >= REVIEWED, timeout_s=300), background.failed
    finally:
        background.stop()
    assert not background.running
    for pk in background.done[:REVIEWED]:
        runs = current_runs(store, engine, pk)
        assert set(runs) == {"base", "finetuned"}
        with store.session() as s:
            case_id = s.get(CaseRecord, pk).case_id  # type: ignore[union-attr]
            submit_review(s, pk, "correct", "rita", runs=runs, answer=demo_rows[case_id]["output"])

    with store.session() as s:
        export = export_reviews(s, "otto", tmp_path / "exports", fmt=prompt_format_of(engine),
                                eval_fingerprints=seed.eval_fingerprints)
    assert export.count == REVIEWED, export.skipped  # nothing refused as eval-set or frozen-set
    with store.session() as s:
        export_id = s.exec(select(Export.id)).one()

    data = tmp_path / "data"
    args = list(TINY_TRAIN_ARGS)
    args[args.index("--max_steps") + 1] = "10"
    runner = Runner(store, RunnerConfig(
        repo_root=REPO, runs_dir=tmp_path / "runs", base_model=str(tiny_base_dir),
        base_dataset=str(write_jsonl(data / "train.jsonl", rows_for(KNOWN_RULES, 16, seed=1, prefix="C-TR"))),
        eval_set=str(write_jsonl(data / "eval.jsonl", rows_for((*KNOWN_RULES, TARGET_RULE), 6, seed=3,
                                                               prefix="C-EV"))),
        stress_set=None, train_config=None, eval_max_new_tokens=96,
        extra_args=[*args, "--eval_dataset",
                    str(write_jsonl(data / "val.jsonl", rows_for(KNOWN_RULES, 4, seed=2, prefix="C-VA")))],
    ))
    with pytest.raises(NoHoldout, match="^holdout_share: no correction would be held out"):
        runner.start("otto", RetrainRequest([export_id], holdout_share=0.0))
    job = runner.start("otto", RetrainRequest([export_id], holdout_share=0.5, init="champion",
                                              allow_no_holdout=True))
    job = runner.wait(job.id or 0, timeout_s=600)
    assert job.status == "succeeded", runner.view(job)["log_tail"]

    try:
        served = change_champion(store, engine, "otto", job.version_name, "promote")
        assert served == job.version_name
    except PromotionRefused as refused:
        assert str(refused).startswith(f"{job.version_name}: ") and "not promoted" in str(refused)
        served = "ft-v1"
    with store.session() as s:
        assert champion(s).name == served  # type: ignore[union-attr]


def test_console_start_seeds_the_demo_queue_and_answers_in_the_background_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m app`` puts the demo queue (not the eval set) in a fresh store through
    seed_console; background answering is on unless ``--no-background-answers``."""
    import app.__main__ as console_main

    class Stop(Exception):
        pass

    def stop(*_args: object, **_kwargs: object) -> None:
        raise Stop  # after the store is seeded, before any model loads

    assert console_main.parse_args([]).background_answers is True
    assert console_main.parse_args(["--no-background-answers"]).background_answers is False
    monkeypatch.setattr(console_main.RunnerConfig, "for_spec", staticmethod(stop))
    monkeypatch.setenv("POLICYOPS_ADMIN_USER", "olga")
    monkeypatch.setenv("POLICYOPS_ADMIN_PASSWORD", "a-long-ops-password-1")
    db = tmp_path / "console.db"
    with pytest.raises(Stop):
        console_main.main(["--db", str(db), "--demo-queue", str(REPO / DEMO_QUEUE),
                           "--eval-set", str(REPO / EVAL_SET)])
    with open_store(db).session() as s:
        records = s.exec(select(CaseRecord)).all()
    assert {r.case_id for r in records} == {c.case_id for c in read_case_rows(REPO / DEMO_QUEUE)}
    assert not any(r.in_eval_set for r in records)
