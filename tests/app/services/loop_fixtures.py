"""Decision-focused micro data for the close-the-loop tests: cases of a few rules, short answers.

The champion is trained without ``TARGET_RULE`` (so it gets those cases wrong); reviewers then
correct such cases, and the retrained challenger should do better on that rule.
"""

from __future__ import annotations

import hashlib
import random
import stat
from pathlib import Path
from typing import Any

from policies import Case, expected_decision
from policies.synth import sample_case

KNOWN_RULES = ("CAN-1", "CAN-2")  # cancellations: APPROVE_CANCELLATION
TARGET_RULE = "FRD-1"  # unauthorized charges: ESCALATE; the champion never saw one
TINY_TRAIN_ARGS = [
    "--quantization", "none", "--lora_r", "8", "--lora_alpha", "16", "--learning_rate", "5e-2",
    "--lr_scheduler_type", "constant", "--warmup_ratio", "0", "--max_steps", "80",
    "--per_device_train_batch_size", "8", "--max_length", "512", "--logging_steps", "5",
    "--eval_each_epoch", "false", "--select_best_by_val_loss", "false", "--num_threads", "1",
    "--seed", "0", "--train_embeddings", "true",
]


def short_answer(case: Case) -> dict[str, Any]:
    """The rule engine's decision with the shortest valid free text (fast to learn and to generate)."""
    exp = expected_decision(case)
    return {"decision": exp.decision, "reasoning": f"{exp.rule}.", "customer_response": "Thank you.",
            "next_action": "Close.", "policy_refs": list(exp.policy_refs)}


def rows_for(rules: tuple[str, ...], n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    """``n`` generator rows cycling through ``rules`` (ids ``{prefix}-00000``, ...)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        case = sample_case(rng, rules[i % len(rules)], f"{prefix}-{i:05d}")
        rows.append({"id": case.case_id, "instruction": "Decide the case.",
                     "input": case.model_dump(mode="json"), "output": short_answer(case)})
    return rows


def train_args(base_dir: Path, dataset: Path, val: Path, out_dir: Path, steps: int = 40) -> list[str]:
    """train_qlora_sft flags for a micro adapter on ``dataset``."""
    args = list(TINY_TRAIN_ARGS)
    args[args.index("--max_steps") + 1] = str(steps)
    return ["--model", str(base_dir), "--dataset", str(dataset), "--eval_dataset", str(val),
            "--output_dir", str(out_dir), *args]


def fake_python(tmp_path: Path, body: str = "sleep 30") -> str:
    """An executable standing in for the Runner's python: it runs ``body`` (sh) instead of training.

    Each body gets its own file, written once: rewriting a script that a just-cancelled process
    may still be exec'ing fails with ETXTBSY ("Text file busy"), which made a test flaky.
    """
    path = tmp_path / f"fake-python-{hashlib.sha1(body.encode()).hexdigest()[:10]}"
    if not path.exists():
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def export_corrections(store: Any, tmp_path: Path, n: int, seed: int, prefix: str) -> int:
    """``n`` FRD-1 cases corrected by rita (no model answer), exported by olga; out: the export id."""
    from sqlmodel import select

    from app.services.exports import export_reviews
    from app.services.reviews import submit_review
    from db.cases import add_case
    from db.models import Export
    from policies import parse_case

    for row in rows_for(("FRD-1",), n, seed=seed, prefix=prefix):
        case = parse_case(row["input"])
        with store.session() as s:
            rec = add_case(s, case, "try", "rita")
            submit_review(s, rec.id or 0, "correct", "rita", runs={}, answer=short_answer(case))
    with store.session() as s:  # short answers are terse on purpose: exported, marked inconsistent
        export_reviews(s, "olga", tmp_path / "exports", include_inconsistent=True)
    with store.session() as s:
        return s.exec(select(Export.id)).one()
