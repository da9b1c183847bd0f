"""Issue 16 item 1: the console retrains what it serves.

Two registry entries on two different tiny bases, each with its own retrain recipe, and one entry
without a recipe: each Runner's job command (and its plan) names its own spec's base, recipe and
prompt format, the command parses (train_qlora_sft's parser) into a run on that base, and a spec
without a recipe is refused with a JobError naming the model. No training runs here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.services.jobs import JobError, RetrainRequest, Runner, RunnerConfig
from db.store import Store, open_store
from db.users import create_user
from db.versions import ensure_bundled_version
from engine.registry import REPO_ROOT, ModelSpec, load_registry, resolve_model
from policies.prompt import PromptFormat
from tests.app.services.loop_fixtures import export_corrections, fake_python
from tests.conftest import TINY_FORMAT, build_tiny_base

FULL = PromptFormat(policy="full")


@pytest.fixture(scope="module")
def other_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny base (another seed and width) whose own prompt format is the full one."""
    out = build_tiny_base(tmp_path_factory.mktemp("base-b") / "base-b", seed=1, hidden_size=48)
    (out / "prompt_format.json").write_text(json.dumps(FULL.to_dict()))
    return out


@pytest.fixture
def registry(tmp_path: Path, tiny_base_dir: Path, other_base_dir: Path) -> dict[str, ModelSpec]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a-retrain.yaml").write_text("learning_rate: 0.001\nmax_steps: 5\nquantization: none\n"
                                         "lora_r: 4\nlora_alpha: 8\n")
    (data / "b-retrain.yaml").write_text(f"model: {other_base_dir}\nprompt_policy: full\n"
                                         "learning_rate: 0.0002\nmax_steps: 300\nquantization: nf4\n"
                                         "precision: bf16\nlora_r: 16\n")
    (data / "models.toml").write_text(
        f'[models.a]\nbase = "{tiny_base_dir}"\nretrain = {{ config = "data/a-retrain.yaml" }}\n\n'
        f'[models.b]\nbase = "{other_base_dir}"\n'
        'retrain = { config = "data/b-retrain.yaml", '
        'overrides = { max_steps = 9, train_embeddings = false, max_train_minutes = 45 } }\n\n'
        f'[models.c]\nbase = "{tiny_base_dir}"\n'
    )
    return load_registry(data / "models.toml")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store(tmp_path / "r.db")
    with store.session() as s:
        create_user(s, "olga", "ops", "ops-password-1")
        create_user(s, "rita", "reviewer", "reviewer-password-1")
    return store


def _runner(store: Store, spec: ModelSpec, tmp_path: Path, python: str | None = None) -> Runner:
    extra = {"python": python} if python else {}
    return Runner(store, RunnerConfig.for_spec(spec, repo_root=tmp_path, runs_dir=tmp_path / "runs", **extra))


def _train_argv(cmd: list[str]) -> list[str]:
    return cmd[cmd.index("--") + 1:]


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_each_runner_retrains_its_own_base(registry: dict[str, ModelSpec], store: Store, tmp_path: Path,
                                           tiny_base_dir: Path, other_base_dir: Path) -> None:
    from engine.training import parse_run_config

    a, b = registry["a"], registry["b"]
    assert (a.prompt_format, b.prompt_format) == (TINY_FORMAT, FULL)  # each base's own saved format
    expected = {"a": (tiny_base_dir, tmp_path / "data/a-retrain.yaml", TINY_FORMAT, 0.001, 5),
                "b": (other_base_dir, tmp_path / "data/b-retrain.yaml", FULL, 0.0002, 9)}
    for spec in (a, b):
        base, config, fmt, lr, steps = expected[spec.name]
        runner = _runner(store, spec, tmp_path)
        argv = _train_argv(runner._command(tmp_path / "runs/ft-v2", RetrainRequest([1], init="base"), None))
        assert _flag(argv, "--model") == str(base) and _flag(argv, "--config") == str(config)
        assert _flag(argv, "--prompt_policy") == fmt.policy
        # What the job's train_qlora_sft makes of it: that base, that recipe, that prompt format.
        cfg = parse_run_config(argv)
        assert cfg.model == str(base) and cfg.learning_rate == lr and cfg.max_steps == steps
        assert cfg.prompt_format(resolve_model(cfg.model)) == fmt
        assert cfg.output_dir == str(tmp_path / "runs/ft-v2")

        plan = runner.plan("base")
        assert (plan.model, plan.base, plan.recipe) == (spec.name, str(base), f"data/{config.name}")
        assert plan.start == str(base) and plan.start_version is None and plan.refusal is None
        assert plan.settings["learning_rate"] == lr and plan.settings["max_steps"] == steps
    assert _runner(store, b, tmp_path).plan().settings["quantization"] == "nf4"
    assert _runner(store, b, tmp_path).plan().settings["max_train_minutes"] == 45  # the recipe's budget
    assert parse_run_config(_train_argv(_runner(store, b, tmp_path)._command(
        tmp_path / "runs/ft-v3", RetrainRequest([1], init="base"), None))).max_train_minutes == 45
    assert _runner(store, a, tmp_path).plan().settings["max_train_minutes"] is None  # none: no budget
    assert _runner(store, a, tmp_path).plan().settings["lora_target_modules"] == "all-linear"  # the default


