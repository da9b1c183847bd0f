"""Metrics tab: the frozen sets (eval and the out-of-distribution stress set) side by side as
scripts/evaluate.py measured them, each beside its copies with item names our catalogue does not have;
decision accuracy, violation rate and JSON validity per model version on the console's own stored
runs; reviewer agreement with each model; corrections per rule id. Plots and tables; the aggregation
lives in app.services.metrics. Loads when the tab is opened."""

from __future__ import annotations

from itertools import cycle
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on the server
import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from app.services.metrics import (  # noqa: E402
    METRIC_NAMES,
    REPORT_COLUMNS,
    WHOLE_ANSWER_NAMES,
    corrections_per_rule,
    evaluation_reports,
    model_metrics,
    reviewer_agreement,
)
from app.ui.render import readable_figures  # noqa: E402
from app.ui.review_tab import AGREEMENT_COLUMNS, agreement_frame  # noqa: E402
from app.ui.state import Console, TabLoad, require  # noqa: E402
from engine.metrics import NAME_COPIES  # noqa: E402

MODEL_COLUMNS = ["model_version", "variant", "n", *METRIC_NAMES]
# A frozen set, its renamed copy and its titled copy: the set's colour, then lighter shades of it.
COPY_SHADES = {"eval": ["#1f4e99", "#6f9fd8", "#b9d0ee"], "stress": ["#c2410c", "#f59e6b", "#fbcfad"]}
SET_COLORS = {name: shades[:2] for name, shades in COPY_SHADES.items()}  # eval/stress plot: one per variant
REPORTS_ROOT = Path(".")  # scripts/evaluate.py's --out folders (runs/) and benchmarks/ lie under it


def _percent_axis(ax: Axes) -> None:
    ax.set_ylim(0, 1.12)  # room above a 100% bar for its label
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def _empty(fig: Figure, text: str) -> Figure:
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()
    return fig


def grouped_bars(
    groups: dict[str, list[float]], labels: tuple[str, ...], title: str, colors: list[str] | None = None,
    legend_cols: int = 2,
) -> Figure:
    """Bars of shares (0..1), one group per label, one bar per key of ``groups`` (in ``colors`` when
    given); each bar labelled with its percentage (one decimal); the legend under the plot, clear of
    the bars, in ``legend_cols`` columns."""
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    if not groups:
        return _empty(fig, "no figures yet")
    ax = fig.subplots()
    width = 0.8 / len(groups)
    for i, (name, values) in enumerate(groups.items()):
        color = colors[i] if colors else None
        bars = ax.bar([j + i * width for j in range(len(labels))], values, width, label=name, color=color)
        ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], fontsize=7 if len(groups) <= 4 else 5.5,
                     padding=1)  # six bars a group: smaller, so "100.0%" labels stay apart
    ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(labels))], labels)
    _percent_axis(ax)
    ax.set_title(title, loc="left", fontsize=11)
    fig.legend(loc="outside lower center", ncols=min(len(groups), legend_cols), fontsize=8, frameon=False)
    return fig


def model_figure(frame: pd.DataFrame) -> Figure:
    """Grouped bars: one group per metric, one bar per model version/variant (stored runs)."""
    if frame.empty:
        return _empty(Figure(figsize=(9, 3.8), layout="constrained"), "no model runs yet")
    frame = frame.assign(model=frame.variant + " · " + frame.model_version)
    groups = {}
    for model in sorted(frame.model.unique()):
        part = frame[frame.model == model].set_index("metric").reindex(list(METRIC_NAMES))
        groups[f"{model} (n={int(part.n.max())})"] = list(part.value.fillna(0))
    return grouped_bars(groups, METRIC_NAMES, "Stored runs: each model version on the console's cases")


def sets_figure(reports: pd.DataFrame) -> Figure:
    """Eval beside stress: the newest report of each set and variant, one bar per (set, variant)."""
    frozen = reports[reports["set"].isin(list(SET_COLORS))]
    newest = frozen.drop_duplicates(["set", "variant"]).to_dict("records")  # newest first within a set
    groups = {f"{r['set']} · {r['variant']} (n={r['n']})": [float(r[m] or 0) for m in METRIC_NAMES]
              for r in newest}
    palette = {name: cycle(shades) for name, shades in SET_COLORS.items()}
    colors = [next(palette[r["set"]]) for r in newest]  # eval in blues, stress in oranges
    title = "Frozen sets: eval (in distribution) beside stress (out of it), newest report of each"
    return grouped_bars(groups, METRIC_NAMES, title, colors)


def names_figure(reports: pd.DataFrame) -> Figure:
    """The fine-tuned model on each frozen set beside its copies with item names our catalogue does not
    have (renamed, titled): the model version of the set's newest report, and that version's newest
    report on each copy; one bar per set and copy, the copies in lighter shades of their set's colour.
    No copy measured for it: a figure that says so."""
    tuned = reports[reports["variant"] == "finetuned"]  # newest first within a set
    groups, colors, copies = {}, [], 0
    for frozen in SET_COLORS:
        newest = tuned[tuned["set"] == frozen]
        if newest.empty:
            continue
        model = newest.iloc[0]["model"]
        for shade, copy in zip(COPY_SHADES[frozen], ("", *NAME_COPIES), strict=True):
            name = f"{frozen}_{copy}" if copy else frozen
            rows = tuned[(tuned["set"] == name) & (tuned["model"] == model)]
            if not rows.empty:
                row = rows.iloc[0]
                groups[f"{frozen} · {copy or 'catalogue names'} (n={row['n']})"] = [
                    float(row[m] or 0) for m in METRIC_NAMES]
                colors.append(shade)
                copies += bool(copy)
    if not copies:
        return _empty(Figure(figsize=(9, 3.8), layout="constrained"),
                      "no renamed or titled copy measured for the newest model yet")
    title = "Item names our catalogue lacks: fine-tuned, each set beside its renamed and titled copies"
    return grouped_bars(groups, METRIC_NAMES, title, colors, legend_cols=3)


