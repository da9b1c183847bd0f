"""Batch checker: the rule engine over JSON Lines, a stable contract for other tools.

    uv run python -m policies.check < cases.jsonl > results.jsonl

Each input line is a case object, or ``{"case": {...}, "decision": "DENY"}`` to check a
proposed decision too. Each output line, in input order, is either

    {"case_id": ..., "expected_decision": ..., "policy_refs": [...], "violations": [...], "flags": [...]}

(``violations`` is empty when no decision was given; ``flags`` never include MODELS_DISAGREE)
or, for a line that cannot be checked (invalid JSON, invalid case, unknown decision, blank),

    {"line": N, "case_id": <when readable>, "error": "<message naming the field>"}

Processing continues after a bad line. Exit code 0 when every line was valid, else 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Iterable, Iterator
from typing import IO, Any

from policies.rules import check, expected_decision, flags
from policies.schema import DECISIONS, Case, InvalidCase, parse_case


class BadLine(ValueError):
    """An input line that cannot be checked: ``errors`` lists (field, message); ``case_id`` when known."""

    def __init__(self, errors: list[tuple[str, str]], case_id: str | None = None):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = errors
        self.case_id = case_id

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.errors]


def _case_id_of(data: Any) -> str | None:
    case_id = data.get("case_id") if isinstance(data, dict) else None
    return case_id if isinstance(case_id, str) else None


def check_record(data: Any) -> dict[str, Any]:
    """The result object for one decoded input line. Raises :class:`BadLine` naming the field."""
    proposed, case_data, prefix = None, data, ""
    if isinstance(data, dict) and "case" in data:
        case_data, prefix = data["case"], "case."
        extra = sorted(set(data) - {"case", "decision"})
        if extra:
            raise BadLine([(f, "unknown field (expected 'case' and optional 'decision')") for f in extra],
                          _case_id_of(case_data))
        proposed = data.get("decision")
        if proposed is not None and proposed not in DECISIONS:
            raise BadLine([("decision", f"unknown decision {proposed!r} (known: {', '.join(DECISIONS)})")],
                          _case_id_of(case_data))
    try:
        case = parse_case(case_data)
    except InvalidCase as exc:
        errors = [(prefix + f if f != "<root>" else prefix.rstrip(".") or f, m) for f, m in exc.errors]
        raise BadLine(errors, _case_id_of(case_data)) from None
    expected = expected_decision(case)
    return {
        "case_id": case.case_id,
        "expected_decision": expected.decision,
        "policy_refs": list(expected.policy_refs),
        "violations": check(case, proposed) if proposed is not None else [],
        "flags": flags(case),
    }


def check_line(line: str, number: int) -> tuple[dict[str, Any], bool]:
    """(result object, valid) for input line ``number`` (1-based); never raises on bad input."""
    try:
        if not line.strip():
            raise BadLine([("<line>", "blank line")])
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadLine([("<json>", f"invalid JSON: {exc}")]) from None
        return check_record(data), True
    except BadLine as exc:
        out: dict[str, Any] = {"line": number}
        if exc.case_id is not None:
            out["case_id"] = exc.case_id
        out["error"] = str(exc)
        return out, False


def check_lines(lines: Iterable[str]) -> Iterator[tuple[dict[str, Any], bool]]:
    """:func:`check_line` over ``lines`` in order (a trailing newline per line is fine)."""
    for number, line in enumerate(lines, start=1):
        yield check_line(line.rstrip("\r\n"), number)


def run(stdin: IO[str], stdout: IO[str]) -> int:
    """Check every line of ``stdin``, write one JSON line each to ``stdout``; return the exit code."""
    all_valid = True
    for result, valid in check_lines(stdin):
        all_valid &= valid
        stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    stdout.flush()
    return 0 if all_valid else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m policies.check", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    return run(sys.stdin, sys.stdout)


class _CallableCheckModule(types.ModuleType):
    """Importing this module rebinds the package attribute ``policies.check`` from the rule engine's
    ``check()`` to this module; calling the module keeps ``policies.check(case, proposed)`` working."""

    def __call__(self, case: Case, proposed: str) -> list[str]:
        return check(case, proposed)


sys.modules[__name__].__class__ = _CallableCheckModule

if __name__ == "__main__":
    sys.exit(main())
