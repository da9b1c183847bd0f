"""Metrics tab: decision accuracy, violation rate and JSON validity per model version, reviewer
agreement with each model, corrections per rule id, as plots (aggregation lives in app.services.metrics)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on the server
import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from app.services.metrics import (  # noqa: E402
    METRIC_NAMES,  # noqa: E402
    corrections_per_rule,
    model_metrics,
    reviewer_agreement,
)
from app.ui.render import readable_figures  # noqa: E402
from app.ui.review_tab import agreement_frame  # noqa: E402
from app.ui.state import Console, require  # noqa: E402


def model_figure(frame: pd.DataFrame) -> Figure:
    """Grouped bars: one group per metric, one bar per model version/variant."""
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.subplots()
    if frame.empty:
        ax.text(0.5, 0.5, "no model runs yet", ha="center")
        return fig
    frame = frame.assign(model=frame.variant + " · " + frame.model_version)
    models = sorted(frame.model.unique())
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        part = frame[frame.model == model].set_index("metric").reindex(list(METRIC_NAMES))
        xs = [j + i * width for j in range(len(METRIC_NAMES))]
        ax.bar(xs, part.value.fillna(0), width, label=f"{model} (n={int(part.n.max())})")
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(METRIC_NAMES))], METRIC_NAMES)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return fig


def bar_figure(frame: pd.DataFrame, x: str, y: str, title: str, ylim: float | None = None) -> Figure:
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    if frame.empty:
        ax.text(0.5, 0.5, "no reviews yet", ha="center")
    else:
        ax.bar(frame[x].astype(str), frame[y])
        if ylim:
            ax.set_ylim(0, ylim)
    ax.set_title(title)
    return fig


def create_metrics_tab(console: Console) -> None:
    """Declare the Metrics tab's widgets and wire its events."""
    refresh = gr.Button("Refresh metrics")
    models_plot = gr.Plot(label="Per model version")
    with gr.Row():
        agreement_plot = gr.Plot(label="Reviewer agreement with each model")
        rules_plot = gr.Plot(label="Corrections per rule id")
    table = gr.Dataframe(interactive=False, label="Figures")
    agreement_table = gr.Dataframe(
        interactive=False,
        label="Inter-reviewer agreement (Cohen's kappa) and each model's agreement with reviewers",
    )

    def show(request: gr.Request) -> tuple[Figure, Figure, Figure, pd.DataFrame, pd.DataFrame]:
        require(console, request, "compare")
        with console.store.session() as s:
            models, agreement, rules = model_metrics(s), reviewer_agreement(s), corrections_per_rule(s)
        return (
            model_figure(models),
            bar_figure(agreement, "variant", "agreement", "Final decision = model decision", ylim=1),
            bar_figure(rules, "rule", "corrections", "Corrected cases by deciding rule"),
            readable_figures(models, percent=("value",)),
            agreement_frame(console),
        )

    outputs = [models_plot, agreement_plot, rules_plot, table, agreement_table]
    refresh.click(show, None, outputs, api_visibility="private")
