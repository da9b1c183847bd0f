"""Retraining jobs: the Runner starts engine.train_job as a subprocess and the console watches it.

Like LlamaBoard's Runner, training never runs in the console's process: :meth:`Runner.start` writes
the job's data files into ``runs/ft-vN/``, starts ``python -m engine.train_job`` in its own session
(a crash or a console restart leaves it alone) and records a :class:`TrainingJob` row. The job's
state lives in the store and in the run dir (``progress.json``, ``job.log``, ``exit_code``), so a
page reload or a console restart picks it up again; :meth:`Runner.refresh` turns a finished job
into a registered ``challenger`` version (db.versions) or a failed job with its log tail. The
champion is never touched here. One job at a time: a second start is refused with
:class:`JobBusy`.

The console retrains what it serves: :meth:`RunnerConfig.for_spec` takes the served model's
:class:`~engine.registry.ModelSpec`, so a job trains on that spec's base, with its retrain recipe
(``retrain`` in data/models.toml) and in its prompt format; a spec without a recipe is refused.
:meth:`Runner.plan` says what a job would train before it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import Session

from db.audit import audit
from db.cases import run_answer
from db.exports import export_items
from db.jobs import job_version_names, recent_jobs, running_jobs
from db.models import CaseRecord, Export, ModelRun, Review, TrainingJob, utcnow
from db.store import Store
from db.versions import champion, next_version_name, register_version
from engine.registry import RUNNER_KEYS, ModelSpec, read_run_config_file
from engine.sft_data import RunConfig
from policies.prompt import PromptFormat

LOG_FILE, EXIT_FILE = "job.log", "exit_code"
PROGRESS_FILE, COMPARISON_FILE = "progress.json", "comparison.json"  # written by engine.train_job
LOG_TAIL_CHARS = 4000
# What the plan shows of a recipe (RunConfig fields)
PLAN_KEYS = ("learning_rate", "max_steps", "num_train_epochs", "lora_r", "lora_alpha", "lora_target_modules",
             "quantization", "precision", "max_train_minutes")


METHODS = ("sft", "dpo")  # what a retraining job may run
STRESS_SET = "data/generated/stress.jsonl"  # the frozen out-of-distribution set (gates when it exists)


class JobError(RuntimeError):
    """A retraining request that cannot start; the message names the field at fault."""


class JobBusy(JobError):
    """Another job is running (one at a time)."""


class NoHoldout(JobError):
    """No correction would be held out and the request did not confirm training without one."""


@dataclass
class RetrainRequest:
    """What ops picked in the console: exports to mix with the base training set, and how."""

    export_ids: list[int]
    base_weight: float = 1.0  # mixing weight of the base training set
    corrections_weight: float = 3.0  # mixing weight of each export (reviewer corrections)
    holdout_share: float = 0.2  # corrections held out of training, to evaluate on
    init: str = "base"  # base: a fresh adapter; champion: continue training the champion
    method: str = "sft"  # sft: learn the corrected answers; dpo: prefer them over the answers they replaced
    # a job holding no correction out is compared with the champion on the frozen sets only, which a
    # share of 0 (or a few corrections) does silently: it starts only when this is set
    allow_no_holdout: bool = False


@dataclass
class RunnerConfig:
    """Where and how jobs run; fixed when the console starts.

    The console builds it with :meth:`for_spec` from the served model's spec. Built by hand (scripts,
    tests), ``model_name`` stays None and the fields say everything (defaults: the embedded model).
    """

    repo_root: Path = Path(".")
    runs_dir: Path = Path("runs")
    base_model: str = "default-base"  # what a fresh adapter is trained on
    base_dataset: str = "data/generated/train.jsonl"
    eval_set: str = "data/generated/eval.jsonl"
    stress_set: str | None = None  # the out-of-distribution set; gates too (for_spec: the repo's)
    train_config: str | None = "data/models/default-ft-retrain.yaml"  # the retrain recipe (--config)
    dpo_train_config: str | None = "data/models/default-ft-retrain-dpo.yaml"  # the DPO recipe (None: no DPO)
    extra_args: list[str] = field(default_factory=list)  # more train_qlora_sft flags (tests: max_steps)
    eval_max: int | None = None  # cap per evaluated set (quick runs)
    eval_max_new_tokens: int | None = None  # token cap per evaluated answer (quick runs)
    python: str = sys.executable
    model_name: str | None = None  # the served model whose recipe this is (None: built by hand)
    train_overrides: dict[str, Any] = field(default_factory=dict)  # recipe flags over train_config's
    prompt_format: PromptFormat | None = None  # the served model's (None: the trained model's own)
    refusal: str | None = None  # why no job can start (the served model has no retrain recipe)

    @classmethod
    def for_spec(cls, spec: ModelSpec, **kwargs: Any) -> RunnerConfig:
        """The config that retrains ``spec``: its base, its recipe (config + overrides), its prompt format.

        ``kwargs`` set the other fields (runs_dir, eval_set, ...). A spec without a recipe gives a
        config whose jobs are refused (:class:`JobError` naming the model). Raises :class:`JobError`
        when the recipe names a field train_qlora_sft does not know.
        """
        kwargs.setdefault("stress_set", STRESS_SET)
        if spec.retrain is None:
            return cls(**kwargs, model_name=spec.name, base_model=spec.base, train_config=None,
                       prompt_format=spec.prompt_format,
                       refusal=f"model {spec.name} has no retrain recipe in data/models.toml "
                               "(add retrain = { config = \"...yaml\" } to its entry)")
        known = {f.name for f in fields(RunConfig)}
        recipes = {"sft": spec.retrain.config, "dpo": spec.retrain.dpo}
        for method, recipe in recipes.items():
            if recipe is None:
                continue
            try:
                settings = spec.retrain.settings(method)
            except (OSError, ValueError, yaml.YAMLError) as exc:
                raise JobError(f"model {spec.name}: retrain recipe {recipe}: {exc}") from None
            unknown = sorted(set(settings) - known)
            if unknown:
                raise JobError(f"model {spec.name}: retrain recipe {recipe}: unknown run config "
                               f"field(s) {', '.join(unknown)}")
        return cls(**kwargs, model_name=spec.name, base_model=spec.base, train_config=spec.retrain.config,
                   dpo_train_config=spec.retrain.dpo, train_overrides=dict(spec.retrain.overrides),
                   prompt_format=spec.prompt_format)

    def recipe(self, method: str) -> str | None:
        """The recipe YAML a ``method`` job trains with (None: this model has none for it)."""
        return self.dpo_train_config if method == "dpo" else self.train_config


@dataclass(frozen=True)
class RetrainPlan:
    """What a job would train, before it starts (:meth:`Runner.plan`); the Models tab shows it."""

    model: str | None  # the served model (None: a hand-built config)
    base: str  # the base the adapter is trained on
    recipe: str | None  # the run config YAML (repo-relative when inside the repo)
    init: str  # base: a fresh adapter; champion: continue it
    start: str  # what training starts from: the base, or the champion's adapter dir
    start_version: str | None  # the champion's name when continuing it
    settings: dict[str, Any]  # PLAN_KEYS: learning rate, steps/epochs, LoRA shape, quantisation, precision,
    # time budget
    refusal: str | None = None  # why a job cannot start
    note: str | None = None  # e.g. a champion trained on another base
    method: str = "sft"  # sft or dpo


def _held_out(case_id: str, share: float) -> bool:
    """Deterministic split by case id: the same case is always on the same side."""
    return int(hashlib.sha256(case_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def _preference_row(session: Session, review: Review, row: dict[str, Any]) -> dict[str, Any] | None:
    """A correction as a (chosen, rejected) pair: the reviewed answer over the model answer it replaced.
    None when there is no such answer (an approval, a correction of an invalid answer, or the same one)."""
    if review.status != "corrected" or review.model_run_id is None:
        return None
    run = session.get(ModelRun, review.model_run_id)
    rejected = run_answer(run) if run is not None else None
    if rejected is None or rejected == row["output"]:
        return None
    return {"id": row["id"], "input": row["input"], "chosen": row["output"], "rejected": rejected}


def write_job_data(session: Session, request: RetrainRequest, run_dir: Path) -> dict[str, Any]:
    """The training file and holdout.jsonl (generator rows to evaluate on).

    SFT: corrections.jsonl. The i-th line of an export file is its i-th export item, so each line
    finds its case and review. A correction is written as a generator row (the case and the reviewed
    answer), not as the export's rendered ``messages``: training then renders it in the trained
    model's own prompt format, whatever format the export was written in (an export in another
    model's format trains nothing useful). Lines without their review (an edited file) are trained
    on as they are.
    DPO: preferences.jsonl, one ``{"input", "chosen", "rejected"}`` row per correction whose model
    answer it replaced is known and valid (approvals and edited files give no pair).
    Raises :class:`JobError` for an unknown export, a missing file, or nothing left to train on.
    """
    dpo = request.method == "dpo"
    train_lines: list[str] = []
    holdout_rows: list[dict[str, Any]] = []
    skipped = 0
    for export_id in request.export_ids:
        export = session.get(Export, export_id)
        if export is None or not Path(export.path).is_file():
            raise JobError(f"exports: export #{export_id} or its file is missing")
        lines = [ln for ln in Path(export.path).read_text(encoding="utf-8").splitlines() if ln.strip()]
        items = export_items(session, export_id)
        if len(items) != len(lines):  # an edited file: train on all of it, hold nothing out
            if dpo:
                skipped += len(lines)
            else:
                train_lines += lines
            continue
        for line, item in zip(lines, items, strict=True):
            review = session.get(Review, item.review_id)
            record = session.get(CaseRecord, review.case_pk) if review else None
            if review is None or record is None or review.answer_json is None:
                skipped += dpo
                if not dpo:
                    train_lines.append(line)
                continue
            row = {"id": record.case_id, "instruction": "Decide the case.",
                   "input": json.loads(record.case_json), "output": json.loads(review.answer_json)}
            if _held_out(record.case_id, request.holdout_share):
                holdout_rows.append(row)
                continue
            if not dpo:
                train_lines.append(json.dumps(row, ensure_ascii=False))
            elif (pair := _preference_row(session, review, row)) is not None:
                train_lines.append(json.dumps(pair, ensure_ascii=False))
            else:
                skipped += 1
    if not train_lines:
        what = "correction with the model answer it replaced (DPO needs pairs)" if dpo else "correction"
        raise JobError(f"exports: no {what} left to train on after the hold-out split")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / training_file(request.method)).write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    (run_dir / "holdout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in holdout_rows),
                                           encoding="utf-8")
    counts = {"train_corrections": len(train_lines), "holdout": len(holdout_rows)}
    return {**counts, "skipped_without_pair": skipped} if dpo else counts


def _discard_job_data(run_dir: Path, method: str) -> None:
    """Undo :func:`write_job_data` in a run dir that was empty before it (a refused start)."""
    for name in (training_file(method), "holdout.jsonl"):
        (run_dir / name).unlink(missing_ok=True)
    if not any(run_dir.iterdir()):
        run_dir.rmdir()


def training_file(method: str) -> str:
    """The file in the run dir a ``method`` job trains on."""
    return "preferences.jsonl" if method == "dpo" else "corrections.jsonl"


def _method_refusal(cfg: RunnerConfig, method: str) -> str | None:
    """Why a ``method`` job cannot start with ``cfg`` (None: it can)."""
    if method not in METHODS:
        return f"method: {method!r} is not one of {', '.join(METHODS)}"
    if method == "dpo" and cfg.dpo_train_config is None:
        return (f"method: model {cfg.model_name or cfg.base_model} has no DPO recipe "
                "(add dpo = \"...yaml\" to its retrain table in data/models.toml)")
    return None


def _flag_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _same_base(a: str, b: str, root: Path) -> bool:
    """The same base named two ways (a relative and an absolute path)?"""
    def norm(x: str) -> str:
        p = Path(x) if Path(x).is_absolute() else root / x
        return str(p.resolve()) if p.exists() else x
    return norm(a) == norm(b)


def log_tail(run_dir: str | Path, chars: int = LOG_TAIL_CHARS) -> str:
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - chars))
        return fh.read().decode("utf-8", "replace")


def read_progress(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / PROGRESS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Runner:
    """Starts, watches and finishes retraining jobs; safe to call from several console threads."""

    def __init__(self, store: Store, config: RunnerConfig | None = None):
        self.store = store
        self.config = config or RunnerConfig()
        self._lock = threading.Lock()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}  # reaped here when this process started them

    def active(self) -> TrainingJob | None:
        """The running job, if any (refreshed first, so a finished one is settled)."""
        self.refresh()
        with self.store.session() as s:
            running = running_jobs(s)
        return running[0] if running else None

    def jobs(self, limit: int = 20) -> list[TrainingJob]:
        with self.store.session() as s:
            return recent_jobs(s, limit)

    def plan(self, init: str = "champion", method: str = "sft") -> RetrainPlan:
        """What a job started now with ``init`` and ``method`` would train: base, recipe and its main
        settings, and whether it starts from the champion or the base. Reads the recipe YAML and the
        champion."""
        cfg = self.config
        train_config = cfg.recipe(method)
        with self.store.session() as s:
            champ = champion(s)
            champ_name, champ_path, champ_base = (champ.name, champ.path, champ.base) if champ else ("",) * 3
        continues = init == "champion" and champ is not None
        settings: dict[str, Any] = {f.name: f.default for f in fields(RunConfig) if f.name in PLAN_KEYS}
        refusal = cfg.refusal or _method_refusal(cfg, method)
        if refusal is None and train_config:
            path = Path(train_config)
            try:
                settings.update(read_run_config_file(path if path.is_absolute() else cfg.repo_root / path))
            except (OSError, ValueError, yaml.YAMLError) as exc:  # the plan says so; the job would fail
                refusal = f"recipe {train_config}: {exc}"
        settings.update(cfg.train_overrides)
        extra = cfg.extra_args
        for i, arg in enumerate(extra[:-1]):  # --key value pairs given by hand win, as in the command
            if arg.startswith("--") and arg[2:] in PLAN_KEYS:
                settings[arg[2:]] = extra[i + 1]
        note = None  # for a served spec only (a hand-built config may name its base by registry name)
        if continues and cfg.model_name and not _same_base(champ_base, cfg.base_model, cfg.repo_root):
            note = (f"the champion {champ_name} was trained on base {champ_base}, not {cfg.base_model}; "
                    "start from the base to train a fresh adapter")
        recipe = train_config
        if recipe and Path(recipe).is_absolute():
            try:
                recipe = str(Path(recipe).relative_to(cfg.repo_root.resolve()))
            except ValueError:
                pass
        return RetrainPlan(model=cfg.model_name, base=cfg.base_model, recipe=recipe, init=init,
                           start=champ_path if continues else cfg.base_model,
                           start_version=champ_name if continues else None,
                           settings={k: settings[k] for k in PLAN_KEYS if k in settings},
                           refusal=refusal, note=note, method=method)

    def _command(self, run_dir: Path, request: RetrainRequest, champ: Any) -> list[str]:
        """The job's command line: train_job's flags, then train_qlora_sft's (recipe, then the spec's
        prompt format and the recipe's overrides, then the Runner's model and data)."""
        cfg = self.config
        if cfg.refusal:
            raise JobError(cfg.refusal)
        model = champ.path if request.init == "champion" and champ is not None else cfg.base_model
        cmd = [cfg.python, "-m", "engine.train_job", "--run-dir", str(run_dir), "--eval", cfg.eval_set,
               "--holdout", str(run_dir / "holdout.jsonl")]
        if cfg.stress_set:
            cmd += ["--stress", cfg.stress_set]
        if champ is not None:
            cmd += ["--champion", champ.path, "--champion-version", champ.name]
        if cfg.eval_max:
            cmd += ["--eval-max", str(cfg.eval_max)]
        if cfg.eval_max_new_tokens:
            cmd += ["--eval-max-new-tokens", str(cfg.eval_max_new_tokens)]
        cmd.append("--")
        if cfg.recipe(request.method):
            cmd += ["--config", cfg.recipe(request.method)]
        if cfg.prompt_format is not None:  # the served model's format, whatever the start's saved one
            for key, value in cfg.prompt_format.to_dict().items():
                if value is not None:
                    cmd += [f"--prompt_{key}", _flag_value(value)]
        for key, value in cfg.train_overrides.items():
            if key not in RUNNER_KEYS:
                cmd += [f"--{key}", _flag_value(value)]
        if request.method == "dpo":  # preference pairs only: the reference model keeps the rest in place
            cmd += ["--method", "dpo", "--model", model, "--dataset", str(run_dir / training_file("dpo"))]
        else:  # corrections.jsonl holds every picked export (one weight for them all)
            cmd += ["--model", model, "--dataset", cfg.base_dataset, str(run_dir / training_file("sft")),
                    "--mix_weights", str(request.base_weight), str(request.corrections_weight)]
        cmd += ["--output_dir", str(run_dir), *cfg.extra_args]
        return cmd

    def start(self, actor: str, request: RetrainRequest) -> TrainingJob:
        """Start a job training ``ft-vN`` on the base set + the picked exports; audited.

        Raises :class:`JobBusy` when a job runs, :class:`NoHoldout` when no correction would be held
        out and ``request.allow_no_holdout`` is not set, :class:`JobError` for another bad request.
        """
        if self.config.refusal:
            raise JobError(self.config.refusal)
        if not request.export_ids:
            raise JobError("exports: pick at least one export of reviewer corrections")
        if request.init not in ("base", "champion"):
            raise JobError(f"init: {request.init!r} is not base or champion")
        if (why := _method_refusal(self.config, request.method)) is not None:
            raise JobError(why)
        with self._lock:
            busy = self.active()
            if busy is not None:
                raise JobBusy(f"job #{busy.id} ({busy.version_name}) is running; one job at a time")
            with self.store.session() as s:
                taken = job_version_names(s)
                name = next_version_name(s, taken)
                run_dir = (self.config.runs_dir / name).resolve()
                if run_dir.exists() and any(run_dir.iterdir()):
                    raise JobError(f"run_dir: {run_dir} exists already and is not empty")
                counts = write_job_data(s, request, run_dir)
                if counts["holdout"] == 0 and not request.allow_no_holdout:
                    _discard_job_data(run_dir, request.method)
                    raise NoHoldout(
                        f"holdout_share: no correction would be held out (share {request.holdout_share:g} "
                        f"of {counts['train_corrections']} correction(s)), so the challenger would be "
                        "compared on the frozen sets only; raise the share, or confirm training without "
                        "a held-out slice"
                    )
                champ = champion(s)
                cmd = self._command(run_dir, request, champ)
                log = open(run_dir / LOG_FILE, "wb")  # noqa: SIM115 - handed to the child
                # sh records the exit status in a file, so a restarted console still learns it.
                proc = subprocess.Popen(
                    ["sh", "-c", '"$@"; echo $? > "$0"', str(run_dir / EXIT_FILE), *cmd],
                    cwd=self.config.repo_root, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
                log.close()
                job = TrainingJob(version_name=name, run_dir=str(run_dir), pid=proc.pid,
                                  request_json=json.dumps({**asdict(request), **counts}),
                                  command_json=json.dumps(cmd), created_by=actor)
                s.add(job)
                s.flush()
                audit(s, actor, "retrain_start", "training_job", job.id, None, job)
            self._procs[job.id or 0] = proc
            return job

    def refresh(self) -> None:
        """Settle every running job whose process has ended: register its version or record the failure."""
        with self.store.session() as s:
            running = running_jobs(s)
            for job in running:
                proc = self._procs.get(job.id or 0)
                if proc is not None:
                    proc.poll()  # reap our own child so it does not linger as a zombie
                exit_file = Path(job.run_dir) / EXIT_FILE
                if exit_file.is_file() and exit_file.read_text().strip():
                    self._finish(s, job, int(exit_file.read_text().strip()))
                elif not _alive(job.pid) or (proc is not None and proc.returncode is not None):
                    self._finish(s, job, None)

    def _finish(self, s: Session, job: TrainingJob, code: int | None) -> None:
        before = job.model_dump()
        job.exit_code, job.finished_at = code, utcnow()
        comparison_path = Path(job.run_dir) / COMPARISON_FILE
        if code == 0 and comparison_path.is_file():
            evaluation = json.loads(comparison_path.read_text(encoding="utf-8"))
            adapter_config = json.loads((Path(job.run_dir) / "adapter_config.json").read_text())
            base = adapter_config.get("base_model_name_or_path") or self.config.base_model
            register_version(s, job.created_by, job.version_name, job.run_dir, base,
                             evaluation=evaluation, job_id=job.id)
            job.status = "succeeded"
        elif job.status == "running":
            job.status = "failed"
            why = "process ended without an exit status" if code is None else f"exit status {code}"
            job.error = f"{why}\n{log_tail(job.run_dir)}"
        s.add(job)
        audit(s, "system", f"retrain_{job.status}", "training_job", job.id, before,
              {k: v for k, v in job.model_dump().items() if k != "error"})

    def cancel(self, actor: str, job_id: int) -> None:
        """Stop a running job (SIGTERM to its process group); it ends as ``cancelled``, audited."""
        with self.store.session() as s:
            job = s.get(TrainingJob, job_id)
            if job is None or job.status != "running":
                raise JobError(f"job: #{job_id} is not running")
            if job.pid and _alive(job.pid):
                os.killpg(job.pid, signal.SIGTERM)
            before = job.model_dump()
            job.status, job.finished_at, job.error = "cancelled", utcnow(), f"cancelled by {actor}"
            s.add(job)
            audit(s, actor, "retrain_cancel", "training_job", job.id, before, job)

    def view(self, job: TrainingJob) -> dict[str, Any]:
        """What the console shows of a job: status, stage, step/max_steps, losses, log tail."""
        progress = read_progress(job.run_dir)
        return {"id": job.id, "version": job.version_name, "status": job.status,
                "stage": progress.get("stage", "starting"), "step": progress.get("step", 0),
                "max_steps": progress.get("max_steps", 0), "loss": progress.get("loss", []),
                "eval": {k: progress[k] for k in ("eval_stage", "eval_done", "eval_total") if k in progress},
                "error": job.error, "log_tail": log_tail(job.run_dir, 1500)}

    def wait(self, job_id: int, timeout_s: float = 600.0, poll_s: float = 0.5) -> TrainingJob:
        """Block until job ``job_id`` is settled (tests and scripts); raises TimeoutError."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.refresh()
            with self.store.session() as s:
                job = s.get(TrainingJob, job_id)
                if job is not None and job.status != "running":
                    return job
            time.sleep(poll_s)
        raise TimeoutError(f"job #{job_id} still running after {timeout_s} s")
