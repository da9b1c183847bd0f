"""The console as its users start it (``python -m app``, a real process on a real port): a batch run
left running by an earlier process of this console (same ``host:port``) is resumed as soon as the new
one holds the address, answered to its end, and the log carries no traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from sqlmodel import select

from db.batches import create_batch_run
from db.cases import add_case
from db.models import BatchRun, ModelRun
from db.store import open_store
from db.users import create_user
from policies import parse_case
from scripts.stress import _answers, _free_port
from tests.conftest import tiny_cases

ROOT = Path(__file__).resolve().parents[2]


def test_a_restarted_console_resumes_the_batch_its_earlier_process_left(tmp_path, tiny_ft_dir) -> None:
    db = tmp_path / "console.db"
    store = open_store(str(db))
    port = _free_port()
    cases = [parse_case(c) for c in tiny_cases()[:3]]

    def left_behind(s):  # what a console killed mid-batch leaves: cases stored, the run still running
        create_user(s, "otto", "ops", "ops-pass-12")
        pks = [add_case(s, c, "batch", "otto").id or 0 for c in cases]
        return create_batch_run(s, "otto", "data/b.jsonl", pks, f"{socket.gethostname()}:{port}/dead/1").id

    run_id = store.write(left_behind)
    log_path = tmp_path / "console.log"
    cmd = [sys.executable, "-m", "app", "--db", str(db), "--model", str(tiny_ft_dir), "--port", str(port),
           "--eval-set", str(tmp_path / "no-eval-set.jsonl"), "--demo-queue", str(tmp_path / "none.jsonl"),
           "--export-dir", str(tmp_path / "exports"), "--runs-dir", str(tmp_path / "runs"),
           "--no-background-answers"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                with store.session() as s:
                    run = s.get(BatchRun, run_id)
                if run is not None and run.status != "running":
                    break
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.5)
            assert _answers(port)  # it serves while the batch is answered
        finally:
            proc.terminate()
            proc.wait(30)
    text = log_path.read_text()
    assert (run.status, run.done, run.resumes) == ("succeeded", 3, 1), text[-3000:]
    assert f"Resuming batch run {run_id} (its console stopped mid-run)" in text
    assert "Traceback" not in text
    with store.session() as s:
        answered = {(r.case_pk, r.variant) for r in s.exec(select(ModelRun))}
    assert len(answered) == 6, json.dumps(sorted(answered))


def test_a_wrong_model_or_store_stops_the_console_in_one_line(tmp_path, capsys) -> None:
    """``python -m app`` with a mistyped --model, a store it cannot open or a port out of range:
    status 2 and one line naming the option, no traceback; a wrong model creates no store."""
    import pytest

    from app.__main__ import main

    db = tmp_path / "sub" / "console.db"
    for argv, said in [
        (["--model", "no-such-model", "--db", str(db)], "--model: unknown model 'no-such-model'"),
        (["--db", "/proc/no-such-folder/console.db"],
         "--db: cannot open the store at sqlite:////proc/no-such-folder/console.db: No such file"),
        (["--db", "postgresql+psycopg://u:secret@127.0.0.1:1/x"],
         "--db: cannot open the store at postgresql+psycopg://u:***@127.0.0.1:1/x: connection failed"),
        (["--port", "70000"], "argument --port: 70000 is out of range: 1 to 65535"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"python -m app: error: {said}" in err, err
        assert "Traceback" not in err and "secret" not in err
    assert not db.parent.exists()
