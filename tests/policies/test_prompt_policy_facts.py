"""The tiny format's ``policy_facts`` option (policies/prompt.py): the policy's numbers beside the
case's, never a rule's outcome; off, the prompt is unchanged; training and the registry carry it."""

from __future__ import annotations

import json
from pathlib import Path

from engine.registry import PROMPT_KEYS, ModelSpec
from engine.sft_data import RunConfig
from policies import parse_case
from policies.prompt import PromptFormat, build_messages, case_fields

REPO = Path(__file__).resolve().parents[2]
TINY = PromptFormat(policy="titles", instructions="short", max_message_chars=0, case="fields")
FACTS = PromptFormat(policy="titles", instructions="short", max_message_chars=0, case="fields",
                     policy_facts=True)


def _case(**order):
    row = json.loads((REPO / "data/generated/stress.jsonl").open().readline())["input"]
    row["region"], row["customer"]["tier"] = "UK", "vip"
    row["order"].update({"category": "electronics", "status": "delivered", "days_since_delivery": 20,
                         **order})
    return parse_case(row)


def test_the_numbers_sit_after_the_facts_they_bound() -> None:
    lines = case_fields(_case(price=412.5), FACTS).splitlines()
    at = {line.split("=")[0]: i for i, line in enumerate(lines)}
    assert lines[at["price"] + 1] == "auto_limit=400"  # the UK's AUTO_LIMIT
    assert lines[at["days_since_delivery"] + 1] == "return_window_days=45"  # electronics 15 + vip 30
    assert lines[at["days_since_delivery"] + 2] == "warranty_days=730"  # the UK's warranty
    # everything else as in the plain tiny format, in the same order
    plain = case_fields(_case(price=412.5), TINY).splitlines()
    assert [line for line in lines if line.split("=")[0] not in
            {"auto_limit", "return_window_days", "warranty_days"}] == plain


def test_facts_only_never_an_outcome() -> None:
    over, under = case_fields(_case(price=412.5), FACTS), case_fields(_case(price=12.5), FACTS)
    # the two prompts differ in the price line only: nothing says which side of the limit it is on
    changed = [a for a, b in zip(over.splitlines(), under.splitlines(), strict=True) if a != b]
    assert changed == ["price=412.5"]
    added = ("auto_limit", "return_window", "warranty")
    extra = [line for line in over.splitlines() if line.startswith(added)]
    assert len(extra) == 3 and all(line.split("=")[1].isdigit() for line in extra)  # numbers, no verdicts


def test_off_by_default_and_saved_with_the_format() -> None:
    assert PromptFormat().policy_facts is False
    assert "auto_limit" not in build_messages(_case(), TINY)[1]["content"]
    assert PromptFormat.from_dict(FACTS.to_dict()) == FACTS
    assert PromptFormat.from_dict({k: v for k, v in TINY.to_dict().items() if k != "policy_facts"}) == TINY


def test_a_training_run_can_switch_it_on_and_the_registry_guards_it() -> None:
    spec = ModelSpec(name="tiny", base="data/models/default-base", prompt_format=TINY)
    assert RunConfig(prompt_policy_facts=True).prompt_format(spec) == FACTS
    assert RunConfig().prompt_format(spec) == TINY
    assert "prompt_policy_facts" in PROMPT_KEYS  # a retrain recipe may not change it behind the spec
    assert all(hasattr(RunConfig(), key) for key in PROMPT_KEYS)  # every format field has its option


def test_a_field_is_written_as_its_json_without_the_quotes_of_a_string() -> None:
    """The key=value lines write each field as ``json.dumps(value, ensure_ascii=False).strip('"')``
    (every trained model read them so); the encoder is skipped for the usual values, never changing a
    character."""
    from policies.prompt import _field_text

    values = ["electronics", "Wireless headphones", "", '"', 'a "quoted" item', "back\\slash", "tab\there",
              "new\nline", "\x00\x1f", "\x7f", "é ✓ 名", "\u2028", 0, 1, -3, 10**20, True, False, None,
              129.99, 12.5, 1e-7, 1e21, 0.1 + 0.2, 3.0]
    for value in values:
        assert _field_text(value) == json.dumps(value, ensure_ascii=False).strip('"'), repr(value)
    for line in (REPO / "data/generated/stress.jsonl").open():
        case = parse_case(json.loads(line)["input"])
        data = case.model_dump(mode="json")
        for value in (*data["order"].values(), *data["customer"].values(), data["region"], data["reason"]):
            assert _field_text(value) == json.dumps(value, ensure_ascii=False).strip('"'), repr(value)
