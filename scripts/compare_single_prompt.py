"""One case, both answers side by side, with the guard's verdict.

# A case file, text output:
uv run python scripts/compare_single_prompt.py case.json

# From stdin, as JSON (one object per variant, plus the expected decision):
cat case.json | uv run python scripts/compare_single_prompt.py - --json

A case that breaks the schema prints the error naming the field and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from engine import Engine, GenerationSettings, ModelAnswer, UnknownVariant
from engine.cli import MAX_NEW_TOKENS, bounded_int, existing_file, refusals
from engine.registry import UnknownModel
from policies import InvalidCase, parse_case

EXIT_BAD_CASE = 2


MAX_CASE_CHARS = 1_000_000  # a case is a few hundred characters; the console's body limit is 2 MB


def read_case_text(source: str, stdin: TextIO) -> str:
    """The case's JSON text from ``source`` ("-": stdin). ValueError past MAX_CASE_CHARS."""
    if source == "-":
        text = stdin.read(MAX_CASE_CHARS + 1)
    else:
        with open(source, encoding="utf-8") as fh:
            text = fh.read(MAX_CASE_CHARS + 1)
    if len(text) > MAX_CASE_CHARS:
        raise ValueError(f"the case is longer than {MAX_CASE_CHARS} characters")
    return text


def as_json(results: dict[str, ModelAnswer]) -> dict[str, Any]:
    """``{"expected": ..., "variants": {name: {status, decision, answer, error, guard, figures}}}``."""
    any_answer = next(iter(results.values()))
    assert any_answer.guard is not None
    verdict = any_answer.guard
    out: dict[str, Any] = {"case_id": any_answer.case_id, "expected_decision": verdict.expected_decision,
                           "expected_refs": list(verdict.expected_refs), "variants": {}}
    for variant, a in results.items():
        g = a.guard
        assert g is not None
        out["variants"][variant] = {
            "model_version": a.model_version, "status": a.status, "decision": a.decision,
            "answer": a.answer, "error": a.error, "raw_text": a.raw_text, "violations": list(g.violations),
            "flags": list(g.flags), "held_back": list(g.held_back),
            "auto_send": g.auto_send, "latency_s": round(a.latency_s, 4), "input_tokens": a.input_tokens,
            "output_tokens": a.output_tokens, "truncated": a.truncated,
        }
    return out


def as_text(results: dict[str, ModelAnswer]) -> str:
    """Two columns, one per variant: decision, verdict, figures, then each answer's text fields."""
    data = as_json(results)
    variants = list(data["variants"])
    rows: list[tuple[str, list[str]]] = [("variant", variants)]
    for key in ("model_version", "status", "decision", "violations", "flags", "held_back", "auto_send",
                "latency_s", "output_tokens", "error"):
        rows.append((key, [_cell(data["variants"][v][key]) for v in variants]))
    for key in ("reasoning", "customer_response", "next_action", "policy_refs"):
        rows.append((key, [_cell((data["variants"][v]["answer"] or {}).get(key)) for v in variants]))
    width = 40
    lines = [f"case {data['case_id']}: expected {data['expected_decision']} "
             f"({', '.join(data['expected_refs'])})", ""]
    for key, cells in rows:
        lines.append(f"{key:<18}" + " | ".join(f"{c[:width]:<{width}}" for c in cells))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "-"
    return str(value).replace("\n", " ")


def main(argv: Sequence[str] | None = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case", type=existing_file, help="a case JSON file, or - for stdin")
    p.add_argument("--model", default="default-ft", help="registry name, model dir or adapter dir")
    p.add_argument("--variants", nargs="+", default=None, help="default: base and the fine-tuned adapter")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--unconstrained", action="store_true")
    p.add_argument("--max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS), default=512)
    args = p.parse_args(argv)
    try:
        case = parse_case(json.loads(read_case_text(args.case, stdin)))
    except json.JSONDecodeError as exc:
        print(f"error: the case is not valid JSON: {exc}", file=stderr)
        return EXIT_BAD_CASE
    except InvalidCase as exc:
        print(f"error: invalid case: {exc}", file=stderr)
        return EXIT_BAD_CASE
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_BAD_CASE
    with refusals(p, {UnknownModel: "--model", UnknownVariant: "--variants"}):
        engine = Engine.load(args.model, settings=GenerationSettings(max_new_tokens=args.max_new_tokens))
        variants = args.variants or ["base", engine.default_variant]
        results = engine.compare(case, variants=variants, constrained=not args.unconstrained)
    print(json.dumps(as_json(results), indent=2, ensure_ascii=False) if args.json else as_text(results),
          file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
