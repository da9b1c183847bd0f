"""The Engine: cases in, validated answers with the guard's verdict out.

Read top to bottom like a sampling script: load one base model and its adapters
(:meth:`Engine.load`), render each case with the one prompt builder, generate in left-padded
batches (constrained to the answer schema by default), extract and validate each answer, then
ask the guard. The model spec's ``backend`` says who generates: this process (``local``) or an
OpenAI-compatible server (``openai``: vLLM or ``engine.serve``); nothing else changes. The console,
the store and the scripts call only this API::

    engine = Engine.load("default-ft")
    engine.variants                      # ["base", "finetuned"]
    engine.decide(case)                  # ModelAnswer of the fine-tuned variant
    engine.compare(case)                 # {"base": ModelAnswer, "finetuned": ModelAnswer}
    engine.decide_many(cases, variant="base", batch_size=8, progress=lambda done, total: ...)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.backends.base import (
    BASE_VARIANT,
    Backend,
    Generation,
    GenerationSettings,
    UnknownVariant,
)
from engine.extract import extract_answer
from engine.guard import guard
from engine.types import ModelAnswer
from policies import Case

FINETUNED_VARIANT = "finetuned"  # the registry's name for a model's main adapter
Progress = Callable[[int, int], None]  # (done, total), called after every batch


class Engine:
    """Answers cases with one or more variants of one model.

    Thread-safe: the backend serialises generation (the console calls from several threads).
    """

    def __init__(self, backend: Backend, settings: GenerationSettings | None = None,
                 spec: Any = None):
        self.backend = backend
        self.settings = settings or GenerationSettings()
        self.spec = spec  # the engine.registry.ModelSpec it was loaded from, when there is one
        # adapter name -> resolved dir it was loaded from (what swap_adapter compares against)
        self.adapter_paths: dict[str, str] = {
            n: str(Path(p).resolve()) for n, p in (getattr(spec, "adapters", None) or {}).items()}

    # --- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: Any, adapters: dict[str, str] | None = None, device: str = "auto",
             quantize: str = "none", settings: GenerationSettings | None = None,
             check: bool = True, dtype: str = "auto") -> Engine:
        """Load a model once, with its LoRA adapters on top, on the backend its spec names.

        In: ``model``, a registry name, a model/adapter dir, an HF id or a ``ModelSpec``;
        ``adapters``, extra ``{name: adapter_dir}`` loaded after the spec's own; ``device``
        (auto | cpu | cuda[:n]), ``quantize`` (none | nf4 | auto: NF4 on a GPU) and ``dtype`` (auto: bf16 on
        a GPU that has it, else fp32 | bf16 | fp16 | fp32), local models only;
        ``check``: for a served model, ask the server for its models first (fail fast).
        Out: an Engine whose variants are ``base`` plus every adapter name.
        Errors: ``engine.registry.UnknownModel``; OSError/ValueError from transformers or PEFT (local);
        :class:`~engine.backends.base.BackendError` naming the server when it is down or lacks a model.
        """
        from engine.registry import ModelSpec, resolve_model

        spec = model if isinstance(model, ModelSpec) else resolve_model(model)
        versions = {n: _tag(Path(p).name, spec.version) for n, p in spec.adapters.items()}
        if spec.server is not None:
            from engine.backends.openai import OpenAIBackend

            backend: Backend = OpenAIBackend.from_spec(spec, _base_version(spec), versions)
            if check:
                backend.check()  # type: ignore[attr-defined]
        else:
            backend = _local_backend(spec, {**spec.adapters, **(adapters or {})}, device, quantize, dtype)
        engine = cls(backend, settings, spec)
        for name, path in (adapters or {}).items():
            if spec.server is not None:
                engine.add_adapter(name, path, version=_tag(Path(path).name, spec.version))
            else:
                engine.adapter_paths[name] = str(Path(path).resolve())
        return engine

    def add_adapter(self, name: str, path: str, version: str | None = None) -> None:
        """Load another adapter version on the same base; it becomes variant ``name``."""
        self.backend.add_adapter(name, path, version)
        self.adapter_paths[name] = str(Path(path).resolve())

    def swap_adapter(self, name: str, path: str, version: str | None = None) -> None:
        """Serve the adapter at ``path`` as variant ``name`` (e.g. the new champion as ``finetuned``)
        without reloading the base; nothing changes when that dir is already served under ``name``."""
        if self.adapter_paths.get(name) == str(Path(path).resolve()) and name in self.variants:
            return
        self.backend.replace_adapter(name, path, version)
        self.adapter_paths[name] = str(Path(path).resolve())

    @property
    def variants(self) -> list[str]:
        """``["base", "finetuned", ...]``: the base with adapters disabled, then each adapter by name."""
        return self.backend.variants

    @property
    def default_variant(self) -> str:
        names = self.variants
        if FINETUNED_VARIANT in names:
            return FINETUNED_VARIANT
        return names[1] if len(names) > 1 else BASE_VARIANT

    def model_version(self, variant: str) -> str:
        return self.backend.model_version(variant)

    @property
    def backend_name(self) -> str:
        """``local`` (this process) or ``openai`` (a server), as the model's spec says."""
        return getattr(self.spec, "backend", None) or "local"

    @property
    def prompt_format(self) -> Any:
        """The prompt format the served weights were trained with (exports must use the same)."""
        return getattr(self.backend, "prompt_format", None) or getattr(self.spec, "prompt_format", None)

    def figures(self) -> dict[str, Any]:
        """What the backend says about itself: ``backend``; for a local model ``memory`` (bytes: total,
        adapters, base), ``linear4bit_modules`` and ``last_decoder`` ((seconds, steps) of the latest
        constrained batch's grammar, or None); for a served one ``base_url`` and ``served_models``."""
        return self.backend.figures()

    # --- deciding --------------------------------------------------------------------------------
    def decide(self, case: Case, variant: str | None = None, constrained: bool = True,
               settings: GenerationSettings | None = None) -> ModelAnswer:
        """One case, one variant (default: the fine-tuned one). The guard runs without MODELS_DISAGREE."""
        return self.decide_many([case], variant=variant, batch_size=1, constrained=constrained,
                                settings=settings)[0]

    def decide_many(self, cases: Sequence[Case], variant: str | None = None, batch_size: int = 8,
                    constrained: bool = True, progress: Progress | None = None,
                    settings: GenerationSettings | None = None,
                    group_by_length: bool = True) -> list[ModelAnswer]:
        """Answer ``cases`` with ``variant`` in left-padded batches of ``batch_size``, in input order.

        With ``group_by_length`` (the default) the batches are cut from the cases ordered by prompt
        length, longest first, so a batch pads its prompts less (batches of 16 with the policy in prose:
        ~16% of prompt tokens are padding in input order, ~1% grouped) and the largest runs first;
        the answers still come back in input order. Each answer's latency is its batch's wall time
        divided by the batch size. Never raises for a bad model output (it becomes status
        invalid/truncated); raises :class:`UnknownVariant` for an unknown variant and ValueError for
        ``batch_size < 1``.
        """
        variant = variant or self.default_variant
        if variant not in self.variants:
            raise UnknownVariant(variant, self.variants)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        settings = settings or self.settings
        prompts = [self.backend.prompt(case) for case in cases]
        answers: dict[int, ModelAnswer] = {}
        sizes = [self.backend.prompt_size(p) for p in prompts] if group_by_length and batch_size > 1 else None
        for rows in batch_rows(len(prompts), batch_size, sizes):
            t0 = time.perf_counter()
            generations = self.backend.generate([prompts[i] for i in rows], variant, constrained, settings)
            per_case = (time.perf_counter() - t0) / len(rows)
            for i, gen in zip(rows, generations, strict=True):
                answers[i] = self._answer(cases[i], gen, variant, per_case, constrained)
            if progress is not None:
                progress(len(answers), len(cases))
        return [answers[i] for i in range(len(cases))]

    def _answer(self, case: Case, gen: Generation, variant: str, latency_s: float,
                constrained: bool) -> ModelAnswer:
        found = extract_answer(gen.text, hit_token_limit=gen.hit_token_limit)
        error = found.error
        if gen.grammar_error and found.status != "ok":
            error = f"{error}; grammar: {gen.grammar_error}"
        answer = ModelAnswer(
            case_id=case.case_id, variant=variant, model_version=self.model_version(variant),
            status=found.status, raw_text=gen.text, answer=found.answer, error=error,
            latency_s=latency_s, input_tokens=gen.input_tokens, output_tokens=gen.output_tokens,
            truncated=gen.hit_token_limit, extra={"constrained": constrained},
        )
        return replace(answer, guard=guard(case, answer))

    # --- comparing -------------------------------------------------------------------------------
    def compare(self, case: Case, variants: Sequence[str] | None = None, constrained: bool = True,
                settings: GenerationSettings | None = None) -> dict[str, ModelAnswer]:
        """Answer ``case`` with each of ``variants`` (default: base and the fine-tuned adapter); each
        verdict carries MODELS_DISAGREE across them. Raises :class:`UnknownVariant`."""
        return self.compare_many([case], variants, constrained=constrained, settings=settings)[0]

    def compare_many(self, cases: Sequence[Case], variants: Sequence[str] | None = None,
                     batch_size: int = 8, constrained: bool = True, progress: Progress | None = None,
                     settings: GenerationSettings | None = None) -> list[dict[str, ModelAnswer]]:
        """Batched :meth:`compare`: one ``{variant: ModelAnswer}`` per case, in input order.

        ``progress`` counts case-variant answers (``len(cases) * len(variants)`` in all). A model
        without adapters compares its base alone.
        """
        variants = list(variants or dict.fromkeys([BASE_VARIANT, self.default_variant]))
        total = len(cases) * len(variants)
        per_variant: dict[str, list[ModelAnswer]] = {}
        for k, variant in enumerate(variants):
            done_before = k * len(cases)
            step = None if progress is None else (lambda d, _t, b=done_before: progress(b + d, total))
            per_variant[variant] = self.decide_many(cases, variant, batch_size, constrained, step, settings)
        results = []
        for i, case in enumerate(cases):
            row = {v: per_variant[v][i] for v in variants}
            decisions = {v: a.decision for v, a in row.items()}
            results.append({v: replace(a, guard=guard(case, a, decisions)) for v, a in row.items()})
        return results