def test_champion_start_and_a_champion_on_another_base(registry: dict[str, ModelSpec], store: Store,
                                                       tmp_path: Path, tiny_ft_dir: Path) -> None:
    with store.session() as s:
        ensure_bundled_version(s, tiny_ft_dir, registry["a"].base)
    plan = _runner(store, registry["a"], tmp_path).plan("champion")
    assert (plan.start, plan.start_version, plan.note) == (str(tiny_ft_dir), "ft-v1", None)
    runner_b = _runner(store, registry["b"], tmp_path)
    plan = runner_b.plan("champion")
    assert plan.note and "ft-v1 was trained on base" in plan.note and str(registry["b"].base) in plan.note
    assert runner_b.plan("base").note is None


def test_a_spec_without_recipe_is_refused(registry: dict[str, ModelSpec], store: Store,
                                          tmp_path: Path) -> None:
    c = registry["c"]
    assert c.retrain is None
    runner = _runner(store, c, tmp_path)
    message = "model c has no retrain recipe in data/models.toml"
    assert runner.plan().refusal and message in runner.plan().refusal  # type: ignore[operator]
    with pytest.raises(JobError, match=message):
        runner.start("olga", RetrainRequest([1]))
    with pytest.raises(JobError, match=message):
        runner._command(tmp_path / "runs/x", RetrainRequest([1]), None)
    assert not (tmp_path / "runs").exists()  # nothing written, nothing started


def test_a_recipe_field_train_qlora_sft_does_not_know(tmp_path: Path, tiny_base_dir: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data/r.yaml").write_text("learning_rat: 0.001\n")
    (tmp_path / "data/models.toml").write_text(
        f'[models.typo]\nbase = "{tiny_base_dir}"\nretrain = {{ config = "data/r.yaml" }}\n')
    spec = load_registry(tmp_path / "data/models.toml")["typo"]
    with pytest.raises(JobError, match="model typo: retrain recipe .*r.yaml: unknown .* field.*learning_rat"):
        RunnerConfig.for_spec(spec)


def test_started_job_records_the_spec_command(registry: dict[str, ModelSpec], store: Store, tmp_path: Path,
                                              other_base_dir: Path) -> None:
    export_id = export_corrections(store, tmp_path, 4, seed=4, prefix="C-RR")
    runner = _runner(store, registry["b"], tmp_path, python=fake_python(tmp_path))
    job = runner.start("olga", RetrainRequest([export_id], holdout_share=0.0, init="champion",
                                              allow_no_holdout=True))  # no champion
    runner.cancel("olga", job.id or 0)
    argv = _train_argv(json.loads(job.command_json))
    assert _flag(argv, "--model") == str(other_base_dir)
    assert _flag(argv, "--config") == str(tmp_path / "data/b-retrain.yaml")
    assert (_flag(argv, "--max_steps"), _flag(argv, "--train_embeddings")) == ("9", "false")


def test_shipped_specs_retrain_their_own_base(store: Store, tmp_path: Path) -> None:
    """The issue's case: a console serving qwen2.5-1.5b-ft trains Qwen with the Qwen recipe, not the
    embedded default; the default console keeps the embedded recipe."""
    reg = load_registry()
    qwen = Runner(store, RunnerConfig.for_spec(reg["qwen2.5-1.5b-ft"], repo_root=REPO_ROOT))
    argv = _train_argv(qwen._command(tmp_path / "ft-v2", RetrainRequest([1], init="base"), None))
    assert _flag(argv, "--model") == "Qwen/Qwen2.5-1.5B-Instruct"
    assert _flag(argv, "--config") == str(REPO_ROOT / "data/models/qwen2.5-1.5b-retrain.yaml")
    assert (_flag(argv, "--prompt_policy"), _flag(argv, "--prompt_case")) == ("full", "json")
    plan = qwen.plan("base")
    assert plan.recipe == "data/models/qwen2.5-1.5b-retrain.yaml" and plan.settings["quantization"] == "nf4"
    default = Runner(store, RunnerConfig.for_spec(reg["default-ft"], repo_root=REPO_ROOT)).config
    assert default.base_model == str(REPO_ROOT / "data/models/default-base")
    assert default.train_config == str(REPO_ROOT / "data/models/default-ft-retrain.yaml")
