"""The local backend's fast path (engine.backends.local.FastPath): the same greedy answers as the plain one.

Forced on here on the CPU (by default it is on only on a GPU): the overlapped grammar schedule with
the shared-prefix KV cache, and both with a static KV cache; batch 1 and 4, a budget the answers
close within, one that makes them close early (the processor's closing reserve) and one they hit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine import Engine, GenerationSettings
from engine.backends.local import FastPath
from engine.constrained import apply_token_bitmask
from engine.registry import resolve_model
from policies import parse_case
from tests.conftest import tiny_cases

PLAIN = FastPath(overlap_grammar=False, prefix_cache=False)
FAST = {"both": FastPath(overlap_grammar=True, prefix_cache=True),
        "static": FastPath(overlap_grammar=True, prefix_cache=True, static_cache=True),
        "static_prefix": FastPath(overlap_grammar=True, prefix_cache=True, static_cache=True,
                                  static_prefix=True)}
CASES = [parse_case(c) for c in tiny_cases()[:4]]


@pytest.fixture
def engine(random_engine: Engine) -> Iterator[Engine]:
    """The session's random-weight engine, its fast-path options restored afterwards."""
    before = random_engine.backend.fast
    yield random_engine
    random_engine.backend.fast = before


@pytest.fixture(scope="module")
def ft_engine(tiny_ft_dir: Path) -> Engine:
    return Engine.load(str(tiny_ft_dir), device="cpu")


def _answers(engine: Engine, fast: FastPath, variant: str, batch_size: int, max_new_tokens: int,
             constrained: bool = True) -> list[tuple[str, int, str]]:
    engine.backend.fast = fast
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    answers = engine.decide_many(CASES, variant=variant, batch_size=batch_size, constrained=constrained,
                                 settings=settings)
    return [(a.raw_text, a.output_tokens, a.status) for a in answers]


@pytest.mark.parametrize(("batch_size", "max_new_tokens"), [(1, 400), (4, 400), (1, 110), (4, 110), (4, 30)])
def test_fast_path_answers_are_identical(engine: Engine, batch_size: int, max_new_tokens: int) -> None:
    plain = _answers(engine, PLAIN, "base", batch_size, max_new_tokens)
    for name, fast in FAST.items():
        assert _answers(engine, fast, "base", batch_size, max_new_tokens) == plain, name
    if max_new_tokens == 400:  # the answers close, at different lengths: rows of a batch finish early
        assert {s for _, _, s in plain} == {"ok"} and len({n for _, n, _ in plain}) > 1
    if max_new_tokens == 30:
        assert {s for _, _, s in plain} == {"truncated"}


def test_unconstrained_answers_are_identical(engine: Engine) -> None:
    plain = _answers(engine, PLAIN, "base", 4, 40, constrained=False)
    assert _answers(engine, FAST["both"], "base", 4, 40, constrained=False) == plain


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("variant", ["base", "finetuned"])
def test_adapter_variants_identical_and_prefix_reused(ft_engine: Engine, variant: str,
                                                      batch_size: int) -> None:
    plain = _answers(ft_engine, PLAIN, variant, batch_size, 120)
    backend = ft_engine.backend
    hits = backend.prefix_hits
    assert _answers(ft_engine, FAST["both"], variant, batch_size, 120) == plain
    assert _answers(ft_engine, FAST["both"], variant, batch_size, 120) == plain
    assert backend.prefix_hits >= hits + len(CASES)  # the second pass reuses every system turn
    assert {key[0] for key in backend._prefixes} >= {variant}


def test_prefix_cache_is_bounded_and_cleared_on_adapter_change(ft_engine: Engine, tiny_ft_dir: Path) -> None:
    backend = ft_engine.backend
    backend.fast = FastPath(prefix_cache=True, prefix_cache_size=2)
    short = GenerationSettings(max_new_tokens=8)
    ft_engine.decide_many(CASES, variant="finetuned", batch_size=1, settings=short)
    assert 0 < len(backend._prefixes) <= 2
    backend.replace_adapter("finetuned", str(tiny_ft_dir), version="again")
    assert not backend._prefixes  # the adapter's weights may have changed: no stale keys and values
    backend.fast = PLAIN


