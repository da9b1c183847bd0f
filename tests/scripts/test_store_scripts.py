"""The thin CLIs over the store: scripts/create_user.py and scripts/export_corrections.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from app.services.reviews import submit_review
from db.cases import add_case, runs_for_case, save_run
from db.store import open_store
from db.users import authenticate
from tests.conftest import make_answer, make_case

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_create_user_and_export_cli(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    create_user = _script("create_user")
    assert (
        create_user.main(["--username", "otto", "--role", "ops", "--password", "ops-pass-12", "--db", db])
        == 0
    )
    assert (
        create_user.main(["--username", "rita", "--role", "reviewer", "--password", "short", "--db", db]) == 2
    )
    assert "password" in capsys.readouterr().err
    store = open_store(db)
    case = make_case("C-CLI")
    with store.session() as s:
        assert authenticate(s, "otto", "ops-pass-12").role == "ops"
        pk = add_case(s, case, "batch", "otto").id
        save_run(s, pk, make_answer(case, "finetuned", "APPROVE_REFUND_WITH_FEE"), "otto")
        submit_review(s, pk, "approve_finetuned", "otto", runs=runs_for_case(s, pk))
    export = _script("export_corrections")
    args = [
        "--user",
        "otto",
        "--model",
        "default-base",
        "--db",
        db,
        "--out",
        str(tmp_path / "out"),
        "--eval-set",
        "none",
    ]
    assert export.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 1 and Path(out["path"]).is_file()
    assert export.main(args) == 2  # nothing new: never exported twice
    assert "nothing to export" in capsys.readouterr().err


def test_export_cli_skips_inconsistent_answers_unless_included(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    assert _script("create_user").main(["--username", "otto", "--role", "ops", "--password", "ops-pass-12",
                                        "--db", db]) == 0
    case = make_case("C-CLI2")  # RET-11: the base answer's DENY contradicts its refs and names no item
    with open_store(db).session() as s:
        pk = add_case(s, case, "batch", "otto").id
        save_run(s, pk, make_answer(case, "base", "DENY"), "otto")
        review_id = submit_review(s, pk, "approve_base", "otto", runs=runs_for_case(s, pk)).id
    export = _script("export_corrections")
    args = ["--user", "otto", "--model", "default-base", "--db", db, "--out", str(tmp_path / "out"),
            "--eval-set", "none"]
    assert export.main(args) == 2
    assert "1 refused as inconsistent" in capsys.readouterr().err
    assert export.main([*args, "--include-inconsistent"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 1 and out["marked_inconsistent"] == [review_id]
    row = json.loads(Path(out["path"]).read_text())
    assert "refs_contradict_decision" in row["consistency_issues"]
    assert json.loads(Path(out["manifest"]).read_text())["consistency"]["marked"] == 1
