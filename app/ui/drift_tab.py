"""Drift tab (ops): recent cases vs the training data, per dimension, with how sure each distance is,
plus reviewer override rates. The figures come from app.services.drift; this module only lays them
out. Loads when the tab is opened (the last 200 cases), again on "Check drift"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app.services.drift import (
    ALPHA,
    MIN_SAMPLE,
    PSI_THRESHOLD,
    TVD_THRESHOLD,
    drift_report,
    drift_table,
    override_rates,
    plot_drift,
)
from app.ui.render import readable_figures
from app.ui.state import Console, TabLoad, require

TRAINING_SET = Path("data/generated/train.jsonl")
DEFAULT_LAST_N = 200
DRIFT_COLUMNS = ["dimension", "TVD", "TVD 95% CI", "chance TVD", "p-value", "PSI", "drifted"]
OVERRIDE_COLUMNS = ["rule", "reviewed", "overridden", "override_rate"]


def drift_view(
    console: Console, training_set: Path, last_n: int
) -> tuple[str, pd.DataFrame, Any, pd.DataFrame]:
    """(notes, per-dimension table, figure or None, override table) for the last ``last_n`` cases."""
    with console.store.session() as s:
        rates = readable_figures(override_rates(s), percent=("override_rate",))
        try:
            count, report = drift_report(s, training_set, last_n)
        except OSError:  # the training file is not there: say so, show the overrides all the same
            note = f"No training data at `{training_set}`: drift needs it to compare recent cases against."
            return note, pd.DataFrame(columns=DRIFT_COLUMNS), None, rates
    if rates.empty:
        rates = pd.DataFrame(columns=OVERRIDE_COLUMNS)
    if not report:
        note = ("No recent cases in the store yet (eval-set demo cases are left out): drift is measured "
                "once cases are tried, imported or batch-run.")
        return note, pd.DataFrame(columns=DRIFT_COLUMNS), None, rates
    head = f"**{count} recent case{'' if count == 1 else 's'}.**"
    if count < MIN_SAMPLE:
        head += f" Too few to judge drift: it takes at least {MIN_SAMPLE}."
    lines = [head] + [("⚠️ " if d.drifted else "") + d.note for d in report]
    if rates.empty:
        lines.append("No reviews of the champion's answers yet: override rates show once cases are reviewed.")
    table = readable_figures(drift_table(count, report), decimals=("TVD", "chance TVD", "PSI"))
    table["p-value"] = [f"{p:.3f}" if p is not None and not pd.isna(p) else "" for p in table["p-value"]]
    return "\n\n".join(lines), table, plot_drift(report), rates


def create_drift_tab(console: Console, training_set: Path = TRAINING_SET) -> TabLoad:
    """Declare the Drift tab's widgets and wire its events; returns what opening the tab loads."""
    gr.Markdown(f"Recent cases against the training data (`{training_set}`): a dimension is marked "
                f"drifted when its total variation distance (TVD) exceeds {TVD_THRESHOLD} or its PSI "
                f"{PSI_THRESHOLD}, chance alone would move it that far less than {ALPHA:.0%} of the time "
                f"(p-value: samples of the same size drawn from the training data), from {MIN_SAMPLE} "
                "recent cases on. *chance TVD*: what such samples stay under 95% of the time; *TVD 95% CI*: "
                "the TVD give or take how far resampling the recent cases moves their shares. Eval-set "
                "demo cases are left out.")
    with gr.Row():
        last_n = gr.Number(DEFAULT_LAST_N, label="last N cases", precision=0, minimum=10)
        run = gr.Button("Check drift", variant="primary", elem_id="drift-run")
    notes = gr.Markdown(elem_id="drift-notes")
    table = gr.Dataframe(pd.DataFrame(columns=DRIFT_COLUMNS), interactive=False, label="Per dimension",
                         elem_id="drift-table")
    plot = gr.Plot(label="Shares: training vs recent")
    overrides = gr.Dataframe(pd.DataFrame(columns=OVERRIDE_COLUMNS), interactive=False,
                             label="Reviewer overrides of the champion, per rule", elem_id="drift-overrides")
    outputs = [notes, table, plot, overrides]

    def check(n: float, request: gr.Request) -> dict[Any, Any]:
        require(console, request, "retrain")
        return dict(zip(outputs, drift_view(console, training_set, int(n or DEFAULT_LAST_N)), strict=True))

    def show(request: gr.Request) -> dict[Any, Any]:
        """Opening the tab: the last DEFAULT_LAST_N cases, and the box says so."""
        return {**check(DEFAULT_LAST_N, request), last_n: DEFAULT_LAST_N}

    run.click(check, last_n, outputs, api_visibility="private")
    return TabLoad(show=show, outputs=[*outputs, last_n], need="retrain")
