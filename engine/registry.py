"""Named models: ``data/models.toml`` entries, model dirs, adapter dirs and HF ids, as one ModelSpec.

A :class:`ModelSpec` says which base to load, which LoRA adapters go on top (name -> dir),
its version and the prompt format. :func:`resolve_model` takes whatever a user typed
(``default-ft``, ``data/models/default-base``, ``runs/x``, ``Qwen/Qwen2.5-1.5B-Instruct``).
An entry's ``backend`` says who runs it: ``local`` (the default: transformers + PEFT in this process)
or ``openai`` (an OpenAI-compatible server, vLLM or ``engine.serve``, described by a :class:`ServerSpec`).
A registry entry may carry a :class:`RetrainRecipe` (its ``retrain`` table): how the console retrains
that model (a train_qlora_sft ``--config`` YAML plus overrides) on the entry's own base and prompt format.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from engine.backends.base import FastPath
from policies.prompt import PromptFormat

REPO_ROOT = Path(__file__).resolve().parent.parent
REGISTRY_PATH = REPO_ROOT / "data" / "models.toml"
# Saved beside every model/adapter we build; it wins over the registry's format at inference.
PROMPT_FORMAT_FILE = "prompt_format.json"
_HF_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_LOCAL_PREFIXES = ("data/", "runs/", "./", "../", "/")


class UnknownModel(LookupError):
    """A model name that is neither a registry entry, a model/adapter dir nor an HF id."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = known
        super().__init__(
            f"unknown model {name!r}: not a registry name, a model or adapter directory, "
            f"or a Hugging Face id (known: {', '.join(known) or 'none'})"
        )


class RegistryError(ValueError):
    """data/models.toml is malformed; the message names the entry and field."""


BACKENDS = ("local", "openai")
SERVER_KEYS = ("base_url", "served_models", "api_key_env", "timeout_s", "max_retries", "max_concurrency")


@dataclass(frozen=True)
class ServerSpec:
    """Where an ``openai`` entry's variants are served: the server's URL (ending in ``/v1``), the
    served model name of each variant (``base`` and one per adapter), the environment variable that
    holds the API key (none: no key), and the client's bounds."""

    base_url: str
    served_models: dict[str, str]  # variant -> model name on the server; "base" is required
    api_key_env: str | None = None
    timeout_s: float = 120.0  # per request
    max_retries: int = 2  # with exponential backoff
    max_concurrency: int = 8  # requests in flight

    def to_dict(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "served_models": dict(self.served_models),
                "api_key_env": self.api_key_env, "timeout_s": self.timeout_s,
                "max_retries": self.max_retries, "max_concurrency": self.max_concurrency}


RETRAIN_KEYS = ("config", "overrides", "dpo")  # the keys of an entry's ``retrain`` table
# Set by the Runner for every job (base, data, output) or by the spec (prompt format): never by a recipe.
RUNNER_KEYS = ("model", "dataset", "mix_weights", "output_dir")
# One RunConfig option per PromptFormat field ("prompt_" + its name).
PROMPT_KEYS = tuple(f"prompt_{f.name}" for f in fields(PromptFormat))