def batch_rows(n: int, batch_size: int, sizes: Sequence[int] | None = None) -> list[list[int]]:
    """The batches :meth:`Engine.decide_many` runs over ``n`` prompts, as lists of their indices: in
    input order, or, given the prompts' ``sizes``, cut from them ordered longest first (ties keep
    input order)."""
    order = list(range(n))
    if sizes is not None:
        order.sort(key=lambda i: -sizes[i])
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


def _local_backend(spec: Any, adapters: dict[str, str], device: str, quantize: str,
                   dtype: str = "auto") -> Backend:
    """The in-process backend of ``spec``: tokenizer, base model on ``device``, ``adapters`` on top."""
    from engine.backends.local import LocalPeftBackend
    from engine.loading import load_base_model, load_tokenizer, pick_device

    # The tokenizer saved with the adapter is the one it was trained with; else the base's.
    with_tokenizer = [p for p in adapters.values() if (Path(p) / "tokenizer_config.json").is_file()]
    tokenizer = load_tokenizer(with_tokenizer[0] if with_tokenizer else spec.base)
    base_model = load_base_model(spec, quantize=quantize, dtype=dtype)  # type: ignore[arg-type]
    if device != "auto" or _has_gpu():
        target = pick_device(device)
        if getattr(base_model, "policyops_quantize", "none") == "none":
            base_model = base_model.to(target)
    backend = LocalPeftBackend(tokenizer, base_model, prompt_format=spec.prompt_format,
                               base_version=_base_version(spec), fast=spec.fast)
    for name, path in adapters.items():
        backend.add_adapter(name, path, version=_tag(Path(path).name, spec.version))
    return backend


def _tag(name: str, version: str) -> str:
    """``name@version``, or just ``name`` when the version is the name (specs made from a directory)."""
    return name if version in ("", name) else f"{name}@{version}"


def _base_version(spec: Any) -> str:
    """Versions name the weights: the base dir (or HF id) at the registry entry's version, e.g.
    ``default-base@1`` (so the fine-tuned variant reads ``default-base@1+default-ft@1``). A spec made
    from an adapter dir carries the adapter's version, which says nothing about the base."""
    base = Path(spec.base).name
    from_adapter_dir = any(Path(p).name == spec.version for p in spec.adapters.values())
    return base if from_adapter_dir else _tag(base, spec.version)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
