"""The copy probe (engine.probes, scripts/copy_probe.py): teacher-forced accuracy on the item's tokens
inside the customer response, against the response's other tokens. Checked with two fake models
whose answers are known: an oracle (every next token right) and one that never predicts a real token."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine.loading import load_tokenizer
from engine.probes import _target, copy_probe, message_copy_probe, read_answered_rows
from engine.sft_data import DatasetError
from policies import parse_answer
from policies.prompt import PromptFormat
from policies.synth_text import reference_answer
from scripts.copy_probe import main as probe_main
from tests.conftest import make_case, tiny_rows, write_jsonl


class Oracle(torch.nn.Module):
    """Logits that put the next token of the input first (``right``) or token 0 everywhere (not)."""

    def __init__(self, vocab: int, right: bool) -> None:
        super().__init__()
        self.vocab, self.right = vocab, right
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> SimpleNamespace:
        logits = torch.zeros(1, ids.shape[1], self.vocab)
        if self.right:
            logits[0, torch.arange(ids.shape[1] - 1), ids[0, 1:]] = 1.0
        else:
            logits[..., 0] = 1.0  # token 0 (a special token): never a token of the text
        return SimpleNamespace(logits=logits)


@pytest.fixture
def answered(tmp_path: Path) -> Path:
    rows = tiny_rows()[:6]
    for k, row in enumerate(rows):  # every response but the last names its item
        item = row["input"]["order"]["item"]
        row["output"]["customer_response"] = (
            f"Thank you for writing about your {item.lower()}. We are on it." if k < 5 else "Thank you."
        )
    return write_jsonl(tmp_path / "answered.jsonl", rows)


def test_an_oracle_copies_everything_and_a_blind_model_nothing(tiny_base_dir: Path, answered: Path) -> None:
    tokenizer = load_tokenizer(tiny_base_dir)
    rows = read_answered_rows(answered)
    vocab = len(tokenizer)
    assert tokenizer.convert_ids_to_tokens(0) in tokenizer.all_special_tokens
    right = copy_probe(Oracle(vocab, True), tokenizer, PromptFormat(), rows)
    assert right.rows == 5  # the response that does not name its item is not counted
    assert right.item_tokens >= 5 and right.other_tokens > right.item_tokens
    assert right.item_accuracy == right.other_accuracy == 1.0 and right.item_first_correct == 5
    blind = copy_probe(Oracle(vocab, False), tokenizer, PromptFormat(), rows)
    assert (blind.rows, blind.item_tokens) == (right.rows, right.item_tokens)
    assert blind.other_tokens == right.other_tokens
    assert blind.item_correct == blind.other_correct == blind.item_first_correct == 0
    assert blind.to_dict()["item_first_accuracy"] == 0.0 and right.to_dict()["item_first_accuracy"] == 1.0


def test_the_items_tokens_are_the_item_from_its_first_word_to_its_last(tiny_base_dir: Path,
                                                                     answered: Path) -> None:
    """A token carries the space before it (" w" in "your wireless"): it is the item's first token. The
    "." after the item is not the item's."""
    tokenizer = load_tokenizer(tiny_base_dir)
    case, answer = read_answered_rows(answered)[0]
    for response in (f"Your {case.order.item.lower()} is on its way.", answer.customer_response):
        _check_item_tokens(tokenizer, case, answer.model_copy(update={"customer_response": response}))


def _check_item_tokens(tokenizer, case, answer) -> None:
    response = answer.customer_response
    at = response.lower().find(case.order.item.lower())
    enc = tokenizer(response, return_offsets_mapping=True, add_special_tokens=False)
    pieces = [response[s:e] for s, e in enc["offset_mapping"]
              if e > at and s < at + len(case.order.item) and response[s:e].strip()]
    assert "".join(pieces).strip() == case.order.item.lower()  # the tokens overlapping it spell it
    assert pieces[0][0].isspace() or at == 0 or response[at - 1].isspace()
    probe = copy_probe(Oracle(len(tokenizer), True), tokenizer, PromptFormat(), [(case, answer)])
    assert probe.item_tokens == len(pieces) and probe.item_first_correct == 1


@pytest.mark.parametrize(("target", "reasoning", "expected"), [
    ("days", "RET-3: change of mind 12 days after delivery.", "12"),
    ("days", "RET-3: within the 15-day window.", None),  # not the case's own count
    ("region", "CAN-2: cancellation of a shipped order in US, where", "US"),
    ("region", "LIM-1: above the US AUTO_LIMIT of 500.00 USD", "US"),
    ("region", "no statutory right outside UK/EU (US)", None),  # a scope, not a statement
    ("region", "the right applies in US/CA", None),
])
def test_each_target_is_the_span_the_reference_states(target: str, reasoning: str, expected: str | None):
    case = make_case("C-PROBE", days_since_delivery=12)  # US
    answer = parse_answer({**reference_answer(case).model_dump(mode="json"), "reasoning": reasoning})
    found = _target(case, answer, target)
    assert (None if found is None else found[0][slice(*found[1])]) == expected


def test_a_base_is_probed_on_the_item_in_the_message_after_its_prompt(
    tiny_base_dir: Path, answered: Path
) -> None:
    tokenizer = load_tokenizer(tiny_base_dir)
    rows = read_answered_rows(answered)
    cases = [case.model_copy(update={"message": f"My {case.order.item.lower()} broke." if k < 4 else "Hi."})
             for k, (case, _) in enumerate(rows)]
    right = message_copy_probe(Oracle(len(tokenizer), True), tokenizer, PromptFormat(), cases)
    assert right.rows == 4 and right.item_accuracy == right.other_accuracy == 1.0
    assert right.other_tokens >= 4  # "My", "broke", "." of each message
    blind = message_copy_probe(Oracle(len(tokenizer), False), tokenizer, PromptFormat(), cases)
    assert blind.item_tokens == right.item_tokens and blind.item_correct == blind.other_correct == 0


def test_bad_rows_and_models_are_refused_by_name(
    tmp_path: Path, answered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(tiny_rows()[0]) + "\n" + json.dumps({"input": {}}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: not a row with input and a whole output"):
        read_answered_rows(bad)
    assert probe_main(["--dataset", str(bad)]) == 1
    assert "error: " in (err := capsys.readouterr().err) and "bad.jsonl:2" in err
    assert probe_main(["--model", "no-such-model", "--dataset", str(answered)]) == 1
    assert "error: unknown model 'no-such-model'" in capsys.readouterr().err