def test_each_row_reads_its_own_system_turn_from_the_cache(engine: Engine) -> None:
    # Prompts of different lengths and system turns: each turn starts at position 0 of its row, and
    # each row's cached turn plus the rest of its prompt gives the left-padded batch's logits.
    backend = engine.backend
    prompts = [backend.prompt(c) for c in CASES]
    left = backend._encode(prompts, torch.device("cpu"))
    enc, turns = backend._encode_after_turns(prompts)
    assert len({tuple(t) for t in turns}) > 1 and len({len(t) for t in turns}) > 1  # turns differ
    width = max(map(len, turns))
    for row, mask, plain, turn in zip(enc["input_ids"], enc["attention_mask"], left["input_ids"], turns,
                                      strict=True):
        assert row[:len(turn)].tolist() == turn and bool(mask[:len(turn)].all())
        assert not mask[len(turn):width].any()  # no row's rest reaches into the longest turn's room
        kept = row[mask.bool()]
        assert torch.equal(kept, plain[-len(kept):])  # the same ids, in the same order, as left-padded
    with torch.inference_mode():
        cache = backend._prefix_cache(backend.model, turns, "base")
        assert cache.get_seq_length() == width
        logits = backend.model(input_ids=enc["input_ids"][:, width:], attention_mask=enc["attention_mask"],
                               position_ids=_positions(enc["attention_mask"])[:, width:], cache=cache).logits
        expected = backend.model(**left, position_ids=_positions(left["attention_mask"])).logits
        assert torch.allclose(logits[:, -1], expected[:, -1], atol=1e-4)
    # a prompt with no turn followed by more text: the left-padded batch, no turns
    mixed = [prompts[0], "plain text, no chat turns"]
    enc, turns = backend._encode_after_turns(mixed)
    assert turns == []
    assert torch.equal(enc["input_ids"], backend._encode(mixed, torch.device("cpu"))["input_ids"])
    # a chat whose first turn is the user's (a served request without a system message): a one-off
    # turn is never cached, so it cannot push the shared system turns out of the cache
    user_first = backend.render_messages([{"role": "user", "content": "Where is my parcel?"}])
    assert not user_first.startswith("<|im_start|>system") and "<|im_end|>" in user_first
    enc, turns = backend._encode_after_turns([prompts[0], user_first])
    assert turns == []
    assert torch.equal(enc["input_ids"], backend._encode([prompts[0], user_first],
                                                         torch.device("cpu"))["input_ids"])


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Positions numbered from the attention mask, as ``generate`` numbers them."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def test_batches_reuse_each_rows_turn(engine: Engine) -> None:
    backend = engine.backend
    backend._prefixes.clear()
    _answers(engine, FAST["both"], "base", 4, 8)
    assert len(backend._prefixes) == len({backend.prompt(c).split("<|im_end|>")[0] for c in CASES})
    hits = backend.prefix_hits
    _answers(engine, FAST["both"], "base", 4, 8)
    assert backend.prefix_hits == hits + len(CASES)  # one batch of 4 padded rows, every turn from the cache


def test_overlapped_processor_needs_its_hook_only_for_speed(engine: Engine) -> None:
    # Without the hook the overlapped processor computes each mask in its own call, as the plain one.
    grammar = engine.backend.grammar
    width = engine.backend._logits_width()
    plain, overlapped = grammar.processor(2), grammar.processor(2, overlap=True)
    hook = overlapped.next_mask_hook()
    ids = torch.zeros(2, 3, dtype=torch.long)
    a, b = plain(ids, torch.zeros(2, width)), overlapped(ids, torch.zeros(2, width))
    assert torch.equal(a, b)
    token = int((~torch.isinf(a[0])).nonzero()[0])
    ids = torch.cat([ids, torch.full((2, 1), token)], dim=1)
    assert not hook(ids, None).any()  # never stops a row
    a, b = plain(ids, torch.zeros(2, width)), overlapped(ids, torch.zeros(2, width))
    assert torch.equal(a, b) and overlapped._pending is None
    overlapped.finish()
    assert overlapped.errors == [None, None]


