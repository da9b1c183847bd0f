"""Export tab (ops only): reviewed answers not exported yet -> an SFT JSONL file plus manifest."""

from __future__ import annotations

from html import escape

import gradio as gr
import pandas as pd

from app.ui import actions
from app.ui.state import Console, TabLoad, require
from db.exports import list_exports

HISTORY_COLUMNS = ["#", "created_at", "by", "count", "path", "sha256"]


def history(console: Console) -> pd.DataFrame:
    """Past exports, newest first, as the tab's table (real headers when there are none)."""
    with console.store.session() as s:
        rows = list_exports(s)
    return pd.DataFrame(
        [[e.id, e.created_at, e.created_by, e.count, e.path, e.sha256] for e in rows], columns=HISTORY_COLUMNS
    )


def create_export_tab(console: Console) -> TabLoad:
    """Declare the Export tab's widgets and wire its events; returns what the tab shows when opened
    (its past exports)."""
    gr.Markdown(
        "Exports approved and corrected answers not exported yet, in TRL's conversational "
        "`messages` format. Cases of the eval set are refused; duplicates are dropped. Answers whose "
        "consistency check found issues (policy refs that contradict the reasoning or the rule engine, "
        "a next action that does not fit the decision, garbled text) are skipped unless included below."
    )
    include = gr.Checkbox(
        False, label="Include answers with consistency issues (each marked in its row with its issue codes)",
        elem_id="export-include-inconsistent",
    )
    run = gr.Button("Export corrections", variant="primary", elem_id="export-run")
    result = gr.HTML(elem_id="export-result")
    table = gr.Dataframe(pd.DataFrame(columns=HISTORY_COLUMNS), interactive=False, label="Past exports",
                         elem_id="export-history")

    def do_export(include_inconsistent: bool, request: gr.Request) -> tuple[str, pd.DataFrame]:
        try:
            res = actions.export(console, request, bool(include_inconsistent))
        except gr.Error as exc:
            past = pd.DataFrame(columns=HISTORY_COLUMNS) if exc.title == "Not allowed" else history(console)
            return f"<div class='export-error' style='color:#b91c1c'>{escape(exc.message)}</div>", past
        skipped = "; ".join(f"{len(v)} skipped as {k}" for k, v in res.skipped.items()) or "none skipped"
        if res.marked:
            skipped += f"; {len(res.marked)} with consistency issues included, marked in their rows"
        pairs = (f" {res.preference_count} corrections also as preference pairs (DPO) in "
                 f"<code>{escape(res.preferences_path)}</code>." if res.preferences_path else "")
        return (
            f"<div class='export-ok'>Exported <b>{res.count}</b> examples to <code>{escape(res.path)}</code> "
            f"(sha256 {res.sha256}); {escape(skipped)}.{pairs}</div>",
            history(console),
        )

    def show_history(request: gr.Request) -> pd.DataFrame:
        require(console, request, "export")
        return history(console)

    run.click(do_export, include, [result, table], api_visibility="private")
    gr.Button("Show past exports").click(show_history, None, table, api_visibility="private")
    return TabLoad(show=lambda request: {table: show_history(request)}, outputs=[table], need="export")
