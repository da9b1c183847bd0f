"""Constrained decoding: every answer parses and validates, even from a model with random weights."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from engine import Engine, GenerationSettings
from engine.constrained import AnswerGrammar, stop_token_ids
from policies import answer_json_schema, parse_answer, parse_case
from tests.conftest import tiny_cases
from tests.engine.conftest import EXTRA_VOCAB


def test_grammar_stops_on_im_end_and_eos(random_engine: Engine) -> None:
    tok = random_engine.backend.tokenizer
    ids = stop_token_ids(tok)
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids and tok.eos_token_id in ids


@pytest.mark.parametrize("sample", [False, True])
def test_constrained_answers_always_validate(random_engine: Engine, sample: bool) -> None:
    cases = [parse_case(c) for c in tiny_cases()[:3]]
    # The schema bounds every string, so a budget this large always closes the object.
    settings = GenerationSettings(max_new_tokens=1600, temperature=1.0 if sample else 0.0, seed=3)
    answers = random_engine.decide_many(cases, variant="base", batch_size=3, settings=settings)
    schema = answer_json_schema()
    for a in answers:
        assert a.status == "ok", (a.error, a.raw_text[-200:])
        data = json.loads(a.raw_text)
        jsonschema.validate(data, schema)
        parse_answer(data)
        # compact separators, fields in schema order: exactly what training's answer_json writes
        assert a.raw_text == json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        assert list(data) == list(schema["properties"])
        assert not a.truncated
    assert len({a.raw_text for a in answers}) > 1  # random weights really do write different answers


def test_extra_logit_columns_are_never_allowed(random_engine: Engine) -> None:
    backend = random_engine.backend
    grammar: AnswerGrammar = backend.grammar
    processor = grammar.processor(batch_size=2)
    width = backend._logits_width()
    assert width == len(backend.tokenizer) + EXTRA_VOCAB or width > len(backend.tokenizer)
    scores = processor(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, width))
    assert torch.isinf(scores[:, len(backend.tokenizer):]).all()
    allowed = (~torch.isinf(scores[0])).nonzero().flatten().tolist()
    assert allowed and all(backend.tokenizer.decode([t]).startswith("{") for t in allowed)


def test_truncated_when_budget_too_small(random_engine: Engine) -> None:
    case = parse_case(tiny_cases()[0])
    a = random_engine.decide(case, variant="base", settings=GenerationSettings(max_new_tokens=5))
    assert a.status == "truncated" and a.truncated and a.output_tokens == 5
    assert a.guard is not None and not a.guard.auto_send


def test_tight_budget_still_closes_the_answer(random_engine: Engine) -> None:
    # 120 tokens is far below the schema's longest answer (~1,300 characters): the decoder's
    # closing reserve must end every string early enough to finish the object.
    cases = [parse_case(c) for c in tiny_cases()[:3]]
    for sample in (False, True):
        settings = GenerationSettings(max_new_tokens=120, temperature=1.0 if sample else 0.0, seed=5)
        for a in random_engine.decide_many(cases, variant="base", settings=settings):
            assert a.status == "ok", (a.error, a.raw_text)
            assert a.output_tokens <= 120


def test_engine_and_grammar_see_the_same_token_ids(random_engine: Engine) -> None:
    # FINDINGS' tokenizer trap: the ids the model is fed and the ids the grammar reasons about
    # must be the same for the same text (prompt and a training-format answer).
    from policies import Answer
    from policies.prompt import answer_json

    backend = random_engine.backend
    case = parse_case(tiny_cases()[0])
    answer = Answer(decision="DENY", reasoning="RET-10 applies.", customer_response="Sorry!",
                    next_action="Close.", policy_refs=["RET-10"])
    text = backend.prompt(case) + answer_json(answer)
    engine_ids = backend._encode([text])["input_ids"][0].tolist()
    grammar_ids = backend.grammar.ll_tokenizer.tokenize_str(text, parse_special=True)
    assert engine_ids == grammar_ids
