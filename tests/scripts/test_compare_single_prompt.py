"""scripts/compare_single_prompt.py: text and --json output, bad cases exit 2 naming the field."""

from __future__ import annotations

import io
import json
from pathlib import Path

from scripts.compare_single_prompt import EXIT_BAD_CASE, main
from tests.conftest import tiny_cases

FLAGS = ["--max-new-tokens", "120"]


def _run(args: list[str], stdin_text: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(args, stdin=io.StringIO(stdin_text), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def test_json_output_from_file(tiny_ft_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "case.json"
    path.write_text(json.dumps(tiny_cases()[0]))
    rc, out, _ = _run([str(path), "--model", str(tiny_ft_dir), "--json", *FLAGS])
    assert rc == 0
    data = json.loads(out)
    assert data["case_id"] == "C-000001" and data["expected_decision"] == "APPROVE_REFUND"
    assert set(data["variants"]) == {"base", "finetuned"}
    for v in data["variants"].values():
        assert v["status"] == "ok" and isinstance(v["auto_send"], bool) and isinstance(v["held_back"], list)


def test_text_output_from_stdin(tiny_ft_dir: Path) -> None:
    rc, out, _ = _run(["-", "--model", str(tiny_ft_dir), *FLAGS], json.dumps(tiny_cases()[1]))
    assert rc == 0
    assert out.startswith("case C-000002: expected")
    assert "base" in out and "finetuned" in out and "auto_send" in out and "held_back" in out


def test_bad_case_names_the_field_and_exits_2() -> None:
    bad = tiny_cases()[0]
    bad["order"]["currency"] = "EUR"  # not the currency of region US
    rc, out, err = _run(["-"], json.dumps(bad))
    assert rc == EXIT_BAD_CASE and out == ""
    assert "order.currency" in err
    rc, _, err = _run(["-"], "{not json")
    assert rc == EXIT_BAD_CASE and "not valid JSON" in err


def test_options_are_checked_and_refused_in_one_line(tiny_ft_dir: Path, tmp_path: Path, capsys) -> None:
    """A missing case file, an unbounded token budget, an unknown model or variant: exit status 2 and
    one line naming the option (argparse's shape), never a traceback; an oversized case is refused
    before it is parsed."""
    import pytest

    case = tmp_path / "case.json"
    case.write_text(json.dumps(tiny_cases()[0]))
    for args, said in [
        ([str(tmp_path / "none.json")], f"argument case: no such file: {tmp_path / 'none.json'}"),
        ([str(case), "--max-new-tokens", "0"], "argument --max-new-tokens: 0 is out of range: 1 to 8192"),
        ([str(case), "--model", "no-such-model"], "--model: unknown model 'no-such-model'"),
        ([str(case), "--model", str(tiny_ft_dir), "--variants", "nope", *FLAGS],
         "--variants: unknown variant 'nope' (loaded: base, finetuned)"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            _run(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f": error: {said}" in err and "Traceback" not in err, err
    rc, out, err = _run(["-"], " " * 1_000_001)
    assert (rc, out) == (EXIT_BAD_CASE, "") and "longer than 1000000 characters" in err