def read_run_config_file(path: str | Path) -> dict[str, Any]:
    """A train_qlora_sft ``--config`` YAML as a dict. Raises ValueError when it is not a mapping."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a run config must be a YAML mapping, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class RetrainRecipe:
    """How the console retrains a model: a run config YAML (absolute path) plus per-model overrides.

    The job trains on the spec's base in the spec's prompt format; the Runner adds the data, the
    output dir and the start (the champion's adapter or the base). ``overrides`` are RunConfig
    fields (train_qlora_sft flags) that win over the YAML's values.
    """

    config: str
    overrides: dict[str, Any] = field(default_factory=dict)
    dpo: str | None = None  # a second recipe: DPO on (chosen, rejected) correction pairs (absolute path)

    def settings(self, method: str = "sft") -> dict[str, Any]:
        """The YAML's values (the DPO recipe's for ``method="dpo"``) with the overrides applied
        (RunConfig defaults not filled in)."""
        config = self.dpo if method == "dpo" else self.config
        if config is None:
            raise ValueError("no DPO recipe (retrain.dpo)")
        return {**read_run_config_file(config), **self.overrides}

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "overrides": dict(self.overrides), "dpo": self.dpo}


@dataclass(frozen=True)
class ModelSpec:
    """One loadable model: a base plus zero or more named LoRA adapters."""

    name: str
    base: str  # HF id or absolute local path
    adapters: dict[str, str] = field(default_factory=dict)  # adapter name -> absolute dir
    version: str = "1"
    prompt_format: PromptFormat = PromptFormat()
    retrain: RetrainRecipe | None = None  # None: the console refuses to retrain this model
    server: ServerSpec | None = None  # set for backend "openai": the variants are served there
    fast: FastPath | None = None  # the local backend's speed options (None: its defaults for the device)

    @property
    def backend(self) -> str:
        """``openai`` when a server runs the model, else ``local``."""
        return "openai" if self.server else "local"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": self.base,
            "adapters": dict(self.adapters),
            "version": self.version,
            "prompt_format": self.prompt_format.to_dict(),
            "retrain": self.retrain.to_dict() if self.retrain else None,
            "backend": self.backend,
            "server": self.server.to_dict() if self.server else None,
            "fast": asdict(self.fast) if self.fast else None,
        }


def _resolve_path(value: str, root: Path) -> str:
    """Relative local paths are resolved against the repo root; HF ids stay as they are."""
    p = Path(value)
    if p.is_absolute():
        return str(p)
    candidate = root / p
    if candidate.exists() or not _HF_ID.match(value) or value.startswith(_LOCAL_PREFIXES):
        return str(candidate)
    return value


def saved_prompt_format(model_dir: str | Path) -> PromptFormat | None:
    """The prompt format saved beside a model or adapter (prompt_format.json), or None."""
    path = Path(model_dir) / PROMPT_FORMAT_FILE
    if not path.is_file():
        return None
    return PromptFormat.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _same_model(a: str, b: str, root: Path) -> bool:
    return _resolve_path(str(a), root) == _resolve_path(str(b), root)


def _recipe_file(value: str, where: str, root: Path, base: str, fmt: PromptFormat) -> Path:
    """A recipe YAML path -> the file, checked: it exists, is a mapping, trains ``base`` (when it names
    a model) in ``fmt`` (when it sets prompt options). RegistryError naming ``where`` otherwise."""
    config = Path(value) if Path(value).is_absolute() else root / value
    if not config.is_file():
        raise RegistryError(f"{where}: no such file {config}")
    try:
        settings = read_run_config_file(config)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{where}: {config} is not valid YAML ({exc})") from None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{where}: {exc}") from None
    if "model" in settings and not _same_model(str(settings["model"]), base, root):
        raise RegistryError(f"{where}: {config} trains model {settings['model']!r}, "
                            f"not this entry's base {base!r} (drop `model:` or make it the base)")
    fmt_values = fmt.to_dict()
    for key in PROMPT_KEYS:
        name = key.removeprefix("prompt_")
        if key in settings and settings[key] != fmt_values[name]:
            raise RegistryError(f"{where}: {config} sets {key}={settings[key]!r}, "
                                f"but the entry's prompt format has {name}={fmt_values[name]!r}")
    return config


def _parse_retrain(value: Any, where: str, root: Path, base: str, fmt: PromptFormat) -> RetrainRecipe:
    """An entry's ``retrain`` table -> :class:`RetrainRecipe`; RegistryError naming ``where`` and the field.

    The YAML must exist and be a mapping; a ``model`` in it must be the entry's base and its prompt
    options the entry's format (the job trains on both, so a YAML saying otherwise would mislead);
    overrides may not set what the Runner or the spec decide (model, data, output, prompt format).
    """
    if not isinstance(value, dict):
        raise RegistryError(f"{where}: retrain: expected a table like {{ config = \"x.yaml\" }}")
    unknown = sorted(set(value) - set(RETRAIN_KEYS))
    if unknown:
        raise RegistryError(f"{where}: retrain: unknown key(s) {', '.join(unknown)} "
                            f"(known: {', '.join(RETRAIN_KEYS)})")
    if not isinstance(value.get("config"), str) or not value["config"]:
        raise RegistryError(f"{where}: retrain.config is required (a run config YAML path)")
    overrides = value.get("overrides", {})
    if not isinstance(overrides, dict):
        raise RegistryError(f"{where}: retrain.overrides: expected a table of run config fields")
    owned = sorted(set(overrides) & {*RUNNER_KEYS, *PROMPT_KEYS})
    if owned:
        raise RegistryError(f"{where}: retrain.overrides: {', '.join(owned)} cannot be overridden "
                            "(the Runner sets the model and data; the prompt format is the entry's)")
    bad = sorted(k for k, v in overrides.items() if isinstance(v, (dict, list)))
    if bad:
        raise RegistryError(f"{where}: retrain.overrides: {', '.join(bad)}: expected a single value")
    config = _recipe_file(value["config"], f"{where}: retrain.config", root, base, fmt)
    dpo = None
    if "dpo" in value:
        if not isinstance(value["dpo"], str) or not value["dpo"]:
            raise RegistryError(f"{where}: retrain.dpo: expected a run config YAML path")
        dpo = _recipe_file(value["dpo"], f"{where}: retrain.dpo", root, base, fmt)
    return RetrainRecipe(config=str(config), overrides=dict(overrides), dpo=str(dpo) if dpo else None)


def _parse_server(entry: dict[str, Any], where: str) -> ServerSpec | None:
    """An entry's backend keys -> None (``local``) or a :class:`ServerSpec` (``openai``); RegistryError
    naming ``where`` and the field when they are wrong or given to a local entry."""
    backend = entry.get("backend", "local")
    if backend not in BACKENDS:
        raise RegistryError(f"{where}: backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    given = sorted(k for k in SERVER_KEYS if k in entry)
    if backend == "local":
        if given:
            raise RegistryError(f"{where}: {', '.join(given)} apply only to backend = \"openai\"")
        return None
    url = entry.get("base_url")
    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise RegistryError(f"{where}: base_url: expected an http(s) URL like \"http://127.0.0.1:8011/v1\"")
    served = entry.get("served_models")
    if not isinstance(served, dict) or "base" not in served or \
            not all(isinstance(v, str) and v for v in served.values()):
        raise RegistryError(f"{where}: served_models: expected a table of model names with a \"base\" "
                            "entry, like { base = \"default-base\", finetuned = \"finetuned\" }")
    key_env = entry.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not re.match(r"^[A-Za-z_]\w*$", key_env)):
        raise RegistryError(f"{where}: api_key_env: expected an environment variable name")
    bounds = {k: entry[k] for k in ("timeout_s", "max_retries", "max_concurrency") if k in entry}
    for k, v in bounds.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < (1 if k == "max_concurrency" else 0):
            raise RegistryError(f"{where}: {k}: expected a non-negative number, got {v!r}")
    return ServerSpec(base_url=url.rstrip("/"), served_models={k: str(v) for k, v in served.items()},
                      api_key_env=key_env, timeout_s=float(bounds.get("timeout_s", 120.0)),
                      max_retries=int(bounds.get("max_retries", 2)),
                      max_concurrency=int(bounds.get("max_concurrency", 8)))


def _parse_fast(entry: dict[str, Any], where: str, adapters: list[str],
                server: ServerSpec | None) -> FastPath | None:
    """An entry's ``fast`` table -> :class:`FastPath` (local backend only); RegistryError naming the field."""
    if "fast" not in entry:
        return None
    if server is not None:
        raise RegistryError(f"{where}: fast applies only to backend = \"local\" (a server has its own)")
    try:
        return FastPath.from_dict(entry["fast"], adapters)
    except ValueError as exc:
        raise RegistryError(f"{where}: fast: {exc}") from None


