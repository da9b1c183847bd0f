"""engine.train_setup.TimeBudget's fitted schedule: a run whose planned steps will not fit in its budget
ends at the step that does, with its learning-rate schedule rebuilt to end there (issue 15's GPU runs
lost their cosine tails to budgets); 'cut' keeps the plan and stops where the budget runs out.

The callback is driven with a clock of the test's own, a real optimizer and transformers' own schedules,
then once inside a real training run of a tiny model."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import TrainingArguments, get_scheduler

from engine.budget import Evaluations, Fit, Pace, squeezed
from engine.sft_data import ConfigError, RunConfig
from engine.train_setup import TimeBudget, refit_schedule
from engine.training import train
from tests.conftest import tiny_rows, write_jsonl

PEAK = 1e-3


class Clock:
    """A clock that moves only when told: ``now`` seconds."""

    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _run(tmp_path: Path, clock: Clock, *, fit: bool, planned: int = 100, minutes: float = 0.5,
         loading_s: float = 2.0, schedule: str = "cosine",
         seconds: Callable[[int], float] = lambda step: 1.0,
         evaluation: Callable[[int], float] = lambda step: 0.0, eval_rows: int = 0, epochs: int = 1,
         end_evaluation_s: float = 0.0) -> tuple[TimeBudget, list[float], int]:
    """Step a real optimizer and ``schedule`` as the trainer does (optimizer, scheduler, then the
    callbacks), ``seconds(step)`` a step (one second unless told), ``evaluation(step)`` seconds of
    evaluation after it (then a checkpoint, a second, when there was one), until the budget's decision or
    transformers' own end-of-run rule (global_step >= state.max_steps) stops it; then, when the last step
    had none, ``end_evaluation_s`` of evaluation (and its checkpoint), as the trainer evaluates at the end
    of the epoch it stopped in. ``eval_rows``: the evaluation set the budget is told of (batches of 8
    rows a step, ``epochs`` epochs planned). Out: the budget, the learning rate after each step, the last
    step."""
    args = TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type=schedule, warmup_steps=0.1,
                             report_to=[], per_device_train_batch_size=8,
                             eval_strategy="epoch" if eval_rows else "no")
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.AdamW([{"params": params}, {"params": [torch.nn.Parameter(torch.zeros(1))],
                                                        "weight_decay": 0.0}], lr=PEAK)
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=args.get_warmup_steps(planned),
                              num_training_steps=planned)
    budget = TimeBudget(minutes, began=clock.now - loading_s, fit=fit, eval_rows=eval_rows)
    state = SimpleNamespace(global_step=0, max_steps=planned, num_train_epochs=epochs)
    control = SimpleNamespace(should_training_stop=False)
    budget.on_train_begin(args, state, control)
    rates = []
    while not control.should_training_stop:
        optimizer.step()
        scheduler.step()
        state.global_step += 1
        clock.now += seconds(state.global_step)
        budget.on_step_end(args, state, control, lr_scheduler=scheduler, optimizer=optimizer)
        if eval_s := evaluation(state.global_step):  # transformers: after on_step_end, then the checkpoint
            clock.now += eval_s
            budget.on_evaluate(args, state, control)
            clock.now += 1.0
            budget.on_save(args, state, control)
        rates.append(optimizer.param_groups[0]["lr"])
        assert optimizer.param_groups[1]["lr"] == rates[-1]  # every parameter group follows
        if state.global_step >= state.max_steps:  # transformers' DefaultFlowCallback
            control.should_training_stop = True
    if end_evaluation_s and not evaluation(state.global_step):
        clock.now += end_evaluation_s
        budget.on_evaluate(args, state, control)
        clock.now += 1.0
        budget.on_save(args, state, control)
    return budget, rates, state.global_step


def test_a_run_that_will_not_fit_ends_its_schedule_within_the_budget(tmp_path: Path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    budget, rates, last = _run(tmp_path, clock, fit=True)
    # timed over steps 1-3 (1 s each); 25 s left at step 3, 95% of it planned: 23 more steps
    assert budget.seconds_per_step == pytest.approx(1.0)
    assert budget.fitted_steps == last == 26 and budget.stopped_at is None
    assert last + 2.0 <= 30  # ended inside the budget (two seconds of loading counted)
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)  # the cosine ran to its end
    # refitted at step 3 of a 10-step warm-up (0.3 of the peak): the warm-up goes on to the peak at
    # step 5 (its 7 remaining steps, shrunk as the run shrank, 100 -> 26), then the cosine only falls
    assert rates[2] == pytest.approx(0.3 * PEAK) and rates[3] == pytest.approx(0.65 * PEAK)
    assert rates[4] == pytest.approx(PEAK)
    assert all(a < b for a, b in itertools.pairwise(rates[:5]))  # never a jump up, never a dip
    assert all(a >= b for a, b in itertools.pairwise(rates[4:])) and max(rates) <= PEAK
    assert budget.report() == {"minutes": 0.5, "schedule": "fit", "stopped_at_step": None, "max_steps": 100,
                               "fitted_steps": 26, "seconds_per_step": pytest.approx(1.0),
                               "paused_s": 0.0, "evaluation_s": None, "kept_for_evaluations_s": None}


def test_cut_keeps_the_plan_and_stops_at_a_high_learning_rate(tmp_path: Path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    budget, rates, last = _run(tmp_path, clock, fit=False)
    assert budget.stopped_at == last == 28 and budget.fitted_steps is None  # 2 s + 28 steps: 30 s
    assert rates[-1] > 0.8 * PEAK  # step 28 of a 100-step cosine: barely decayed
    assert budget.report()["schedule"] == "cut"


def test_a_run_that_fits_is_left_as_planned(tmp_path: Path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    budget, rates, last = _run(tmp_path, clock, fit=True, minutes=10)
    assert last == 100 and budget.fitted_steps is None and budget.stopped_at is None
    assert budget.seconds_per_step == pytest.approx(1.0) and rates[-1] == pytest.approx(0.0, abs=1e-12)


def test_a_linear_schedule_is_refitted_too(tmp_path: Path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    budget, rates, last = _run(tmp_path, clock, fit=True, schedule="linear")
    assert budget.fitted_steps == last == 26 and rates[-1] == pytest.approx(0.0, abs=1e-12)


def test_a_run_that_slows_after_its_fit_ends_earlier_and_still_decays_to_zero(tmp_path: Path, monkeypatch):
    """Fitted at step 3 to end at step 26 (1 s a step); from step 10 a step takes 2 s (a second job
    started beside it). The watch times the latest 2 steps (as many as the fit timed): at step 10 they
    (1.5 s a step) put the end at 37 s of the 30, so the run ends at step 20, planned on 95% of the time
    left; at step 12 (2 s a step) at 18. Each time the rest of the cosine is squeezed in: the rate goes on
    from where it was and still reaches zero, inside the budget, with no cut."""
    clock = Clock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    budget, rates, last = _run(tmp_path, clock, fit=True, seconds=lambda step: 1.0 if step < 10 else 2.0)
    assert budget.fitted_steps == last == 18 and budget.stopped_at is None
    assert 2.0 + 9 + 2.0 * (last - 9) <= 30  # ended inside the budget
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)  # the cosine ran to its end
    assert all(a >= b for a, b in itertools.pairwise(rates[4:]))  # no jump up at the shrink
    drops = [a - b for a, b in itertools.pairwise(rates[4:])]
    assert max(drops) < 0.2 * PEAK  # nor a cliff down: the schedule goes on from the rate it had
    assert budget.report()["fitted_steps"] == 18


def test_evaluations_are_not_timed_as_steps_and_keep_their_share_of_the_budget(tmp_path: Path,
                                                                            monkeypatch):
    """An evaluation (3 s) and a checkpoint (1 s) after every 8th step of 1 s: they are counted as paused,
    not as slow steps, and the steps ahead are planned with as much of them per step as so far, so the
    run ends inside its budget, its own evaluations included, with its schedule run to the end."""
    clock = Clock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    every_8th = lambda step: 3.0 if step % 8 == 0 else 0.0  # noqa: E731
    budget, rates, last = _run(tmp_path, clock, fit=True, evaluation=every_8th)
    pauses = last // 8 * 4.0
    assert budget.paused_s == pytest.approx(pauses) and budget.report()["paused_s"] == pytest.approx(pauses)
    assert budget.seconds_per_step == pytest.approx(1.0)  # fitted at step 3, before the first evaluation
    assert budget.fitted_steps == last and budget.stopped_at is None
    # 28 s after loading at 1.5 s a step with its share of the pauses: 18 steps fit, and the run takes them
    assert last == 18 and 2.0 + last + pauses <= 30
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)


def test_a_run_keeps_time_for_the_evaluation_after_its_last_step(tmp_path: Path, monkeypatch):
    """One epoch of 1-second steps in 30 s, and an evaluation set of 80 rows (10 steps' rows) that the
    trainer evaluates after the last step, in 4 s (then a 1 s checkpoint). Before it is timed, it is
    estimated at half of 10 steps' time, 5 s, kept out of the fit: the run ends at step 22 and its
    evaluation inside the budget. A budget not told of it fits 26 steps and the evaluation ends at 33 s."""
    clock = Clock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    start = clock.now - 2.0
    budget, rates, last = _run(tmp_path, clock, fit=True, eval_rows=80, end_evaluation_s=4.0)
    assert budget.fitted_steps == last == 22 and budget.stopped_at is None
    assert clock.now - start <= 30 and rates[-1] == pytest.approx(0.0, abs=1e-12)
    report = budget.report()
    assert report["kept_for_evaluations_s"] == pytest.approx(5.0)
    assert report["evaluation_s"] == pytest.approx(4.0)

    clock = Clock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    start = clock.now - 2.0
    budget, _, last = _run(tmp_path, clock, fit=True, end_evaluation_s=4.0)
    assert last == 26 and clock.now - start == pytest.approx(33.0)
    assert budget.report()["kept_for_evaluations_s"] is None


def test_evaluations_each_epoch_are_timed_and_the_rest_kept(tmp_path: Path, monkeypatch):
    """Three epochs of ten 1-second steps in 30 s; an evaluation (5 s, then a 1 s checkpoint) after each
    epoch and after the last step. Fitted at step 3 on the estimate (0.5 s each, three ahead) to 25 steps;
    the first evaluation, timed at 5 s, shows the two still ahead will not fit: the run ends at step 16,
    where one evaluation is left (its epoch's end would have brought a second), and that one ends inside
    the budget. The evaluations' time is kept whole, not spread over the steps as a checkpoint's is."""
    clock = Clock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    start = clock.now - 2.0
    budget, rates, last = _run(tmp_path, clock, fit=True, planned=30, eval_rows=8, epochs=3,
                               evaluation=lambda step: 5.0 if step % 10 == 0 else 0.0, end_evaluation_s=5.0)
    assert last == budget.fitted_steps == 16 and budget.stopped_at is None
    assert clock.now - start <= 30 and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert budget.evaluating_s == pytest.approx(10.0) and budget.paused_s == pytest.approx(12.0)
    assert budget.report()["evaluation_s"] == pytest.approx(5.0)


def test_the_safety_net_stops_where_the_last_evaluation_still_fits(tmp_path: Path, monkeypatch):
    """``cut`` keeps its plan, but its last step is the one after which the evaluation that follows it
    (timed at 5 s after each 5-step epoch) reaches the budget: step 11, at 25 s, its evaluation ending at
    30 s and its checkpoint at 31 s. A budget not told of the evaluations stops at step 16, at 36 s, and
    its last evaluation and checkpoint end at 42 s."""
    for eval_rows, stop, end in ((8, 11, 31.0), (0, 16, 42.0)):
        clock = Clock()
        monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
        start = clock.now - 2.0
        budget, _, last = _run(tmp_path, clock, fit=False, planned=40, eval_rows=eval_rows, epochs=8,
                               evaluation=lambda step: 5.0 if step % 5 == 0 else 0.0, end_evaluation_s=5.0)
        assert budget.stopped_at == last == stop and clock.now - start == pytest.approx(end)


def test_a_pause_between_steps_is_not_read_as_a_slowdown():
    """Steps of 1 s and, after every 30th, 10 s of evaluation, in a 100-second budget. Told what was
    paused, the run ends at step 71 (93 s, evaluations reserved); timing the pauses as steps read the
    first evaluation as a run four times slower and ended it at step 43, 45 seconds early."""
    def run(told: bool) -> tuple[int, float]:
        pace, elapsed, paused = Pace(budget_s=100.0, planned=1000), 2.0, 0.0
        for step in range(1, 1000):
            elapsed += 1.0
            pace.after_step(step, elapsed, paused if told else 0.0)
            if step >= (pace.total or math.inf):
                return step, elapsed
            if step % 30 == 0:
                elapsed, paused = elapsed + 10.0, paused + 10.0
        raise AssertionError("never ended")

    assert run(told=True) == (71, 93.0)
    assert run(told=False) == (43, 55.0)


def test_a_steady_run_is_fitted_once():
    """The watch after the fit shrinks a run only when its latest steps fall behind; at the pace the fit
    measured, it never does. One that slows is shrunk until its latest steps fit, never lengthened, and
    ends in time."""
    pace = Pace(budget_s=100.0, planned=1000)
    fits = [fit for step in range(1, 200) if (fit := pace.after_step(step, 2.0 + step)) is not None]
    assert fits == [Fit(total=93, first=True)]  # steps 2-4 timed (3 s: 3% of the budget), 95% of 94 s
    slow = Pace(budget_s=100.0, planned=1000)
    elapsed, fits = 2.0, []
    for step in range(1, 200):
        elapsed += 1.0 if step <= 40 else 1.5  # half as slow again from step 41
        if (fit := slow.after_step(step, elapsed)) is not None:
            fits.append(fit)
        if step >= (slow.total or math.inf):
            break
    assert fits[0] == Fit(total=93, first=True) and fits[1:] and not any(f.first for f in fits[1:])
    assert step == fits[-1].total and elapsed <= 100.0  # ended where the last shrink said, in time
    assert all(a.total > b.total for a, b in itertools.pairwise(fits))  # a shrink never lengthens


def test_squeezed_goes_on_from_the_rate_it_had_to_the_schedule_end():
    def linear(t: float) -> float:
        return 1.0 - t / 100
    fast = squeezed(linear, 20, 100, 60)
    assert [fast(t) for t in (0, 10, 20)] == [linear(t) for t in (0, 10, 20)]  # the past is unchanged
    assert fast(60) == pytest.approx(0.0) and fast(40) == pytest.approx(linear(60))  # 2x as fast after 20


def test_a_schedule_that_cannot_be_refitted_falls_back_to_the_cut(tmp_path: Path, caplog):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    assert not refit_schedule(plateau, args, 10)
    assert optimizer.param_groups[0]["lr"] == PEAK
    budget = TimeBudget(0.5, began=0.0)
    state = SimpleNamespace(global_step=0, max_steps=1000)
    control = SimpleNamespace(should_training_stop=False)
    budget.on_train_begin(args, state, control)
    clock = Clock(0.0)
    budget.clock = staticmethod(clock)
    for _ in range(3):  # 5 s a step: two more steps fit, but cannot be planned
        clock.now += 5.0
        state.global_step += 1
        budget.on_step_end(args, state, control, lr_scheduler=plateau)
    assert state.max_steps == 1000 and budget.fitted_steps is None and not control.should_training_stop
    assert "cannot be refitted" in caplog.text


def _cosine_at(tmp_path: Path, step: int) -> tuple[TrainingArguments, torch.optim.SGD, Any]:
    """A 100-step cosine with 10 warm-up steps (10%), stepped to ``step``: (args, optimizer, scheduler)."""
    args = TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosine", warmup_steps=0.1,
                             report_to=[])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=10, num_training_steps=100)
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    return args, optimizer, scheduler


def test_refit_after_the_warm_up_keeps_the_step_and_warm_up_share(tmp_path: Path):
    args, optimizer, scheduler = _cosine_at(tmp_path, 12)
    assert refit_schedule(scheduler, args, 50, planned=100)
    assert scheduler.last_epoch == 12  # still at step 12, now of 50 with 5 warm-up steps
    for step in range(12, 51):  # each rate is a 50-step cosine's, warm-up 5 (10% of 50)
        expected = PEAK * 0.5 * (1 + math.cos(math.pi * (step - 5) / 45))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12), step
        optimizer.step()
        scheduler.step()


def test_refit_inside_the_warm_up_goes_on_from_the_rate_reached(tmp_path: Path):
    """At step 5 of a 10-step warm-up (0.5 of the peak), refitted from 100 to 50 steps: the new schedule's
    own warm-up (5 steps) is over, so it would jump to the peak. Instead the warm-up's rest (5 steps,
    shrunk to 3 as the run halved) climbs on from 0.5 to the peak at step 8, then a cosine to step 50."""
    args, optimizer, scheduler = _cosine_at(tmp_path, 5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * PEAK)
    assert refit_schedule(scheduler, args, 50, planned=100)
    assert scheduler.last_epoch == 5 and optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * PEAK)
    rates = []
    for _ in range(5, 50):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[:3] == pytest.approx([PEAK * (0.5 + 0.5 * k / 3) for k in (1, 2, 3)])  # steps 6, 7, 8
    for step, rate in zip(range(8, 51), rates[2:], strict=True):
        assert rate == pytest.approx(PEAK * 0.5 * (1 + math.cos(math.pi * (step - 8) / 42)), abs=1e-12)
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)


def test_budget_schedule_is_checked_by_name():
    with pytest.raises(ConfigError, match=r"budget_schedule: 'trim'; must be 'fit' or 'cut'"):
        RunConfig(budget_schedule="trim").check()  # type: ignore[arg-type]


def test_a_real_run_fits_its_schedule_to_the_budget(tiny_base_dir: Path, tmp_path: Path, monkeypatch):
    """Inside a real training run: each step takes 5 s by the budget's clock; 40 steps are planned and
    a minute allows about a dozen: the run ends at the fitted step, learning rate zero, adapter saved."""
    started = Clock(0.0)

    def five_seconds_a_step() -> float:
        if started.now == 0.0:
            import time

            started.now = time.time()  # the first step ends about when the run's loading is done
        started.now += 5.0
        return started.now

    monkeypatch.setattr(TimeBudget, "clock", staticmethod(five_seconds_a_step))
    train_file = write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    out = tmp_path / "fit"
    train(RunConfig(model=str(tiny_base_dir), dataset=[str(train_file)], eval_dataset=None,
                    quantization="none", lora_r=4, lora_alpha=8, max_steps=40, per_device_train_batch_size=4,
                    max_length=512, logging_steps=1, eval_each_epoch=False, seed=0, num_threads=1,
                    learning_rate=1e-3, lr_scheduler_type="cosine", warmup_ratio=0.1,
                    output_dir=str(out), max_train_minutes=1.0))
    metrics = json.loads((out / "metrics.json").read_text())
    budget = metrics["time_budget"]
    steps = [e for e in metrics["log_history"] if "loss" in e]
    assert budget["seconds_per_step"] == pytest.approx(5.0)
    assert 3 < budget["fitted_steps"] < 40 and budget["stopped_at_step"] is None
    assert steps[-1]["step"] == budget["fitted_steps"] == len(steps)
    # each step logs the rate it trained at: the last is the cosine's tail, not a cut-off peak
    last_rate = steps[-1]["learning_rate"]
    assert last_rate < 0.05 * 1e-3 and last_rate < steps[-3]["learning_rate"]
    assert (out / "adapter_model.safetensors").is_file()
    assert "now end at step" in (out / "train.log").read_text()


def test_a_real_run_counts_its_evaluations_and_checkpoints_as_paused(tiny_base_dir: Path, tmp_path: Path):
    """The trainer calls the budget after each epoch's evaluation and checkpoint: their time is recorded
    as paused (metrics.json's ``time_budget.paused_s``), not as the steps'."""
    rows = tiny_rows()
    train_file = write_jsonl(tmp_path / "train.jsonl", rows[:8])
    eval_file = write_jsonl(tmp_path / "eval.jsonl", rows[8:12])
    out = tmp_path / "paused"
    trainer = train(RunConfig(model=str(tiny_base_dir), dataset=[str(train_file)],
                              eval_dataset=str(eval_file), quantization="none", lora_r=4, lora_alpha=8,
                              num_train_epochs=2, per_device_train_batch_size=4, max_length=512,
                              logging_steps=1, eval_each_epoch=True, seed=0, num_threads=1,
                              output_dir=str(out), max_train_minutes=30.0))
    (kept,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, TimeBudget)]
    # told of the 4 evaluation rows: epochs of 2 steps of 4 rows, so each evaluation reads a step's rows
    assert kept.pace.evaluations == Evaluations(steps_per_epoch=2, rows_per_step=1.0)
    budget = json.loads((out / "metrics.json").read_text())["time_budget"]
    assert budget["paused_s"] > 0 and budget["stopped_at_step"] is None and budget["fitted_steps"] is None
    # the evaluations were timed (one per epoch; nothing was fitted, so nothing was kept for them)
    assert 0 < budget["evaluation_s"] <= budget["paused_s"] and budget["kept_for_evaluations_s"] is None


def _fit_rank(rank: int, port: int, out: str) -> None:
    """One of two gloo ranks whose clocks disagree (rank 0 began 20 s earlier, and its steps take 1 s
    where rank 1's take 0.5 s): both time three steps and fit the run to a one-minute budget."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        clock = Clock(0.0)
        budget = TimeBudget(1.0, began=-20.0 if rank == 0 else 0.0)
        budget.clock = staticmethod(clock)
        args = TrainingArguments(output_dir=out, lr_scheduler_type="cosine", report_to=[])
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
        scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=100)
        state = SimpleNamespace(global_step=0, max_steps=100)
        control = SimpleNamespace(should_training_stop=False)
        budget.on_train_begin(args, state, control)
        for _ in range(3):
            optimizer.step()
            scheduler.step()
            clock.now += 1.0 if rank == 0 else 0.5
            state.global_step += 1
            budget.on_step_end(args, state, control, lr_scheduler=scheduler)
        Path(out, f"fit{rank}.json").write_text(json.dumps([budget.fitted_steps, state.max_steps]))
    finally:
        dist.destroy_process_group()


def test_ranks_whose_clocks_disagree_fit_the_same_step(tmp_path: Path):
    """Both ranks take the slowest clock (all_reduce MAX), so they end at one step: a rank that planned
    more steps would wait forever on the other's gradients."""
    import torch.multiprocessing as mp

    from tests.engine.serving import free_port

    mp.spawn(_fit_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    # rank 0's clock: 21 s at step 1, 23 s at step 3 -> 1 s a step, 37 s left, 95% of it: 35 more steps
    assert [json.loads((tmp_path / f"fit{r}.json").read_text()) for r in (0, 1)] == [[38, 38], [38, 38]]


def test_a_plan_far_too_long_for_its_budget_is_fitted_early(tmp_path: Path, monkeypatch):
    """3% of 100,000 planned steps would never be reached in 30 s: 3% of the budget's time decides."""
    clock = Clock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    budget, rates, last = _run(tmp_path, clock, fit=True, planned=100_000)
    assert budget.fitted_steps == last == 26 and budget.stopped_at is None
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)
