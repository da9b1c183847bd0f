"""Batch run (ops): a JSONL file of cases (uploaded, or a path under the data folder) answered by
both variants with a progress bar; the results land in the queue."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from app.services.answers import run_batch
from app.services.paths import UnsafePath, contained_path
from app.ui.state import Console, require, user_errors
from db.cases import read_case_rows


def resolve_batch_path(console: Console, upload: str | None, path_text: str) -> Path:
    """The uploaded file, else ``path_text`` when it lies under ``console.batch_root``."""
    if upload:
        return Path(upload)
    if not path_text.strip():
        raise gr.Error("file: upload a JSONL file or give a path under the data folder")
    try:
        path = contained_path(console.batch_root, path_text, "path")
    except UnsafePath as exc:
        raise gr.Error(str(exc), title="Path refused") from exc
    if not path.is_file():
        raise gr.Error(f"path: {path_text!r} is not a file under {console.batch_root.resolve()}")
    return path


def create_batch_tab(console: Console) -> None:
    """Declare the Batch-run tab's widgets and wire its events."""
    upload = gr.File(
        label="JSONL of cases (one case, or a dataset row with 'input', per line)",
        file_types=[".jsonl"],
        type="filepath",
    )
    path_text = gr.Textbox(
        label="…or a path under the data folder", placeholder="data/generated/validation.jsonl"
    )
    run = gr.Button("Run both variants", variant="primary")
    summary = gr.Markdown()
    table = gr.Dataframe(interactive=False)

    def run_file(
        file: str | None,
        path_v: str,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[str, pd.DataFrame]:
        user = require(console, request, "batch")
        path = resolve_batch_path(console, file, path_v)
        with user_errors():
            cases = read_case_rows(path)
        progress(0, desc="answering")
        pks = run_batch(
            console.store,
            console.engine,
            cases,
            user,
            progress=lambda done, total: progress((done, total), desc="answers"),
        )
        frame = pd.DataFrame({"#": pks, "case_id": [c.case_id for c in cases]})
        return f"Answered {len(cases)} cases with both variants; they are in the queue.", frame

    run.click(run_file, [upload, path_text], [summary, table], api_visibility="private")
