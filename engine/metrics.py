"""Evaluation figures: from (case, label, ModelAnswer) records to per-variant summaries, tables, a plot.

The one implementation of the evaluation figures: ``scripts/evaluate.py``, ``engine.champion`` and
the console's Metrics tab (``app.services.metrics``, from stored model runs) all build
:class:`EvalRecord` s with :func:`make_record` and summarise them here, so they report the same numbers.
A record's label is the dataset's decision (the console uses the rule engine's expected decision);
the rule engine supplies the deciding rule, the rule chain and the violation codes. An answer that
is not ``ok`` (invalid, truncated: it did not parse as a schema-valid answer) counts as wrong and
as not JSON-valid, never as a violation (policy-spec.md section 5); no decision is guessed from
broken JSON.

Beyond the decision, a record checks the whole answer against the rule engine's reference answer
(:func:`policies.synth_text.reference_answer`, which the generator writes as every row's output):
``policy_refs`` exactly (as a set), ``next_action`` (the same text, case and spacing aside), a
text check (:func:`engine.consistency.text_problems`) and a facts check
(:func:`policies.facts.misstated_facts`: no day count, sum of money, claim count, region or percentage
the case and the policy contradict); and the share of answers the guard would send unread
(``auto_send_rate``: no violation, no flag, sent text fit; :mod:`engine.guard`). :data:`TARGETS` are
issue 15's targets; :func:`check_targets` says which a summary meets.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.consistency import cites_rule as cites_rule  # re-exported: the text check's parts
from engine.consistency import repeated_fragment as repeated_fragment
from engine.consistency import text_problems
from engine.guard import guard
from engine.types import DatasetError as DatasetError  # re-exported: load_rows raises it
from engine.types import ModelAnswer
from policies import (
    DECISIONS,
    RULE_IDS,
    VIOLATION_CODES,
    Case,
    InvalidCase,
    check,
    expected_decision,
    parse_case,
)
from policies.facts import misstated_facts
from policies.synth_text import reference_answer

INVALID = "<invalid>"  # the confusion matrix's column for answers with no decision


# --- the dataset ---------------------------------------------------------------------------------
def load_rows(path: str | Path, max_examples: int | None = None) -> list[tuple[Case, str]]:
    """(case, labelled decision) per row of a generator JSONL file. Raises :class:`DatasetError`."""
    rows: list[tuple[Case, str]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if max_examples is not None and len(rows) >= max_examples:
                break
            try:
                row = json.loads(line)
                case = parse_case(row["input"])
                label = row["output"]["decision"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                msg = f"not a row with input and output.decision ({exc})"
                raise DatasetError(path, lineno, msg) from None
            except InvalidCase as exc:
                raise DatasetError(path, lineno, f"input: {exc}") from None
            rows.append((case, label))
    return rows


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- records and figures --------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalRecord:
    """One case answered by one variant, with what the evaluation needs to slice it."""

    case_id: str
    variant: str
    label: str  # the dataset's decision
    rule: str  # the deciding rule of the rule engine
    chain: str  # the rule chain: its policy_refs joined by "+" ("NRC-3+LIM-1"), as policies.synth.chain_of
    request_type: str
    region: str
    predicted: str | None
    status: str
    violations: tuple[str, ...]
    latency_s: float
    input_tokens: int
    output_tokens: int
    # The whole answer (False / "no_answer" for an answer that is not ok):
    refs_exact: bool = False  # policy_refs == the rule engine's, as a set
    next_action_match: bool = False  # next_action == the reference answer's, case and spacing aside
    text_problems: tuple[str, ...] = ("no_answer",)  # text_problems(); () = the text check passed
    misstated: tuple[str, ...] = ("no_answer",)  # kinds misstated_facts() found; () = the facts check passed
    auto_send: bool = False  # the guard would send this answer unread, judged alone (engine.guard.guard)

    @property
    def correct(self) -> bool:
        return self.predicted == self.label

    @property
    def text_ok(self) -> bool:
        return not self.text_problems

    @property
    def facts_ok(self) -> bool:
        return not self.misstated

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "correct": self.correct}


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def make_record(case: Case, label: str, answer: ModelAnswer) -> EvalRecord:
    """The record of ``answer`` to ``case``; violations and the whole-answer checks are made only for
    a valid answer (an invalid one fails them all). ``auto_send`` is the guard's verdict on the answer
    alone (no MODELS_DISAGREE: a set is evaluated one variant at a time)."""
    body = answer.answer if answer.status == "ok" else None
    decision = body["decision"] if body else None
    expected = expected_decision(case)
    whole: dict[str, Any] = {}
    if body:
        whole = {"refs_exact": set(body["policy_refs"]) == set(expected.policy_refs),
                 "next_action_match": _same_text(body["next_action"], reference_answer(case).next_action),
                 "text_problems": text_problems(case, body),
                 "misstated": tuple(sorted({m.kind for m in misstated_facts(case, body)}))}
    return EvalRecord(
        case_id=case.case_id, variant=answer.variant, label=label, rule=expected.rule,
        chain="+".join(expected.policy_refs),
        request_type=case.request_type, region=case.region, predicted=decision, status=answer.status,
        violations=tuple(check(case, decision)) if decision else (), latency_s=answer.latency_s,
        input_tokens=answer.input_tokens, output_tokens=answer.output_tokens,
        auto_send=guard(case, answer).auto_send, **whole,
    )


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _accuracy_by(records: Sequence[EvalRecord], key: str) -> dict[str, dict[str, float]]:
    groups: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in records:
        groups[getattr(r, key)].append(r)
    return {k: {"n": len(g), "accuracy": sum(r.correct for r in g) / len(g)}
            for k, g in sorted(groups.items())}


def _violations_by_chain(records: Sequence[EvalRecord]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in records:
        groups[r.chain].append(r)
    return {k: {"n": len(g), "accuracy": sum(r.correct for r in g) / len(g),
                "violating": sum(bool(r.violations) for r in g)}
            for k, g in sorted(groups.items())}


def confusion_matrix(records: Sequence[EvalRecord]) -> dict[str, dict[str, int]]:
    """label -> predicted (or ``<invalid>``) -> count, over the labels and predictions seen."""
    matrix: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        matrix[r.label][r.predicted or INVALID] += 1
    return {label: dict(row) for label, row in matrix.items()}


def summarize_variant(records: Sequence[EvalRecord], wall_s: float | None = None) -> dict[str, Any]:
    """Figures of one variant's records. ``wall_s``: the run's wall time (else the latencies' sum).

    Out keys: n, decision_accuracy, violation_rate, violations (count per code), json_validity,
    truncated_rate, policy_refs_exact, next_action_match, text_check, facts_check, auto_send_rate
    (shares of all n cases), text_problems and facts_misstated (cases per problem or kind of fact,
    invalid answers as ``no_answer``), latency_p50_s, latency_p95_s, mean_output_tokens,
    throughput_cases_per_s, by_request_type, by_region, by_rule, by_chain (per rule chain: n,
    accuracy, violating = cases with a hard violation), confusion.
    """
    n = len(records)
    if n == 0:
        raise ValueError("no records to summarise")
    latencies = [r.latency_s for r in records]
    wall = wall_s if wall_s is not None else sum(latencies)
    codes = Counter(code for r in records for code in r.violations)
    problems = Counter(p for r in records for p in r.text_problems)
    misstated = Counter(kind for r in records for kind in r.misstated)
    return {
        "n": n,
        "decision_accuracy": sum(r.correct for r in records) / n,
        "violation_rate": sum(bool(r.violations) for r in records) / n,
        "violations": {code: codes.get(code, 0) for code in VIOLATION_CODES},
        "json_validity": sum(r.status == "ok" for r in records) / n,
        "truncated_rate": sum(r.status == "truncated" for r in records) / n,
        "policy_refs_exact": sum(r.refs_exact for r in records) / n,
        "next_action_match": sum(r.next_action_match for r in records) / n,
        "text_check": sum(r.text_ok for r in records) / n,
        "text_problems": dict(sorted(problems.items())),
        "facts_check": sum(r.facts_ok for r in records) / n,
        "facts_misstated": dict(sorted(misstated.items())),
        "auto_send_rate": sum(r.auto_send for r in records) / n,
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": _percentile(latencies, 95),
        "mean_output_tokens": sum(r.output_tokens for r in records) / n,
        "throughput_cases_per_s": n / wall if wall > 0 else 0.0,
        "by_request_type": _accuracy_by(records, "request_type"),
        "by_region": _accuracy_by(records, "region"),
        "by_rule": _accuracy_by(records, "rule"),
        "by_chain": _violations_by_chain(records),
        "confusion": confusion_matrix(records),
    }


def summarize(records: Iterable[EvalRecord],
              wall_s: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Per-variant summaries (:func:`summarize_variant`), keyed by variant in first-seen order."""
    by_variant: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in records:
        by_variant[r.variant].append(r)
    return {v: summarize_variant(rs, (wall_s or {}).get(v)) for v, rs in by_variant.items()}


# --- issue 15's targets -----------------------------------------------------------------------------
# (figure, "min" | "max", bound) per frozen set, for the fine-tuned model; the base is not held to them.
TARGETS: dict[str, tuple[tuple[str, str, float], ...]] = {
    "stress": (("decision_accuracy", "min", 0.97), ("violation_rate", "max", 0.005),
               ("json_validity", "min", 1.0), ("policy_refs_exact", "min", 0.95)),
    "eval": (("decision_accuracy", "min", 0.98), ("violation_rate", "max", 0.0),
             ("json_validity", "min", 1.0), ("policy_refs_exact", "min", 0.95)),
}


def targets_for(dataset: str | Path) -> str | None:
    """The :data:`TARGETS` key of a dataset by its file name (``stress.jsonl`` -> "stress"), or None."""
    name = Path(dataset).stem
    return name if name in TARGETS else None


# The copies of the frozen sets whose items carry names our catalogue does not have
# (scripts/rename_items.py): "eval_renamed.jsonl", "stress_titled.jsonl". Reported beside their set,
# held to no target of their own.
NAME_COPIES = ("renamed", "titled")


def reported_set(dataset: str | Path) -> str | None:
    """The reporting set a dataset is, by its file name: a frozen set ("eval", "stress") or a copy of
    one with other item names ("eval_renamed", "stress_titled"); None for any other file."""
    name = Path(dataset).stem
    frozen, _, copy = name.partition("_")
    return name if frozen in TARGETS and copy in ("", *NAME_COPIES) else None


def check_targets(figures: dict[str, Any], which: str) -> list[dict[str, Any]]:
    """Each target of ``TARGETS[which]`` against one variant's summary: ``{"figure", "target" (e.g.
    ">= 97.0%"), "value", "met"}``. KeyError for an unknown ``which``."""
    out = []
    for key, kind, bound in TARGETS[which]:
        value = figures[key]
        met = value >= bound if kind == "min" else value <= bound
        out.append({"figure": key, "target": f"{'>=' if kind == 'min' else '<='} {bound:.1%}",
                    "value": value, "met": met})
    return out


# --- the report ------------------------------------------------------------------------------------
_HEADLINE = (("decision_accuracy", "decision accuracy", "{:.1%}"),
             ("violation_rate", "violation rate", "{:.1%}"),
             ("json_validity", "JSON validity", "{:.1%}"), ("truncated_rate", "truncated", "{:.1%}"),
             ("policy_refs_exact", "policy_refs exact", "{:.1%}"),
             ("next_action_match", "next_action match", "{:.1%}"), ("text_check", "text check", "{:.1%}"),
             ("facts_check", "facts check", "{:.1%}"), ("auto_send_rate", "auto-send", "{:.1%}"),
             ("latency_p50_s", "latency p50 (s)", "{:.3f}"), ("latency_p95_s", "latency p95 (s)", "{:.3f}"),
             ("mean_output_tokens", "mean output tokens", "{:.1f}"),
             ("throughput_cases_per_s", "throughput (cases/s)", "{:.2f}"))


# The console's names of the three headline figures it shows (app.services.metrics.METRIC_NAMES).
METRIC_LABELS = {key: label for key, label, _ in _HEADLINE[:3]}
# ... and of the whole-answer figures beside them in its frozen-set reports
WHOLE_ANSWER_LABELS = {key: label for key, label, _ in _HEADLINE
                       if key in ("policy_refs_exact", "text_check", "facts_check", "auto_send_rate")}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _slice_table(summary: dict[str, dict[str, Any]], key: str, title: str, order: Sequence[str] = ()) -> str:
    variants = list(summary)
    keys = {k for s in summary.values() for k in s[key]}
    ordered = [k for k in order if k in keys] + sorted(keys - set(order))
    rows = []
    for k in ordered:
        n = next(s[key][k]["n"] for s in summary.values() if k in s[key])
        rows.append([k, str(n)] + [f"{summary[v][key][k]['accuracy']:.1%}" if k in summary[v][key] else "-"
                                   for v in variants])
    return f"### Accuracy per {title}\n\n" + _table([title, "n", *variants], rows)


def _chain_table(summary: dict[str, dict[str, Any]]) -> str:
    """Cases with a hard violation and accuracy per rule chain; the most violating chains first."""
    variants = list(summary)
    chains = {k for s in summary.values() for k in s["by_chain"]}

    def worst(chain: str) -> tuple[int, float, str]:
        figs = [s["by_chain"][chain] for s in summary.values() if chain in s["by_chain"]]
        return (-max(f["violating"] for f in figs), min(f["accuracy"] for f in figs), chain)

    rows = []
    for chain in sorted(chains, key=worst):
        n = next(s["by_chain"][chain]["n"] for s in summary.values() if chain in s["by_chain"])
        cells = []
        for v in variants:
            f = summary[v]["by_chain"].get(chain)
            cells.append(f"{f['violating']} ({f['accuracy']:.0%})" if f else "-")
        rows.append([chain, str(n), *cells])
    return ("### Violations per deciding rule chain (violating cases, accuracy in brackets)\n\n"
            + _table(["rule chain", "n", *variants], rows))


def render_report(summary: dict[str, dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    """A Markdown report: headline figures side by side, accuracy slices, violations per rule chain,
    one confusion matrix per variant."""
    variants = list(summary)
    parts = ["# Evaluation report", ""]
    for k, v in (meta or {}).items():
        parts.append(f"- **{k}**: {v}")
    rows = [[label] + [fmt.format(summary[v][key]) for v in variants] for key, label, fmt in _HEADLINE]
    parts += ["", "## Side by side", "", _table(["metric", *variants], rows), ""]
    viol_rows = [[code] + [str(summary[v]["violations"][code]) for v in variants] for code in VIOLATION_CODES]
    parts += ["### Violations (cases per code)", "", _table(["code", *variants], viol_rows), ""]
    parts += [_slice_table(summary, "by_request_type", "request type"), ""]
    parts += [_slice_table(summary, "by_region", "region"), ""]
    parts += [_slice_table(summary, "by_rule", "deciding rule", RULE_IDS), ""]
    parts += [_chain_table(summary), ""]
    for v in variants:
        conf = summary[v]["confusion"]
        labels = [d for d in DECISIONS if d in conf]
        cols = [d for d in (*DECISIONS, INVALID) if any(d in row for row in conf.values())]
        rows = [[label] + [str(conf[label].get(c, 0)) for c in cols] for label in labels]
        parts += [f"### Confusion matrix: {v} (rows: label, columns: predicted)", "",
                  _table(["label \\ predicted", *cols], rows), ""]
    return "\n".join(parts)


def plot_accuracy_per_rule(summary: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Grouped bars of accuracy per deciding rule, one bar per variant; writes a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests
    import matplotlib.pyplot as plt

    rules = [r for r in RULE_IDS if any(r in s["by_rule"] for s in summary.values())]
    width = 0.8 / max(len(summary), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(rules) + 2), 4))
    for i, (variant, s) in enumerate(summary.items()):
        xs = [j + i * width for j in range(len(rules))]
        ax.bar(xs, [s["by_rule"].get(r, {}).get("accuracy", 0.0) for r in rules], width, label=variant)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rules))], rules, rotation=60, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("decision accuracy")
    ax.set_title("Accuracy per deciding rule")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
