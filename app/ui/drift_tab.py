"""Drift tab (ops): recent cases vs the training data, per dimension, plus reviewer override rates.
The figures come from app.services.drift; this module only lays them out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app.services.drift import (
    MIN_SAMPLE,
    PSI_THRESHOLD,
    TVD_THRESHOLD,
    drift_report,
    override_rates,
    plot_drift,
)
from app.ui.render import readable_figures
from app.ui.state import Console, require

TRAINING_SET = Path("data/generated/train.jsonl")


def create_drift_tab(console: Console, training_set: Path = TRAINING_SET) -> None:
    """Declare the Drift tab's widgets and wire its events."""
    gr.Markdown(f"Recent cases against the training data (`{training_set}`): a dimension is marked "
                f"drifted when its total variation distance exceeds {TVD_THRESHOLD} or its PSI "
                f"{PSI_THRESHOLD}, from {MIN_SAMPLE} recent cases on. Eval-set demo cases are left out.")
    with gr.Row():
        last_n = gr.Number(200, label="last N cases", precision=0, minimum=10)
        run = gr.Button("Check drift", variant="primary", elem_id="drift-run")
    notes = gr.Markdown(elem_id="drift-notes")
    table = gr.Dataframe(interactive=False, label="Per dimension")
    plot = gr.Plot(label="Shares: training vs recent")
    overrides = gr.Dataframe(interactive=False, label="Reviewer overrides of the champion, per rule")

    def check(n: float, request: gr.Request) -> tuple[Any, ...]:
        require(console, request, "retrain")
        with console.store.session() as s:
            count, report = drift_report(s, training_set, int(n or 200))
            rates = override_rates(s)
        if not report:
            return "No recent cases in the store yet.", pd.DataFrame(), None, rates
        few = count < MIN_SAMPLE
        head = f"**{count} recent cases.**" + (
            f" Too few to judge drift: it takes at least {MIN_SAMPLE}." if few else "")
        lines = [head] + [("⚠️ " if d.drifted else "") + d.note for d in report]
        verdict = "too few cases" if few else None
        frame = pd.DataFrame([[d.dimension, d.tvd, d.psi, verdict or ("yes" if d.drifted else "no")]
                              for d in report], columns=["dimension", "TVD", "PSI", "drifted"])
        return ("\n\n".join(lines), readable_figures(frame, decimals=("TVD", "PSI")), plot_drift(report),
                readable_figures(rates, percent=("override_rate",)))

    run.click(check, last_n, [notes, table, plot, overrides], api_visibility="private")
