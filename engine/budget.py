"""Fitting a run to a time budget: the arithmetic an adapter run (:class:`engine.train_setup.TimeBudget`)
and a base build (:func:`engine.build.train_language_model`) share.

A run times its steps from the end of the first (which holds one-off work: allocation, compiling) until
:func:`paced` (3% of the planned steps or of the budget's time, at least two steps). When
the planned steps will not fit in the time left, it ends at the step that does, planned on
:data:`FIT_MARGIN` of that time, and its learning-rate schedule is rebuilt for that length, since a
schedule cut short ends near its peak. A refit inside the warm-up lets the warm-up go on from the rate it
had reached (:func:`warmup_end_after_refit`, :func:`continued_warmup`) instead of jumping to the new
schedule's rate. After the fit the run keeps timing its latest steps (as many as the fit timed): when
they show it will overrun the budget (a job started beside it, say), it ends earlier again, and the rest of
its schedule is squeezed into the steps left (:func:`squeezed`), so the rate goes on from where it is and
still reaches the schedule's end. Time spent between steps on other work (an evaluation, a checkpoint)
is not a step's: it is kept out of the pace, so one evaluation does not read as a slowdown, and the steps
ahead are planned with the same share of it per step as so far. A run that evaluates at each epoch's end
(and so at its own end, after its last step) keeps time for the evaluations still ahead of it
(:class:`Evaluations`): the latest one's time when there was one, else an estimate from the pace of its
steps, so the evaluation that follows the last step ends inside the budget too.
Pure functions; no clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PROBE_SHARE = 0.03  # the steps timed: this share of the planned ones (at least 3)
FIT_MARGIN = 0.95  # the share of the time left that the fitted steps are planned on
# Before a run's first evaluation is timed: what an evaluation row costs against a training row. A forward
# pass alone is about a third of a training step's work (forward and backward); counted high, since an
# evaluation that overruns the budget costs the whole run on a machine with a deadline.
EVAL_ROW_COST = 0.5


def paced(step: int, elapsed: float, first: tuple[int, float], planned: int, budget_s: float) -> bool:
    """Whether a run at ``step`` after ``elapsed`` seconds, timed since ``first`` = (step, elapsed), has
    timed enough to fit its ``planned`` steps to ``budget_s``: at least two steps, and either
    :data:`PROBE_SHARE` of the planned steps or of the budget's time (a plan far too long for its budget
    is fitted early, not after 3% of a plan it will never reach)."""
    first_step, first_elapsed = first
    return step >= first_step + 2 and (step >= math.ceil(PROBE_SHARE * planned)
                                       or elapsed - first_elapsed >= PROBE_SHARE * budget_s)


def steps_that_fit(step: int, elapsed: float, first: tuple[int, float], budget_s: float,
                   paused: float = 0.0, spread: float | None = None) -> tuple[int, float]:
    """(the last step that fits in ``budget_s``, seconds a step) for a run at ``step`` after ``elapsed``
    seconds of steps, which was at ``first`` = (step, elapsed) when its timing began; at least one step
    more. ``paused``: the seconds the run spent besides, between steps (evaluations, checkpoints); the
    steps ahead are planned with as much of ``spread`` (default: all of ``paused``) per step as so far."""
    first_step, first_elapsed = first
    pace = (elapsed - first_elapsed) / max(step - first_step, 1)
    per_step = pace + (paused if spread is None else spread) / max(step, 1)
    more = int((budget_s - paused - elapsed) * FIT_MARGIN / max(per_step, 1e-9))
    return step + max(more, 1), pace


@dataclass(frozen=True)
class Fit:
    """A new end for a run: ``total`` steps. ``first``: the fit of the planned schedule (rebuild it for
    ``total`` steps); else a later shrink of a run already fitted or found to fit (squeeze the rest of
    the schedule it has, :func:`squeezed`)."""

    total: int
    first: bool


@dataclass(frozen=True)
class Evaluations:
    """A run's evaluations, one at each epoch's end and one at its own end: ``steps_per_epoch``, and
    ``rows_per_step``: an evaluation's rows per process over a training step's (batch x accumulation)."""

    steps_per_epoch: int
    rows_per_step: float

    def ahead(self, step: int, total: int) -> int:
        """The evaluations still to come after ``step`` (the trainer evaluates after the step's callbacks)
        in a run that ends at ``total``: at each epoch's end from ``step`` on before ``total``, and at
        ``total``."""
        spe = max(self.steps_per_epoch, 1)
        return max((total - 1) // spe - (step - 1) // spe, 0) + 1

    def estimate_s(self, seconds_per_step: float) -> float:
        """One evaluation's seconds before any is timed, from the pace of the training steps."""
        return self.rows_per_step * EVAL_ROW_COST * seconds_per_step


@dataclass
class Pace:
    """One run's fit: the timing starts after the first step; once :func:`paced`, the steps that fit;
    after that, a watch on the latest steps that ends the run earlier when they fall behind.

    ``budget_s``: the budget in seconds since the run began; ``planned``: the steps planned;
    ``evaluations``: the run's evaluations, when it evaluates at each epoch's end, whose time ahead is kept
    out of the steps' (``evaluation_s``, the latest one's seconds, is set by the caller once timed)."""

    budget_s: float
    planned: int
    evaluations: Evaluations | None = None
    evaluation_s: float | None = None  # the latest evaluation's seconds, once one was timed
    first: tuple[int, float] | None = None  # (step, elapsed) when the timing began
    seconds_per_step: float | None = None  # as the fit measured it
    total: int | None = None  # where the run ends, once paced
    kept_at_fit_s: float | None = None  # the evaluations' seconds the latest fit or shrink kept
    latest: deque[tuple[int, float]] = field(default_factory=deque)  # the steps the watch times

    def after_step(self, step: int, elapsed: float, paused: float = 0.0,
                   evaluating: float = 0.0) -> Fit | None:
        """Call after each step with the steps done, the seconds since the run began and, of those, the
        seconds spent between steps on other work (``paused``: evaluations, checkpoints; ``evaluating``:
        the evaluations' part of it): a new end when the planned steps will not fit (once, when the pace
        is known), or when the latest steps show the run's end will not; else None. With
        ``evaluations`` the time of those ahead is kept whole (:meth:`kept_s`), and only the rest of
        ``paused`` is spread over the steps ahead."""
        work = elapsed - paused  # the steps' own time: the pace is timed on it
        spread = paused - evaluating if self.evaluations is not None else paused
        if self.seconds_per_step is not None:
            return self._watch(step, work, paused, spread)
        if self.first is None:  # the first step holds one-off work (allocation, compiling): not timed
            self.first = (step, work)
            return None
        if not paced(step, work, self.first, self.planned, self.budget_s):
            return None
        total, self.seconds_per_step = self._steps_that_fit(step, work, self.first, paused, spread,
                                                            self.planned)
        self.total = min(total, self.planned)
        self.latest = deque([(step, work)], maxlen=step - self.first[0] + 1)
        return Fit(total, first=True) if total < self.planned else None

    def timed_pace(self, step: int, work: float) -> float | None:
        """Seconds a step: the fit's once it measured it, else as timed since the first step, ``work``
        being the steps' own seconds (the first step holds one-off work, so the timing starts after it,
        here when :meth:`after_step` has not started it); None at that first step."""
        if self.seconds_per_step is not None:
            return self.seconds_per_step
        if self.first is None:
            self.first = (step, work)
        first_step, first_work = self.first
        return (work - first_work) / (step - first_step) if step > first_step else None

    def kept_s(self, step: int, total: int, seconds_per_step: float | None = None) -> float:
        """The seconds kept for the evaluations still ahead of a run at ``step`` that ends at ``total``:
        each as long as the latest one, or before any was timed as :meth:`Evaluations.estimate_s` at
        ``seconds_per_step`` (default: the fit's pace); 0 for a run without evaluations, or before
        either is known."""
        if self.evaluations is None:
            return 0.0
        each = self.evaluation_s
        pace = self.seconds_per_step if seconds_per_step is None else seconds_per_step
        if each is None and pace is not None:
            each = self.evaluations.estimate_s(pace)
        return 0.0 if each is None else self.evaluations.ahead(step, total) * each

    def _steps_that_fit(self, step: int, work: float, first: tuple[int, float], paused: float, spread: float,
                        upto: int) -> tuple[int, float]:
        """:func:`steps_that_fit` with the time of the evaluations ahead kept: first those of a run that
        goes on to ``upto`` (as many as it can have, so the end found is safe), then those of the shorter
        run found, whose end may then move later, though not past its epoch's end (where one more
        evaluation would come) nor ``upto``."""
        pace = (work - first[1]) / max(step - first[0], 1)

        def fit_within(kept_until: int) -> int:
            usable = self.budget_s - self.kept_s(step, kept_until, pace)
            return steps_that_fit(step, work, first, usable, paused, spread)[0]

        total, kept_until = fit_within(upto), upto
        if self.evaluations is not None and total < upto:
            spe = max(self.evaluations.steps_per_epoch, 1)
            later = min(fit_within(total), -(-total // spe) * spe, upto)
            if later > total:
                total, kept_until = later, total
        if self.evaluations is not None:
            self.kept_at_fit_s = self.kept_s(step, kept_until, pace)
        return total, pace

    def _watch(self, step: int, work: float, paused: float, spread: float) -> Fit | None:
        """A shrink when the latest steps (as many as the fit timed) put the run's end past the budget;
        planned again on :data:`FIT_MARGIN` of the time left, so a steady pace does not shrink it twice."""
        self.latest.append((step, work))
        if self.total is None or step >= self.total or len(self.latest) < self.latest.maxlen:
            return None
        since, then = self.latest[0]
        pace = (work - then) / (step - since)
        usable = self.budget_s - self.kept_s(step, self.total, pace)
        if work + paused + (self.total - step) * (pace + spread / step) <= usable:
            return None
        total, _ = self._steps_that_fit(step, work, (since, then), paused, spread, self.total)
        if total >= self.total:
            return None
        self.total = total
        self.latest = deque([(step, work)], maxlen=self.latest.maxlen)
        return Fit(total, first=False)


def squeezed(factor: Callable[[float], float], step: int, end: int, total: int) -> Callable[[float], float]:
    """The schedule ``factor`` (step -> factor) of a run that ended at ``end``, now ending at ``total``
    (< ``end``): up to ``step`` unchanged; from there its rest, steps ``step``..``end``, squeezed into
    ``step``..``total``. The rate goes on from where it was (no jump) and reaches the schedule's end at
    the run's (a cosine still decays to zero); any schedule, warm-up included."""
    ratio = (end - step) / max(total - step, 1)

    def at(t: float) -> float:
        return factor(t) if t <= step else factor(step + (t - step) * ratio)

    return at


def warmup_end_after_refit(step: int, warm_end: int, planned: int, total: int, fresh_warm_end: int) -> int:
    """The step at which the warm-up of a run refitted at ``step`` from ``planned`` to ``total`` steps
    ends. After the old warm-up (which ended at ``warm_end``): the new schedule's own, ``fresh_warm_end``.
    Inside it: the old warm-up's remaining steps, shrunk as the run shrank, and never before the new
    schedule's own end (a warm-up of 10,000 of 100,000 planned steps, refitted at step 75 to 2,500:
    it ends at step 323, not at 10,000, which the run never reaches)."""
    if step >= warm_end:
        return fresh_warm_end
    return max(fresh_warm_end, step + math.ceil((warm_end - step) * total / planned))


def continued_warmup(fresh: Callable[[int], float], step: int, at: float,
                     warm_end: int) -> Callable[[int], float]:
    """The factor ``fresh`` (a new schedule's, step -> factor), except that from ``step``, where the old
    schedule's factor was ``at``, to ``warm_end`` it climbs in a straight line to ``fresh(warm_end)``:
    the rate goes on from where it was rather than jumping (a 100-step warm-up refitted at step 30, at
    0.3 of the peak, to a run whose new warm-up ended at step 20 would jump to the peak). ``fresh``
    itself when the warm-up is over (``warm_end <= step``)."""
    if warm_end <= step:
        return fresh
    top = fresh(warm_end)

    def factor(t: int) -> float:
        if step <= t < warm_end:
            return at + (top - at) * (t - step) / (warm_end - step)
        return fresh(t)

    return factor


def apply_rates(scheduler: Any) -> list[float]:
    """Set the optimizer's learning rates to what ``scheduler`` (a ``LambdaLR``) gives at the step it is
    at, after its factors changed; out: the rates."""
    rates = [base * factor(scheduler.last_epoch)
             for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    scheduler._last_lr = rates
    return rates
