"""engine.registry: names, model dirs, adapter dirs, HF ids, and unknown names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.backends import FastPath
from engine.registry import REPO_ROOT, RegistryError, UnknownModel, load_registry, resolve_model
from policies.prompt import PromptFormat
from tests.conftest import TINY_FORMAT


def test_default_entries() -> None:
    reg = load_registry()
    assert {"default-base", "default-ft", "qwen2.5-1.5b", "qwen2.5-1.5b-ft"} <= set(reg)
    ft = reg["default-ft"]
    assert ft.base == str(REPO_ROOT / "data/models/default-base")
    assert ft.adapters == {"finetuned": str(REPO_ROOT / "data/models/default-ft")}
    assert reg["qwen2.5-1.5b"].base == "Qwen/Qwen2.5-1.5B-Instruct"
    assert reg["qwen2.5-1.5b"].prompt_format == PromptFormat(policy="full")
    assert reg["default-base"].adapters == {}


def test_model_dir_and_adapter_dir(tiny_base_dir: Path, tiny_ft_dir: Path) -> None:
    base = resolve_model(str(tiny_base_dir))
    assert base.base == str(tiny_base_dir) and base.adapters == {} and base.prompt_format == TINY_FORMAT
    ft = resolve_model(str(tiny_ft_dir))
    assert Path(ft.base) == tiny_base_dir and ft.adapters == {"finetuned": str(tiny_ft_dir)}
    assert ft.prompt_format == TINY_FORMAT


def test_adapter_prompt_format_wins(tmp_path: Path, tiny_base_dir: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_base_dir)}))
    (tmp_path / "prompt_format.json").write_text(json.dumps({"policy": "full"}))
    assert resolve_model(str(tmp_path)).prompt_format == PromptFormat(policy="full")


def test_hf_id_and_unknown_name() -> None:
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct").base == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(UnknownModel) as err:
        resolve_model("no-such-model")
    assert "no-such-model" in str(err.value) and "default-ft" in str(err.value)
    with pytest.raises(UnknownModel):
        resolve_model("runs/does-not-exist")


def test_malformed_registry(tmp_path: Path) -> None:
    path = tmp_path / "data" / "models.toml"
    path.parent.mkdir()
    path.write_text('[models.x]\nversion = "1"\n')
    with pytest.raises(RegistryError, match="'x'"):
        load_registry(path)
    path.write_text('[models.y]\nbase = "data/models/y"\nprompt_format = { nope = 1 }\n')
    with pytest.raises(RegistryError, match="'y'"):
        load_registry(path)


def test_shipped_retrain_recipes() -> None:
    """Each shipped model retrains on its own base: the embedded ones with the embedded recipe, the
    Qwen ones with the QLoRA recipe (NF4, LoRA r 16 all-linear, lr 2e-4, bf16, a few hundred steps)."""
    reg = load_registry()
    for name in ("default-base", "default-ft"):
        assert reg[name].retrain is not None
        assert reg[name].retrain.config == str(REPO_ROOT / "data/models/default-ft-retrain.yaml")
    for name in ("qwen2.5-1.5b", "qwen2.5-1.5b-ft"):
        recipe = reg[name].retrain
        assert recipe is not None
        assert recipe.config == str(REPO_ROOT / "data/models/qwen2.5-1.5b-retrain.yaml")
        settings = recipe.settings()
        assert settings["model"] == reg[name].base and settings["prompt_policy"] == "full"
        assert (settings["quantization"], settings["precision"], settings["lora_r"], settings["lora_alpha"],
                settings["lora_target_modules"], settings["learning_rate"]) == \
            ("nf4", "bf16", 16, 32, "all-linear", 2e-4)
        assert 100 <= settings["max_steps"] <= 1000
    assert reg["qwen2.5-1.5b"].to_dict()["retrain"]["config"].endswith("qwen2.5-1.5b-retrain.yaml")


def _registry(tmp_path: Path, entry: str, recipe: str | None = "lr.yaml") -> Path:
    path = tmp_path / "data" / "models.toml"
    path.parent.mkdir(exist_ok=True)
    if recipe:
        (tmp_path / "data" / recipe).write_text("learning_rate: 0.001\nmax_steps: 7\n")
    path.write_text(f'[models.m]\nbase = "Org/Base-1"\n{entry}\n')
    return path


def test_retrain_recipe_parsed(tmp_path: Path) -> None:
    path = _registry(tmp_path, 'retrain = { config = "data/lr.yaml", overrides = { learning_rate = 5e-4 } }')
    spec = load_registry(path)["m"]
    assert spec.retrain is not None and spec.retrain.config == str(tmp_path / "data/lr.yaml")
    assert spec.retrain.overrides == {"learning_rate": 5e-4}
    assert spec.retrain.settings() == {"learning_rate": 5e-4, "max_steps": 7}  # overrides win
    assert load_registry(_registry(tmp_path, 'version = "2"', None))["m"].retrain is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('retrain = { config = "data/lr.yaml", steps = 3 }', r"retrain: unknown key\(s\) steps"),
        ('retrain = { overrides = { max_steps = 3 } }', "retrain.config is required"),
        ('retrain = { config = "data/missing.yaml" }', "retrain.config: no such file"),
        ('retrain = "data/lr.yaml"', "retrain: expected a table"),
        ('retrain = { config = "data/lr.yaml", overrides = 3 }', "retrain.overrides: expected a table"),
        ('retrain = { config = "data/lr.yaml", overrides = { model = "x/y" } }',
         "retrain.overrides: model cannot be overridden"),
        ('retrain = { config = "data/lr.yaml", overrides = { prompt_policy = "titles" } }',
         "prompt_policy cannot be overridden"),
        ('retrain = { config = "data/lr.yaml", overrides = { dataset = ["a"] } }',
         "dataset cannot be overridden"),
    ],
)
def test_bad_retrain_recipe(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message) as err:
        load_registry(_registry(tmp_path, entry))
    assert "model 'm'" in str(err.value)


def test_retrain_recipe_must_match_the_base_and_format(tmp_path: Path) -> None:
    entry = 'prompt_format = { policy = "full" }\nretrain = { config = "data/r.yaml" }'
    path = _registry(tmp_path, entry, None)
    recipe = tmp_path / "data" / "r.yaml"
    recipe.write_text("model: Other/Base-2\n")
    with pytest.raises(RegistryError, match=r"model 'm'.*trains model 'Other/Base-2', not this entry's base"):
        load_registry(path)
    recipe.write_text("model: Org/Base-1\nprompt_policy: titles\n")
    with pytest.raises(RegistryError, match=r"model 'm'.*prompt_policy='titles'.*policy='full'"):
        load_registry(path)
    recipe.write_text("- not a mapping\n")
    with pytest.raises(RegistryError, match=r"model 'm'.*retrain.config.*YAML mapping"):
        load_registry(path)
    recipe.write_text("model: Org/Base-1\nprompt_policy: full\n")
    assert load_registry(path)["m"].retrain is not None


def test_served_entry(tmp_path: Path) -> None:
    reg = load_registry()
    served = reg["served-ft"]
    assert served.backend == "openai" and reg["default-ft"].backend == "local"
    assert served.server is not None and served.server.served_models == {"base": "default-base",
                                                                          "finetuned": "finetuned"}
    assert served.server.base_url == "http://127.0.0.1:8011/v1"
    assert served.adapters == reg["default-ft"].adapters
    assert served.prompt_format == reg["default-ft"].prompt_format
    assert served.to_dict()["server"]["api_key_env"] == "POLICYOPS_SERVE_API_KEY"


@pytest.mark.parametrize("entry,message", [
    ('backend = "vllm"\nbase = "x/y"', "backend: expected one of local, openai"),
    ('base = "x/y"\nbase_url = "http://h/v1"', 'base_url apply only to backend = "openai"'),
    ('backend = "openai"\nserved_models = { base = "b" }', "base_url: expected an http"),
    ('backend = "openai"\nbase_url = "http://h/v1"\nserved_models = { finetuned = "f" }', 'a "base" entry'),
    ('backend = "openai"\nbase_url = "http://h/v1"\nserved_models = { base = "b" }\napi_key_env = "A B"',
     "api_key_env"),
    ('backend = "openai"\nbase_url = "http://h/v1"\nserved_models = { base = "b" }\nmax_concurrency = 0',
     "max_concurrency"),
    ('backend = "openai"\nbase_url = "http://h/v1"\nserved_models = { base = "b" }\n'
     'adapters = { ft = "runs/x" }', "have no served_models name"),
])
def test_bad_served_entry(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "data" / "models.toml"
    path.parent.mkdir()
    path.write_text(f"[models.m]\n{entry}\n", encoding="utf-8")
    with pytest.raises(RegistryError, match=message):
        load_registry(path)


def test_served_entry_without_base_names_the_served_base(tmp_path: Path) -> None:
    path = tmp_path / "data" / "models.toml"
    path.parent.mkdir()
    path.write_text('[models.m]\nbackend = "openai"\nbase_url = "https://gpu.example/v1/"\n'
                    'served_models = { base = "Qwen/Qwen2.5-1.5B-Instruct" }\n', encoding="utf-8")
    spec = load_registry(path)["m"]
    assert spec.base == "Qwen/Qwen2.5-1.5B-Instruct" and spec.server.base_url == "https://gpu.example/v1"


def test_fast_options_parsed(tmp_path: Path) -> None:
    path = _registry(tmp_path, 'adapters = { ft = "runs/ft" }\n'
                               'fast = { static_cache = true, static_cache_len = 4096, merged = "ft" }', None)
    spec = load_registry(path)["m"]
    assert spec.fast == FastPath(static_cache=True, static_cache_len=4096, merged="ft")
    assert spec.to_dict()["fast"]["merged"] == "ft"
    assert load_registry()["default-ft"].fast is None  # the device's defaults


@pytest.mark.parametrize("entry,message", [
    ('fast = { compile = true }', r"fast: unknown key\(s\) compile \(known: overlap_grammar"),
    ('fast = { static_cache = "yes" }', "fast: static_cache: expected true or false"),
    ('fast = { prefix_cache_size = 0 }', "fast: prefix_cache_size: expected a whole number from 1 to 256"),
    ('fast = { static_cache_len = 1e9 }', "fast: static_cache_len: expected a whole number"),
    ('fast = { merged = "ft" }', r"fast: merged: expected one of this model's adapters \(none\), got 'ft'"),
    ('fast = "on"', "fast: expected a table"),
    ('backend = "openai"\nbase_url = "http://h/v1"\nserved_models = { base = "b" }\nfast = {}',
     'fast applies only to backend = "local"'),
])
def test_bad_fast_options(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message) as err:
        load_registry(_registry(tmp_path, entry, None))
    assert "model 'm'" in str(err.value)