def load_registry(path: str | Path = REGISTRY_PATH) -> dict[str, ModelSpec]:
    """Parse the registry file. Out: name -> ModelSpec. Raises :class:`RegistryError` naming the entry."""
    path = Path(path)
    if not path.is_file():
        return {}
    root = path.resolve().parent.parent  # data/models.toml -> repo root
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    specs: dict[str, ModelSpec] = {}
    for name, entry in data.get("models", {}).items():
        server = _parse_server(entry, f"{path}: model {name!r}")
        if "base" not in entry and server is None:
            raise RegistryError(f"{path}: model {name!r}: field 'base' is required")
        try:
            fmt = PromptFormat.from_dict(entry.get("prompt_format"))
        except TypeError as exc:
            raise RegistryError(f"{path}: model {name!r}: prompt_format: {exc}") from None
        adapters = {a: _resolve_path(d, root) for a, d in entry.get("adapters", {}).items()}
        for adapter_dir in adapters.values():  # the format an adapter was trained with wins
            fmt = saved_prompt_format(adapter_dir) or fmt
        # A served entry's base (optional) names the weights behind the server, for versions and retraining.
        base = _resolve_path(entry["base"], root) if "base" in entry else server.served_models["base"]
        if not adapters and Path(base).exists():
            fmt = saved_prompt_format(base) or fmt
        unserved = sorted(set(adapters) - set(server.served_models)) if server else []
        if unserved:
            raise RegistryError(f"{path}: model {name!r}: adapters {unserved} have no served_models name")
        fast = _parse_fast(entry, f"{path}: model {name!r}", list(adapters), server)
        retrain = None
        if "retrain" in entry:
            retrain = _parse_retrain(entry["retrain"], f"{path}: model {name!r}", root, base, fmt)
        specs[name] = ModelSpec(
            name=name, base=base, adapters=adapters, version=str(entry.get("version", "1")),
            prompt_format=fmt, retrain=retrain, server=server, fast=fast,
        )
    return specs


