"""Merge a LoRA adapter into its base for deployment, and prove the merge answers as base+adapter did.

:func:`merge_adapter` loads the base in full precision (never 4-bit: NF4 weights cannot absorb the
LoRA delta exactly, so a QLoRA adapter is merged into the fp32/bf16 original), applies PEFT's
``merge_and_unload`` and saves a plain transformers model with the tokenizer and the prompt
format it was trained with. :func:`verify_merge` answers the same cases greedily with
base+adapter and with the merged model and lists every case where they differ.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.registry import PROMPT_FORMAT_FILE, resolve_model
from policies import Case


@dataclass(frozen=True)
class Mismatch:
    case_id: str
    adapter_text: str
    merged_text: str
    adapter_decision: str | None
    merged_decision: str | None


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, dtype: str = "fp32") -> Path:
    """Write ``out_dir``: the base of ``adapter_dir`` with the adapter merged in (``dtype`` fp32|bf16|fp16).

    Errors: engine.registry.UnknownModel / RegistryError for a dir without adapter_config.json or
    base; OSError from transformers/PEFT.
    """
    from peft import PeftModel

    from engine.loading import load_base_model, load_tokenizer, peft_wrapping

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    spec = resolve_model(str(adapter_dir))
    if not spec.adapters:
        raise ValueError(f"{adapter_dir}: not an adapter dir (no adapter_config.json)")
    base = load_base_model(spec, quantize="none", dtype=dtype)  # type: ignore[arg-type]
    with peft_wrapping():
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else spec.base
    load_tokenizer(tokenizer_src).save_pretrained(out_dir)
    for src in (adapter_dir / PROMPT_FORMAT_FILE, Path(spec.base) / PROMPT_FORMAT_FILE):
        if src.is_file():
            shutil.copy(src, out_dir / PROMPT_FORMAT_FILE)
            break
    info = {"adapter": str(adapter_dir), "base": spec.base, "dtype": dtype,
            "prompt_format": spec.prompt_format.to_dict()}
    (out_dir / "merge_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return out_dir


def verify_merge(adapter_dir: str | Path, merged_dir: str | Path, cases: Sequence[Case],
                 max_new_tokens: int = 512, batch_size: int = 8) -> list[Mismatch]:
    """Greedy (constrained) answers of base+adapter vs the merged model on ``cases``; out: the mismatches."""
    from engine.backends.base import GenerationSettings
    from engine.core import Engine

    settings = GenerationSettings(max_new_tokens=max_new_tokens)  # greedy by default
    with_adapter = Engine.load(str(adapter_dir), settings=settings, device="cpu")
    merged = Engine.load(str(merged_dir), settings=settings, device="cpu")
    ours = with_adapter.decide_many(cases, variant="finetuned", batch_size=batch_size)
    theirs = merged.decide_many(cases, variant="base", batch_size=batch_size)
    return [Mismatch(a.case_id, a.raw_text, b.raw_text, a.decision, b.decision)
            for a, b in zip(ours, theirs, strict=True) if a.raw_text != b.raw_text]


def mismatch_report(mismatches: Sequence[Mismatch], n: int) -> dict[str, Any]:
    """JSON-safe summary: how many of ``n`` cases differ, which, and whether the decision changed."""
    return {"cases": n, "mismatches": len(mismatches),
            "decision_changes": sum(m.adapter_decision != m.merged_decision for m in mismatches),
            "details": [asdict(m) for m in mismatches]}
