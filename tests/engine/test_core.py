"""Engine: one base, adapters on top, batched = one-by-one, compare with the guard, thread safety."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from engine import Engine, GenerationSettings
from engine.backends.base import UnknownVariant
from policies import Case, parse_case
from tests.conftest import tiny_cases

SHORT = GenerationSettings(max_new_tokens=40)  # enough to diverge, fast on 2 cores


@pytest.fixture(scope="module")
def engine(tiny_ft_dir: Path) -> Engine:
    return Engine.load(str(tiny_ft_dir), settings=SHORT)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return [parse_case(c) for c in tiny_cases()]


def test_variants_are_base_then_adapters(engine: Engine) -> None:
    assert engine.variants == ["base", "finetuned"]
    assert engine.default_variant == "finetuned"
    assert engine.model_version("finetuned").startswith(engine.model_version("base") + "+")


def test_adapter_changes_logits_and_disabling_restores_base(engine: Engine, cases: list[Case],
                                                            tiny_base_dir: Path) -> None:
    from engine.loading import load_base_model

    prompts = [engine.backend.prompt(c) for c in cases[:2]]
    base = engine.backend.logits(prompts, "base")
    ft = engine.backend.logits(prompts, "finetuned")
    assert not torch.allclose(base, ft, atol=1e-4)
    # "base" with the adapter disabled is exactly the plain base model, loaded once, no copy.
    plain = load_base_model(str(tiny_base_dir), quantize="none")
    enc = engine.backend._encode(prompts)
    with torch.inference_mode():
        ref = plain(**enc).logits[:, -1, :].float()
    torch.testing.assert_close(base, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("constrained", [True, False])
def test_batched_equals_one_by_one_under_greedy(random_engine: Engine, cases: list[Case],
                                                constrained: bool) -> None:
    # Random weights write varied text, so equal outputs mean equal decoding, not a stuck model.
    batched = random_engine.decide_many(cases[:6], variant="base", batch_size=6, constrained=constrained,
                                        settings=SHORT)
    single = [random_engine.decide(c, variant="base", constrained=constrained, settings=SHORT)
              for c in cases[:6]]
    assert [a.raw_text for a in batched] == [a.raw_text for a in single]
    assert [a.output_tokens for a in batched] == [a.output_tokens for a in single]
    assert [a.input_tokens for a in batched] == [a.input_tokens for a in single]
    assert len({a.input_tokens for a in batched}) > 1  # the batch really was padded
    assert len({a.raw_text for a in batched}) > 1


def test_left_padding_leaves_logits_unchanged(random_engine: Engine, cases: list[Case]) -> None:
    # Attention mask + position ids from the mask: a padded row sees what it sees alone,
    # up to float32 summation order.
    prompts = [random_engine.backend.prompt(c) for c in cases[:6]]
    batched = random_engine.backend.logits(prompts, "base")
    alone = torch.cat([random_engine.backend.logits([p], "base") for p in prompts])
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-4)


def test_decide_many_figures_and_progress(engine: Engine, cases: list[Case]) -> None:
    seen: list[tuple[int, int]] = []
    answers = engine.decide_many(cases[:5], variant="base", batch_size=2,
                                 progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    for case, a in zip(cases[:5], answers, strict=True):
        assert a.case_id == case.case_id and a.variant == "base"
        assert a.status in ("ok", "invalid", "truncated")
        assert a.latency_s > 0 and a.input_tokens > 0 and 0 < a.output_tokens <= SHORT.max_new_tokens
        assert a.truncated == (a.status == "truncated" or a.output_tokens == SHORT.max_new_tokens)
        assert a.guard is not None and a.guard.expected_decision
        if a.status != "ok":
            assert not a.guard.auto_send and a.error


def test_batches_are_cut_by_prompt_length_and_answers_keep_input_order(random_engine: Engine,
                                                                        cases: list[Case]) -> None:
    """The batches hold the longest prompts first (less padding per batch), the answers come back in
    the input's order, and each answer is the one its case gets alone."""
    picked = cases[:6]
    prompts = {random_engine.backend.prompt(c): c.case_id for c in picked}
    assert len({random_engine.backend.prompt_size(p) for p in prompts}) > 2  # or the order proves nothing
    sent: list[list[str]] = []
    original = random_engine.backend.generate

    def recording(batch, *args, **kwargs):
        sent.append([prompts[p] for p in batch])
        return original(batch, *args, **kwargs)

    random_engine.backend.generate = recording
    try:
        grouped = random_engine.decide_many(picked, variant="base", batch_size=4, settings=SHORT)
        plain = random_engine.decide_many(picked, variant="base", batch_size=4, settings=SHORT,
                                          group_by_length=False)
    finally:
        del random_engine.backend.generate
    size = random_engine.backend.prompt_size
    by_length = [c.case_id for c in sorted(picked, key=lambda c: -size(random_engine.backend.prompt(c)))]
    assert sent[:2] == [by_length[:4], by_length[4:]]
    assert sent[2:] == [[c.case_id for c in picked[:4]], [c.case_id for c in picked[4:]]]
    assert [a.case_id for a in grouped] == [c.case_id for c in picked]
    alone = [random_engine.decide(c, variant="base", settings=SHORT).raw_text for c in picked]
    assert [a.raw_text for a in grouped] == alone == [a.raw_text for a in plain]


def test_compare_flags_disagreement_across_variants(engine: Engine, cases: list[Case]) -> None:
    rows = engine.compare_many(cases[:3], batch_size=3)
    for row in rows:
        assert set(row) == {"base", "finetuned"}
        decisions = {v: a.decision for v, a in row.items()}
        expected = row["base"].guard.expected_decision
        disagree = len(set(decisions.values())) > 1 or set(decisions.values()) != {expected}
        for a in row.values():
            assert ("MODELS_DISAGREE" in a.guard.flags) == disagree
    single = engine.compare(cases[0])
    assert single["finetuned"].raw_text == rows[0]["finetuned"].raw_text


def test_add_adapter_by_name_and_unknown_variant(tiny_ft_dir: Path, cases: list[Case]) -> None:
    eng = Engine.load(str(tiny_ft_dir), settings=GenerationSettings(max_new_tokens=8))
    eng.add_adapter("ft-v2", str(tiny_ft_dir), version="v2")
    assert eng.variants == ["base", "finetuned", "ft-v2"]
    same = eng.decide_many(cases[:2], variant="ft-v2")
    assert [a.raw_text for a in same] == [a.raw_text for a in eng.decide_many(cases[:2], variant="finetuned")]
    assert same[0].model_version.endswith("+v2")
    with pytest.raises(UnknownVariant):
        eng.decide(cases[0], variant="nope")
    with pytest.raises(ValueError):
        eng.add_adapter("base", str(tiny_ft_dir))


def test_threads_share_the_engine_safely(engine: Engine, cases: list[Case]) -> None:
    serial = {v: engine.decide(cases[0], variant=v).raw_text for v in engine.variants}
    results: dict[str, str] = {}

    def work(variant: str) -> None:
        results[variant] = engine.decide(cases[0], variant=variant).raw_text

    threads = [threading.Thread(target=work, args=(v,)) for v in engine.variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == serial


def test_sampling_with_seed_is_repeatable(engine: Engine, cases: list[Case]) -> None:
    s = GenerationSettings(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    first = engine.decide(cases[0], settings=s).raw_text
    assert engine.decide(cases[0], settings=s).raw_text == first