def _adapter_spec(adapter_dir: Path) -> ModelSpec:
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise RegistryError(f"{adapter_dir}/adapter_config.json: base_model_name_or_path is missing")
    base = _resolve_path(base, REPO_ROOT)
    fmt = saved_prompt_format(adapter_dir)
    if fmt is None and Path(base).exists():
        fmt = saved_prompt_format(base)
    return ModelSpec(
        name=adapter_dir.name,
        base=base,
        adapters={"finetuned": str(adapter_dir)},
        version=adapter_dir.name,
        prompt_format=fmt or PromptFormat(),
    )


def resolve_model(name_or_path: str | Path, registry_path: str | Path = REGISTRY_PATH) -> ModelSpec:
    """Turn a registry name, a model dir, an adapter dir or an HF id into a :class:`ModelSpec`.

    Adapter dirs (with adapter_config.json) resolve to their ``base_model_name_or_path`` with
    the adapter as ``finetuned``; the prompt format saved beside the adapter wins. Raises
    :class:`UnknownModel` naming the input and the known names when nothing matches.
    """
    name = str(name_or_path)
    registry = load_registry(registry_path)
    if name in registry:
        return registry[name]
    path = Path(name) if Path(name).is_absolute() else Path.cwd() / name
    if not path.exists():
        path = REPO_ROOT / name
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return _adapter_spec(path)
        if (path / "config.json").is_file():
            return ModelSpec(
                name=path.name, base=str(path), prompt_format=saved_prompt_format(path) or PromptFormat()
            )
    if _HF_ID.match(name) and not path.exists() and not name.startswith(_LOCAL_PREFIXES):
        return ModelSpec(name=name, base=name)
    raise UnknownModel(name, sorted(registry))
