"""engine.registry: names, model dirs, adapter dirs, HF ids, and unknown names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
