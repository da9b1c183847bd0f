"""A LoRA adapter merged into a 4-bit (bitsandbytes NF4) base for serving: a plain copy in the compute
dtype, whose weights are the NF4 values the 4-bit kernels compute with plus the adapter's delta.

PEFT's own merge into a 4-bit layer quantizes the merged weight again, which rounds most of a LoRA
delta away; :func:`merge_dequantized` keeps it. The local backend's ``merged`` fast path
(:class:`engine.backends.base.FastPath`) uses it over a 4-bit base. For a merged model to save and
deploy, :mod:`engine.merge` merges into the unquantised original instead.
"""

from __future__ import annotations

import copy
from typing import Any


def is_4bit(module: Any) -> bool:
    """Whether ``module`` is a bitsandbytes 4-bit linear (PEFT's LoRA wrapper of one has the same class
    name, and is not)."""
    kind = type(module)
    return kind.__name__ == "Linear4bit" and kind.__module__.startswith("bitsandbytes")


def dequantized_linear(layer: Any, chunk: int = 1024) -> Any:
    """The weight (out x in) a linear ``layer`` computes with, in its compute dtype: for a bitsandbytes
    4-bit layer, read back through its own kernel (``bitsandbytes.matmul_4bit``, no bias) on the
    identity, ``chunk`` rows at a time, so it is the matrix its forward uses, however bitsandbytes stores
    it (on some CPUs the weights are repacked for inference at the first forward, which a forward on
    zeros does first); for a plain ``nn.Linear`` its weight."""
    import torch

    if not is_4bit(layer):
        return layer.weight.detach()
    import bitsandbytes as bnb

    device = layer.weight.device
    dtype = layer.compute_dtype or (layer.bias.dtype if layer.bias is not None else torch.float32)
    with torch.no_grad():
        layer(torch.zeros(1, layer.in_features, dtype=dtype, device=device))  # its one-off set-up (packing)
        dtype = layer.compute_dtype or dtype
        rows = []
        for start in range(0, layer.in_features, chunk):
            n = min(chunk, layer.in_features - start)
            eye = torch.zeros(n, layer.in_features, dtype=dtype, device=device)
            eye[:, start:start + n] = torch.eye(n, dtype=dtype, device=device)
            rows.append(bnb.matmul_4bit(eye, layer.weight, bias=None, quant_state=layer.weight.quant_state))
    return torch.cat(rows).T.contiguous()


def dequantized_bytes(model: Any) -> int:
    """Bytes of the plain copy :func:`merge_dequantized` makes of ``model``: its 4-bit linears in their
    compute dtype, the rest as stored, no adapter."""
    import torch

    total = 0
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if "lora_" not in name and tensor.dtype != torch.uint8:
            total += tensor.numel() * tensor.element_size()
    for module in model.modules():
        if is_4bit(module):
            itemsize = torch.empty((), dtype=module.compute_dtype or torch.float32).element_size()
            total += module.in_features * module.out_features * itemsize
    return total


def merge_dequantized(model: Any, adapter: str) -> Any:
    """A plain copy of ``model`` (a ``PeftModel`` over a 4-bit base) with ``adapter`` merged in: each
    LoRA layer becomes an ``nn.Linear`` holding the weight its base computes with
    (:func:`dequantized_linear`: the NF4 values the adapter was trained on) plus the adapter's delta,
    each other 4-bit linear its dequantized weight; the other adapters are left out, and the 4-bit
    weights and LoRA matrices are never copied. PEFT's own merge cannot do this: it quantizes the merged
    weight again, rounding most of the delta away. Out: the copy's transformers model, in eval mode.
    Raises ValueError for a LoRA layer it cannot merge (not over a linear layer, DoRA, a LoRA bias)."""
    import torch
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    memo: dict[int, Any] = {}
    wrapped: set[int] = set()  # the base layers inside LoRA layers: replaced with them, never copied
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            wrapped.add(id(base))
            if not isinstance(base, torch.nn.Linear) and not is_4bit(base):
                raise ValueError(f"{name}: LoRA over {type(base).__name__}, not a linear layer")
            if module.use_dora.get(adapter) or getattr(module, "lora_bias", {}).get(adapter):
                raise ValueError(f"{name}: DoRA or a LoRA bias is not merged here")
            weight = dequantized_linear(base)
            if adapter in module.lora_A:
                weight = weight + module.get_delta_weight(adapter).to(weight.dtype)
            memo[id(module)] = _linear(weight, base.bias)
        elif isinstance(module, ModulesToSaveWrapper):
            saved = module.modules_to_save
            kept = saved[adapter] if adapter in saved else module.original_module
            memo[id(module)] = copy.deepcopy(kept, memo)
    for module in model.modules():
        if is_4bit(module) and id(module) not in wrapped:
            memo[id(module)] = _linear(dequantized_linear(module), module.bias)
    plain = copy.deepcopy(model.get_base_model(), memo)
    if isinstance(plain.__dict__.get("is_loaded_in_4bit"), bool):
        plain.is_loaded_in_4bit = False
    plain.hf_quantizer = None  # generate() asks it whether the model may be compiled
    if hasattr(plain.config, "quantization_config"):
        del plain.config.quantization_config
    plain.policyops_quantize = "none"
    return plain.eval()


def _linear(weight: Any, bias: Any) -> Any:
    import torch

    out_features, in_features = weight.shape
    layer = torch.nn.Linear(in_features, out_features, bias=bias is not None, device=weight.device,
                            dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias.to(weight.dtype))
    return layer
