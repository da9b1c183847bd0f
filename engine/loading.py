"""Open tokenizers and base models, real (Hugging Face) or embedded (built by engine.build).

One function per thing for both kinds, so training, inference and the constrained decoder
all see the same token ids for the same prompt (FINDINGS: AutoTokenizer would re-tokenize
our own tokenizer with Qwen2's pre-tokenizer; we detect ours by a marker and keep it).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from engine.build import TOKENIZER_MARKER

log = logging.getLogger(__name__)

# PEFT 0.21's PeftModel.__init__ reads ``model.is_gradient_checkpointing``, an alias transformers 5
# deprecates with a FutureWarning on every read; the call is PEFT's, not ours.
_CHECKPOINTING_ALIAS = r"`is_gradient_checkpointing` is deprecated"


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around ``PeftModel.from_pretrained``: silences PEFT's read of the deprecated
    ``is_gradient_checkpointing`` alias (that FutureWarning only; every other warning still shows)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CHECKPOINTING_ALIAS, category=FutureWarning)
        yield

# PEFT 0.21's load_adapter, for a second adapter trained with embeddings on a tied base, looks for the
# tied head before engine.backends.local.tie_head_copies has tied it, and warns that it found none.
_TYING_NOT_FOUND = r"You have requested `ensure_weight_tying`, but no tied modules were found"


@contextmanager
def adapter_loading() -> Iterator[None]:
    """Around ``PeftModel.load_adapter`` followed by ``tie_head_copies``: silences PEFT's "no tied
    modules" warning, which the tie that follows answers (that UserWarning only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TYING_NOT_FOUND, category=UserWarning)
        yield


Quantize = Literal["auto", "nf4", "none"]
DTypeName = Literal["auto", "bf16", "fp16", "fp32"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def is_own_tokenizer(path_or_id: str | Path) -> bool:
    """True when ``path_or_id`` is a local directory holding a tokenizer built by engine.build."""
    cfg = Path(path_or_id) / "tokenizer_config.json"
    if not cfg.is_file():
        return False
    try:
        return bool(json.loads(cfg.read_text(encoding="utf-8")).get(TOKENIZER_MARKER))
    except (OSError, json.JSONDecodeError):
        return False


def load_tokenizer(path_or_id: str | Path) -> PreTrainedTokenizerBase:
    """Open the tokenizer of a model dir, an adapter dir or an HF id, ready for generation.

    Out: the tokenizer, padding on the left, with a pad token (eos when the model has none).
    Our own tokenizers open as PreTrainedTokenizerFast; others via AutoTokenizer with
    trust_remote_code off. Errors: OSError / ValueError from transformers when nothing loads.
    """
    if is_own_tokenizer(path_or_id):
        tok: PreTrainedTokenizerBase = PreTrainedTokenizerFast.from_pretrained(str(path_or_id))
    else:
        tok = AutoTokenizer.from_pretrained(str(path_or_id), trust_remote_code=False)
    tok.padding_side = "left"  # generation appends on the right; prompts must end flush
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def pick_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; any other name (cpu, cuda:N) as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(device: str | None = None) -> torch.dtype:
    """The compute dtype: bf16 on a GPU that supports it, else fp16 on a GPU, else fp32 (CPU)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _DTYPES.items()}[dtype]


def resolve_quantize(quantize: Quantize) -> Literal["nf4", "none"]:
    """``auto`` means NF4 on a GPU (memory is what 4-bit saves) and none on the CPU."""
    if quantize == "auto":
        return "nf4" if torch.cuda.is_available() else "none"
    return quantize


def nf4_config(compute_dtype: torch.dtype, storage_dtype: torch.dtype | None = None) -> Any:
    """BitsAndBytesConfig for QLoRA: NF4 4-bit weights, double quantisation, ``compute_dtype`` maths.
    ``storage_dtype`` packs the 4-bit weights in that dtype (FSDP shards only uniform dtypes: pass the
    compute dtype there); default uint8."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=storage_dtype or torch.uint8,
    )


def _base_path(spec_or_path: Any) -> str:
    base = getattr(spec_or_path, "base", spec_or_path)
    return str(base)


def load_base_model(spec_or_path: Any, quantize: Quantize = "auto", dtype: DTypeName = "auto",
                    device_map: Any = None, fsdp: bool = False) -> Any:
    """Open the base causal LM of a ``ModelSpec`` (its ``base``) or of a path / HF id.

    In: the model, ``quantize`` (auto | nf4 | none), ``dtype`` (auto | bf16 | fp16 | fp32);
    ``device_map`` for NF4 weights (training on several GPUs: ``{"": local_rank}``, each rank's copy on
    its own device); ``fsdp``: NF4 weights stored in the compute dtype, so FSDP can shard them.
    Out: the model in eval mode; ``model.policyops_quantize`` says what was used. When NF4
    loading fails (no bitsandbytes backend), it logs a warning and loads unquantised.
    Errors: OSError from transformers when the model does not exist.
    """
    path = _base_path(spec_or_path)
    torch_dtype = pick_dtype() if dtype == "auto" else _DTYPES[dtype]
    mode = resolve_quantize(quantize)
    model = None
    if mode == "nf4":
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path,
                quantization_config=nf4_config(torch_dtype, torch_dtype if fsdp else None),
                device_map=device_map,
                dtype=torch_dtype,
                trust_remote_code=False,
            )
        except Exception as exc:  # noqa: BLE001 - any backend failure falls back to plain weights
            log.warning(
                "NF4 4-bit loading of %s failed (%s: %s); loading unquantised %s",
                path,
                type(exc).__name__,
                exc,
                dtype_name(torch_dtype),
            )
            mode = "none"
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=False)
    model.eval()
    model.policyops_quantize = mode
    return model
