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
from db.audit import audit_entries
from db.users import create_user
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
    engine = SlowEngine(block_after=0)  # the first chunk waits for the test: the run is surely running
    answering = build_app(engine, store, batch_root=tmp_path, prefetch=False, console_name="host:7860")
    _handler(answering, "run_file")(path, request=_request("otto"))
    other = build_app(None, store, batch_root=tmp_path, prefetch=False, console_name="host:7861")
    with store.session() as s:
        create_user(s, "olga", "ops", "ops-pass-34")
    show, _ = _on_open(other, "Batch run")
    seen_by_olga = " ".join(v for v in show(request=_request("olga")).values() if isinstance(v, str))
    assert "No batch runs yet" in seen_by_olga  # none of her own
    assert "Running for others" in seen_by_olga and "batch 1: running" in seen_by_olga
    assert "(by otto)" in seen_by_olga
    said = _handler(other, "stop")(request=_request("olga"))
    assert said.startswith("No batch run of yours is running.")  # Cancel stops the caller's own runs
    said = _handler(other, "stop")(request=_request("otto"))
    assert said.startswith("Cancelling after the chunk being answered")
    engine.release.set()
    said = _wait_for(show, "cancelled", user="otto")
    assert "batch 1: cancelled, 8 of 40 cases answered" in said  # the chunk under way, then no more
    assert engine.calls == [("batch", 8)]


@pytest.mark.parametrize("user", ["ann", "rita"])
def test_the_batch_handlers_refuse_other_roles(store, tmp_path, user: str) -> None:
    demo = build_app(None, store, batch_root=tmp_path, prefetch=False)
    for name in ("run_file", "stop"):
        args = ("cases.jsonl",) if name == "run_file" else ()
        with pytest.raises(gr.Error, match="not allowed|may not|cannot"):
            _handler(demo, name)(*args, request=_request(user))


def test_an_open_tab_follows_its_users_running_batch(store, tmp_path) -> None:
    """The tab's timer sends the status while one of the user's batches runs and once more when it
    ends, then nothing; to another role it sends nothing (and audits nothing)."""
    path = _write_cases(tmp_path, 16, offset=700)
    engine = SlowEngine()
    demo = build_app(engine, store, batch_root=tmp_path, prefetch=False)
    tick = _handler(demo, "tick_batches")
    assert _is_skip(tick("", request=_request("otto")))  # nothing running: nothing sent
    _handler(demo, "run_file")(path, request=_request("otto"))
    first = tick("", request=_request("otto"))
    (status, seen) = _values(first)
    assert "batch 1: running" in status and seen == "1"
    with store.session() as s:
        audited = len(audit_entries(s))
    assert _is_skip(tick("", request=_request("ann")))
    with store.session() as s:
        assert len(audit_entries(s)) == audited  # a tick refuses nothing, so it audits nothing
    deadline = time.monotonic() + 15
    while "succeeded" not in status:
        assert time.monotonic() < deadline
        time.sleep(0.2)
        status, seen = _values(tick(seen, request=_request("otto")))
    assert "batch 1: succeeded, 16 of 16 cases answered" in status and seen == ""
    assert _is_skip(tick(seen, request=_request("otto")))  # it has ended: nothing more


def _is_skip(update: Any) -> bool:
    return isinstance(update, dict) and update.get("__type__") == "update" and len(update) == 1


def _values(update: dict[Any, Any]) -> tuple[str, str]:
    status = next(v for v in update.values() if isinstance(v, str) and v.startswith(("Your", "No")))
    seen = next(v for v in update.values() if isinstance(v, str) and not v.startswith(("Your", "No")))
    return status, seen
