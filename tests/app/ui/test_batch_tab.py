"""The Batch run tab over batch runs kept in the store: a run started here is listed by any console
over the same store, a console that restarts resumes the run it left when its Batch tab opens (or
on start), and Cancel reaches the run wherever it is answered. Handlers are called as the page calls
them (the real browser opens the tab in test_tabs_load)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

import app.services.batches as batches
from app.ui.interface import build_app
from tests.app.services.test_batches import KILLED, SlowEngine, _cases
from tests.app.ui.test_tabs_load import _on_open, _request


def _handler(demo: gr.Blocks, name: str) -> Any:
    return next(d.fn for d in demo.fns.values() if d.fn is not None and d.fn.__name__ == name)


def _write_cases(root: Path, n: int, offset: int) -> str:
    (root / "cases.jsonl").write_text("".join(json.dumps(c.to_json_dict()) + "\n" for c in _cases(n, offset)))
    return "cases.jsonl"


def _wait_for(show: Any, text: str, user: str = "otto", timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        said = " ".join(v for v in show(request=_request(user)).values() if isinstance(v, str))
        if text in said or time.monotonic() > deadline:
            return said
        time.sleep(0.1)


@KILLED
def test_a_batch_outlives_its_console_and_resumes_when_the_restarted_one_opens_the_tab(
    store, tmp_path, monkeypatch
) -> None:
    path = _write_cases(tmp_path, 12, offset=500)
    first = build_app(SlowEngine(die_after=1), store, batch_root=tmp_path, prefetch=False,
                      console_name="host:7860")
    said = _handler(first, "run_file")(path, request=_request("otto"))
    assert said.startswith("Started batch 1: 12 cases")
    show, _ = _on_open(first, "Batch run")
    # the engine "dies" after one chunk of 8 (CHUNK_CASES): the run stays running, 8 of 12 answered
    assert "batch 1: running, 8 of 12 cases answered" in _wait_for(show, "8 of 12")

    monkeypatch.setattr(batches, "PROCESS", "restarted")  # the console's next process, same address
    engine = SlowEngine()
    again = build_app(engine, store, batch_root=tmp_path, prefetch=False, console_name="host:7860")
    show, _ = _on_open(again, "Batch run")
    said = _wait_for(show, "succeeded")
    assert "batch 1: succeeded, 12 of 12 cases answered (resumed once after a console stopped)" in said
    assert engine.calls == [("batch", 4)]  # only the 4 cases the first process had not answered
    assert "No batch run of yours is running." in _handler(again, "stop")(request=_request("otto"))


def test_cancel_from_another_console_stops_the_run(store, tmp_path) -> None:
    path = _write_cases(tmp_path, 40, offset=600)
    engine = SlowEngine()
    answering = build_app(engine, store, batch_root=tmp_path, prefetch=False, console_name="host:7860")
    _handler(answering, "run_file")(path, request=_request("otto"))
    other = build_app(None, store, batch_root=tmp_path, prefetch=False, console_name="host:7861")
    said = _handler(other, "stop")(request=_request("otto"))
    assert said.startswith("Cancelling after the chunk being answered")
    show, _ = _on_open(other, "Batch run")
    said = _wait_for(show, "cancelled")
    assert "batch 1: cancelled" in said and "of 40 cases answered" in said
    assert len(engine.calls) <= 2


@pytest.mark.parametrize("user", ["ann", "rita"])
def test_the_batch_handlers_refuse_other_roles(store, tmp_path, user: str) -> None:
    demo = build_app(None, store, batch_root=tmp_path, prefetch=False)
    for name in ("run_file", "stop"):
        args = ("cases.jsonl",) if name == "run_file" else ()
        with pytest.raises(gr.Error, match="not allowed|may not|cannot"):
            _handler(demo, name)(*args, request=_request(user))