def bar_figure(frame: pd.DataFrame, x: str, y: str, title: str, percent: bool = False) -> Figure:
    """One bar per row of ``frame``; ``percent``: ``y`` is a share, drawn and labelled as a percentage."""
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    if frame.empty:
        return _empty(fig, "no reviews yet")
    ax = fig.subplots()
    bars = ax.bar(frame[x].astype(str), frame[y])
    if percent:
        _percent_axis(ax)
        ax.bar_label(bars, labels=[f"{v:.1%}" for v in frame[y]], fontsize=8)
    else:
        ax.bar_label(bars, fontsize=8)
        ax.margins(y=0.15)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.set_title(title, loc="left", fontsize=10)
    return fig


def model_table(models: pd.DataFrame) -> pd.DataFrame:
    """The long per-metric frame as one row per model version and variant, percentages with one decimal."""
    if models.empty:
        return pd.DataFrame(columns=MODEL_COLUMNS)
    wide = models.pivot_table(index=["model_version", "variant", "n"], columns="metric", values="value")
    wide = wide.reset_index().reindex(columns=MODEL_COLUMNS)
    return readable_figures(wide, percent=METRIC_NAMES)


def _sentence(count: int, what: str, none: str) -> str:
    return f"{count} {what}." if count else none


def create_metrics_tab(console: Console, reports_root: Path = REPORTS_ROOT) -> TabLoad:
    """Declare the Metrics tab's widgets and wire its refresh; returns what opening the tab loads."""
    refresh = gr.Button("Refresh metrics", size="sm")
    gr.Markdown(
        "### Frozen sets: eval beside stress\n"
        "As `scripts/evaluate.py` measured them (its `summary.json`, under `runs/` and `benchmarks/`). "
        "**eval** is drawn like the training data; **stress** (`data/generated/stress.jsonl`) is drawn "
        "independently: out of distribution. Each row names the report it came from."
    )
    sets_note = gr.Markdown(elem_id="metrics-sets-note")
    sets_plot = gr.Plot(show_label=False)
    gr.Markdown(
        "**Item names our catalogue does not have.** No rule reads an item's name, yet a model can learn "
        "our catalogue's names instead of the rules. The renamed copies (`*_renamed.jsonl`) give every "
        "item a plain name from words never trained on; the titled copies (`*_titled.jsonl`) a "
        "retailer-style title (brand, model code, colour, a variant with digits). Same cases, same "
        "expected decisions."
    )
    names_plot = gr.Plot(show_label=False, elem_id="metrics-names-plot")
    sets_table = gr.Dataframe(
        pd.DataFrame(columns=REPORT_COLUMNS),
        interactive=False,
        label="Evaluation reports",
        elem_id="metrics-sets",
    )
    gr.Markdown(
        "### This console's stored runs\nEvery answer the console stored, by model version: the cases "
        "of its queue (the demo queue on a fresh console), tried and batch cases. These are not a frozen "
        "set: compare models on the reports above. Label: the rule engine's expected decision."
    )
    models_note = gr.Markdown(elem_id="metrics-models-note")
    models_plot = gr.Plot(show_label=False)
    table = gr.Dataframe(
        pd.DataFrame(columns=MODEL_COLUMNS), interactive=False, label="Figures", elem_id="metrics-models"
    )
    with gr.Row():
        agreement_plot = gr.Plot(label="Reviewer agreement with each model")
        rules_plot = gr.Plot(label="Corrections per rule id")
    agreement_table = gr.Dataframe(
        pd.DataFrame(columns=AGREEMENT_COLUMNS),
        interactive=False,
        label="Inter-reviewer agreement (Cohen's kappa) and each model's agreement with reviewers",
    )

    def show(request: gr.Request) -> dict[Any, Any]:
        require(console, request, "compare")
        with console.store.session() as s:
            models, agreement, rules = model_metrics(s), reviewer_agreement(s), corrections_per_rule(s)
        reports = evaluation_reports(reports_root)
        versions = len(models.drop_duplicates(["model_version", "variant"]))
        return {
            sets_note: _sentence(
                len(reports), "report rows (newest first within a set)",
                "No evaluation report yet: run `scripts/evaluate.py` on `data/generated/eval.jsonl` and "
                "`data/generated/stress.jsonl` (README, *Measured quality*).",
            ),
            sets_plot: sets_figure(reports),
            names_plot: names_figure(reports),
            sets_table: readable_figures(reports, percent=METRIC_NAMES + WHOLE_ANSWER_NAMES),
            models_note: _sentence(
                versions, "model versions answered here",
                "No model runs yet: answers are stored when a case is opened or a batch runs.",
            ),
            models_plot: model_figure(models),
            table: model_table(models),
            agreement_plot: bar_figure(agreement, "variant", "agreement", "Final decision = model decision",
                                       percent=True),
            rules_plot: bar_figure(rules, "rule", "corrections", "Corrected cases by deciding rule"),
            agreement_table: agreement_frame(console),
        }

    outputs = [sets_note, sets_plot, names_plot, sets_table, models_note, models_plot, table, agreement_plot,
               rules_plot, agreement_table]
    refresh.click(show, None, outputs, api_visibility="private")
    return TabLoad(show=show, outputs=outputs, need="compare")