def test_eager_bitmask_matches_unpacking_bit_by_bit() -> None:
    torch.manual_seed(0)
    mask = torch.randint(-(2**31), 2**31 - 1, (3, 4), dtype=torch.int32)
    scores = torch.randn(3, 140)  # wider than the mask's 128 bits: the tail is never allowed
    expected = scores.clone()
    for row in range(3):
        for token in range(140):
            word, bit = divmod(token, 32)
            if token >= 128 or not (int(mask[row, word]) >> bit) & 1:
                expected[row, token] = float("-inf")
    apply_token_bitmask(scores, mask)
    assert torch.equal(scores, expected)


def test_merged_copy_serves_the_adapter_and_base_stays_shared(ft_engine: Engine) -> None:
    backend = ft_engine.backend
    prompt = [backend.prompt(CASES[0])]
    backend.fast = PLAIN
    unmerged, base = backend.logits(prompt, "finetuned"), backend.logits(prompt, "base")
    plain = _answers(ft_engine, PLAIN, "base", 1, 60)
    backend.fast = FastPath(overlap_grammar=False, prefix_cache=False, merged="finetuned")
    answers = ft_engine.decide_many(CASES, variant="finetuned", batch_size=1,
                                    settings=GenerationSettings(max_new_tokens=120))
    merged = backend._merged[2]
    assert merged is not None and backend.figures()["merged_copy_bytes"] > 0
    with torch.inference_mode():  # the merged weights answer as base + adapter did, up to rounding
        enc = backend._encode(prompt)
        assert torch.allclose(merged(**enc).logits[:, -1, :].float(), unmerged, atol=1e-4)
    assert all(a.status in ("ok", "truncated") for a in answers)
    assert _answers(ft_engine, backend.fast, "base", 1, 60) == plain  # base: the shared, unmerged model
    assert torch.equal(backend.logits(prompt, "base"), base)
    backend.replace_adapter("finetuned", ft_engine.adapter_paths["finetuned"], "v3")
    assert backend._merged is None  # a new adapter version gets a new merged copy on first use
    backend.fast = PLAIN


def test_a_4bit_base_gets_a_plain_merged_copy_that_answers_as_nf4_plus_adapter(tmp_path: Path) -> None:
    """Over an NF4 base (bitsandbytes on the CPU), the merged copy is plain, in the compute dtype: the
    weights the 4-bit kernels use (read back through them, after they have answered once) plus the
    adapter's delta. It answers as NF4 + adapter (PEFT's own merge would quantize the delta away) and the
    4-bit base keeps serving ``base``."""
    from engine.backends.local import _linear4bit_count
    from engine.merge_4bit import dequantized_bytes, is_4bit
    from tests.conftest import build_tiny_base, train_tiny_adapter

    # bitsandbytes' CPU kernels want widths of 64 and up (the session's micro model is narrower)
    base_dir = build_tiny_base(tmp_path / "base", hidden_size=64, intermediate_size=128)
    train_tiny_adapter(base_dir, tmp_path / "ft", tmp_path / "data", steps=2, quantization="none")
    engine = Engine.load(str(tmp_path / "ft"), device="cpu", quantize="nf4")
    backend = engine.backend
    with torch.no_grad():  # an adapter that moves the answers (two steps barely leave zero)
        generator = torch.Generator().manual_seed(0)
        for name, param in backend.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    modules = list(backend.model.get_base_model().modules())
    assert 0 < _linear4bit_count(backend.model) == sum(map(is_4bit, modules))  # not PEFT's wrappers too
    linears = sum(isinstance(m, torch.nn.Linear) or is_4bit(m) for m in modules)
    assert _linear4bit_count(backend.model) < linears  # the head stays unquantised
    assert backend.figures()["linear4bit_modules"] == _linear4bit_count(backend.model)
    prompt = [backend.prompt(CASES[0])]
    backend.fast = PLAIN
    unmerged, base = backend.logits(prompt, "finetuned"), backend.logits(prompt, "base")
    plain = _answers(engine, PLAIN, "finetuned", 1, 120)
    backend.fast = FastPath(overlap_grammar=False, prefix_cache=False, merged="finetuned")
    assert _answers(engine, backend.fast, "finetuned", 1, 120) == plain
    merged = backend._merged[2]
    assert merged is not None and _linear4bit_count(merged) == 0
    assert merged.hf_quantizer is None and backend.model.get_base_model().hf_quantizer is not None
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    # the free-memory check's estimate is the copy's size (rotary buffers aside)
    assert backend.figures()["merged_copy_bytes"] == pytest.approx(dequantized_bytes(backend.model), rel=1e-3)
    with torch.inference_mode():
        got = merged(**backend._encode(prompt)).logits[:, -1, :].float()
    assert torch.allclose(got, unmerged, atol=1e-2) and not torch.allclose(got, base, atol=1e-1)
    assert torch.equal(backend.logits(prompt, "base"), base)  # base: the shared 4-bit model, untouched
    assert _linear4bit_count(backend.model) > 0


