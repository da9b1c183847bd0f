"""Batch run (ops): a JSONL file of cases under the data folder, answered by both variants as a
background job (app.services.batches): chunked, saved as it goes, cancellable here, never holding
the engine for more than a chunk while a reviewer's compare waits, and kept in the store (a console
that restarts, or another one, finds the runs and resumes one its console left). Uploads are off (no
file lands in a temp folder); put the file under the data folder instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from app.services.batches import cancel_batches, latest_batches, resume_stale_batches, start_batch, summary
from app.services.paths import UnsafePath, contained_path
from app.ui.state import Console, TabLoad, allows, require, user_errors, username_of
from db.cases import read_case_rows

MAX_PATH_CHARS = 1000  # longer paths are refused unread
REFRESH_S = 2.0  # how often an open page re-reads its user's running batches


def resolve_batch_path(console: Console, upload: str | None, path_text: str) -> Path:
    """``path_text`` when it names a file under ``console.batch_root`` (``upload`` is ignored:
    uploads are refused by the console's HTTP limits)."""
    if not isinstance(path_text, str) or not path_text.strip():
        raise gr.Error("path: give a path under the data folder", print_exception=False)
    if len(path_text) > MAX_PATH_CHARS:
        raise gr.Error(f"path: at most {MAX_PATH_CHARS} characters (got {len(path_text)})",
                       print_exception=False)
    try:
        path = contained_path(console.batch_root, path_text, "path")
    except (UnsafePath, OSError) as exc:
        raise gr.Error(str(exc) if isinstance(exc, UnsafePath) else "path: not a usable path",
                       title="Path refused", print_exception=False) from exc
    if not path.is_file():
        raise gr.Error(f"path: {path_text!r} is not a file under {console.batch_root.resolve()}",
                       print_exception=False)
    return path


def create_batch_tab(console: Console) -> TabLoad:
    """Declare the Batch-run tab's widgets and wire its events; returns what opening the tab loads
    (this user's latest batch runs)."""
    path_text = gr.Textbox(
        label="JSONL of cases under the data folder (one case, or a dataset row with 'input', per line)",
        placeholder="data/generated/validation.jsonl",
    )
    with gr.Row():
        run = gr.Button("Run both variants", variant="primary")
        refresh = gr.Button("Refresh status")
        cancel = gr.Button("Cancel batch", variant="stop")
    summary_box = gr.Markdown(elem_id="batch-summary")
    seen_running = gr.State("")  # the running batches the last tick showed ("" when none)

    def _status(user: str) -> str:
        runs = "\n".join(f"- {summary(r)}" for r in latest_batches(console.store, user))
        others = "\n".join(f"- {summary(r)} (by {r.actor})" for r in latest_batches(console.store, None, 20)
                           if r.actor != user and r.status == "running")
        text = f"Your latest batch runs:\n\n{runs}" if runs else \
            "No batch runs yet: give a file under the data folder above and run it."
        if not others:
            return text
        return f"{text}\n\nRunning for others (they share the model with yours):\n\n{others}"

    def run_file(path_v: str, request: gr.Request) -> str:
        user = require(console, request, "batch")
        path = resolve_batch_path(console, None, path_v)
        with user_errors():
            cases = read_case_rows(path)
            console.quotas.take(user, "batch")
            job = start_batch(console.store, console.engine, cases, user, source=path_v.strip(),
                              console=console.name)
        started = f"Started batch {job.run_id}: {len(cases)} cases; answers land in the queue as they come."
        return f"{started}\n\n{_status(user)}"

    def show(request: gr.Request) -> dict[Any, Any]:
        user = require(console, request, "batch")
        if console.engine is not None:  # a run whose console stopped continues here
            resume_stale_batches(console.store, console.engine, console.name)
        return {summary_box: _status(user)}

    def stop(request: gr.Request) -> str:
        user = require(console, request, "batch")
        stopping = cancel_batches(console.store, user, runs_of=user)
        said = "Cancelling after the chunk being answered (its answers are kept)." if stopping else \
            "No batch run of yours is running."
        return f"{said}\n\n{_status(user)}"

    def tick_batches(seen: str, request: gr.Request) -> Any:
        """Every REFRESH_S: the status while one of the user's batches runs, and once more when the
        last one ends; otherwise nothing is sent."""
        if not allows(console.store, request, "batch"):  # not require(): a tick refuses nothing
            return gr.skip()
        user = username_of(request)
        running = ",".join(str(r.id) for r in latest_batches(console.store, user) if r.status == "running")
        if not running and not seen:
            return gr.skip()
        return {summary_box: _status(user or "anonymous"), seen_running: running}

    gr.Timer(REFRESH_S).tick(tick_batches, seen_running, [summary_box, seen_running],
                             api_visibility="private", show_progress="hidden")
    run.click(run_file, [path_text], [summary_box], api_visibility="private")
    refresh.click(show, None, [summary_box], api_visibility="private")
    cancel.click(stop, None, [summary_box], api_visibility="private")
    return TabLoad(show=show, outputs=[summary_box], need="batch")
