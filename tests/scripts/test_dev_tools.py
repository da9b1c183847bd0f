"""Dev tools choose on the validation set: none of them reads the frozen eval set unless told to."""

from __future__ import annotations

import ast
from pathlib import Path

from scripts.benchmark_review import parse_args as review_args
from scripts.merge_adapter import parse_args as merge_args

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
VALIDATION = "data/generated/validation.jsonl"


def _string_defaults(script: str) -> list[str]:
    """Every ``default=`` string given to an argparse option in ``script``."""
    tree = ast.parse((SCRIPTS / script).read_text(encoding="utf-8"))
    return [kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
            for kw in node.keywords if kw.arg == "default" and isinstance(kw.value, ast.Constant)
            and isinstance(kw.value.value, str)]


def test_dev_tools_default_to_validation() -> None:
    assert merge_args(["--adapter", "a", "--out", "b"]).eval_set == VALIDATION
    assert str(review_args([]).eval_set) == VALIDATION
    assert VALIDATION in _string_defaults("benchmark.py")
    for script in ("benchmark.py", "merge_adapter.py", "device_check.py", "benchmark_review.py"):
        source = (SCRIPTS / script).read_text(encoding="utf-8")
        assert '"eval.jsonl"' not in source and "generated/eval.jsonl\")" not in source, script
        assert not any(d.endswith("eval.jsonl") and "validation" not in d for d in _string_defaults(script))