def test_registry_fast_options_reach_the_backend(tiny_ft_dir: Path) -> None:
    spec = replace(resolve_model(str(tiny_ft_dir)), fast=FastPath(static_cache=True, merged="finetuned"))
    loaded = Engine.load(spec, device="cpu")
    assert loaded.backend.fast == FastPath(static_cache=True, merged="finetuned")
    assert loaded.figures()["fast"]["overlap_grammar"] is False  # None decided for the CPU


def test_a_static_cache_pads_batches_to_a_power_of_two_and_answers_alike(engine: Engine) -> None:
    """Under a static cache each batch size is one compiled graph: 3 prompts run as a batch of 4 (the
    last repeated) and 3 answers come back, the same as without padding and as the plain path."""
    from engine.backends.local import batch_bucket

    assert [batch_bucket(n) for n in (1, 2, 3, 5, 33, 64)] == [1, 2, 4, 8, 64, 64]
    sizes: list[int] = []
    model = engine.backend.model
    original = model.generate

    def recording(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.generate = recording
    try:
        plain = _answers(engine, PLAIN, "base", 3, 110)
        padded = _answers(engine, FAST["static"], "base", 3, 110)
        unpadded = _answers(engine, replace(FAST["static"], bucket_batches=False), "base", 3, 110)
    finally:
        del model.generate
    assert padded == plain == unpadded and len(padded) == 4  # 4 cases: a batch of 3, then of 1
    assert sizes == [3, 1, 4, 1, 3, 1]


def test_auto_reuses_turns_on_the_cpu_only_for_the_policy_in_prose(engine: Engine) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = FastPath()
    assert auto.resolve(cpu).prefix_cache is False
    assert auto.resolve(cpu, long_prefix=True).prefix_cache is True
    assert auto.resolve(cuda).prefix_cache is True and auto.resolve(cuda).overlap_grammar is True
    assert auto.resolve(cpu, long_prefix=True).overlap_grammar is False  # only the prefix pays on the CPU
    assert FastPath(prefix_cache=False).resolve(cpu, long_prefix=True).prefix_cache is False  # asked: kept
    backend = engine.backend
    before = backend.prompt_format
    backend.fast = auto
    try:
        assert backend.figures()["fast"]["prefix_cache"] is (before.policy == "full")
        backend.prompt_format = replace(before, policy="full")
        assert backend.figures()["fast"]["prefix_cache"] is True
        backend.prompt_format = replace(before, policy="titles")
        assert backend.figures()["fast"]["prefix_cache"] is False
    finally:
        backend.prompt_format = before


def test_static_prefix_continues_one_kept_static_cache_and_falls_back_when_too_short(engine: Engine) -> None:
    """With static_prefix the rows' turns are copied into one static cache the backend keeps (the same
    object on the next call of that batch size); a call longer than the cache runs without the turns
    in it, on generate's own longer cache, and both answer as the plain path."""
    from transformers import StaticCache

    backend = engine.backend
    plain = _answers(engine, PLAIN, "base", 4, 110)
    assert _answers(engine, FAST["static_prefix"], "base", 4, 110) == plain
    kept = backend._static[1]
    assert isinstance(kept, StaticCache)
    hits = backend.prefix_hits
    assert _answers(engine, FAST["static_prefix"], "base", 4, 110) == plain
    assert backend._static[1] is kept and backend.prefix_hits == hits + len(CASES)

    backend._static = None
    short = replace(FAST["static_prefix"], static_cache_len=128)  # shorter than any prompt here
    assert _answers(engine, short, "base", 4, 110) == plain
    assert backend._static is None
