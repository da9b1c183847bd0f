"""Shared fixtures: a micro base model and a LoRA adapter on it, built once per test session.

``tiny_base_dir``: a micro Qwen2 (hidden 32, 2 layers, vocab ~400) with our own tokenizer,
trained for a few steps as a language model by engine.build (seconds).
``tiny_ft_dir``: a LoRA adapter on it, trained for a few steps by engine.training.train
(what scripts/train_qlora_sft.py runs).
Both carry prompt_format.json (policy "titles", short instructions). Names are stable: other
tests rely on them.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from db.store import Store, open_store
from db.users import create_user
from engine.types import GuardVerdict, ModelAnswer
from policies import Case, check, expected_decision, flags, parse_case
from policies.prompt import PromptFormat
from policies.synth_text import reference_answer

TINY_FORMAT = PromptFormat(policy="titles", instructions="short", max_message_chars=60)


def tiny_cases() -> list[dict[str, Any]]:
    """A dozen valid cases spanning request types, regions and decisions (no generator needed)."""

    def case(
        i: int,
        region: str,
        rtype: str,
        reason: str,
        status: str,
        days: int | None,
        price: float,
        category: str = "electronics",
        claims: int = 0,
        final_sale: bool = False,
        opened: bool = False,
        signed: bool = False,
        tier: str = "standard",
    ) -> dict[str, Any]:
        currency = {"US": "USD", "CA": "CAD", "UK": "GBP", "EU": "EUR", "AU": "AUD"}[region]
        return {
            "case_id": f"C-{i:06d}",
            "region": region,
            "request_type": rtype,
            "reason": reason,
            "message": f"Hello, about my order {i}: please help me with this {rtype}.",
            "customer": {"id": f"U-{i}", "tier": tier, "claims_last_12m": claims},
            "order": {
                "id": f"O-{i}",
                "category": category,
                "item": "Wireless headphones",
                "price": price,
                "currency": currency,
                "final_sale": final_sale,
                "status": status,
                "days_since_delivery": days,
                "opened": opened,
                "signature_confirmed": signed,
            },
        }

    return [
        case(1, "US", "return", "defective", "delivered", 5, 129.99),
        case(2, "UK", "return", "changed_mind", "delivered", 10, 59.0, category="apparel", final_sale=True),
        case(3, "US", "return", "changed_mind", "delivered", 40, 80.0, category="home"),
        case(4, "EU", "cancellation", "changed_mind", "shipped", None, 20.0),
        case(5, "CA", "cancellation", "other", "delivered", 3, 45.5),
        case(6, "AU", "not_received", "not_received", "delivered", 2, 99.0, signed=True),
        case(7, "US", "unauthorized_charge", "unauthorized", "delivered", 1, 15.0),
        case(8, "US", "warranty", "defective", "delivered", 200, 300.0),
        case(9, "UK", "warranty", "accidental_damage", "delivered", 100, 120.0, category="home"),
        case(10, "US", "return", "defective", "delivered", 3, 900.0),
        case(11, "EU", "exchange", "wrong_item", "delivered", 8, 35.0, category="beauty"),
        case(12, "US", "return", "changed_mind", "delivered", 7, 49.0, opened=True),
    ]


def tiny_rows() -> list[dict[str, Any]]:
    """Generator-format rows {"id","instruction","input","output"} with rule-engine answers."""
    from policies import expected_decision, parse_case

    rows = []
    for data in tiny_cases():
        exp = expected_decision(parse_case(data))
        refs = list(exp.policy_refs)
        answer = {
            "decision": exp.decision,
            "reasoning": f"{refs[0]} applies.",
            "customer_response": "Thank you for contacting us.",
            "next_action": "Close the case.",
            "policy_refs": refs,
        }
        rows.append(
            {"id": data["case_id"], "instruction": "Decide the case.", "input": data, "output": answer}
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_tiny_base(out_dir: Path, seed: int = 0, **overrides: Any) -> Path:
    """A micro base model (seconds): LM-trained on the docs and the cases' rendered prompts.
    ``overrides`` replace BaseModelConfig fields (e.g. ``hidden_size``)."""
    from engine.build import CHAT_TEMPLATE, BaseModelConfig, build_base_model
    from policies import parse_case
    from policies.documents import all_sections
    from policies.prompt import build_messages

    docs = [s.render() for s in all_sections()]
    prompts = []
    for data in tiny_cases():
        msgs = build_messages(parse_case(data), TINY_FORMAT)
        prompts.append("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs))
    fields: dict[str, Any] = dict(vocab_size=400, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                  intermediate_size=64, block_size=128, batch_size=4, steps=8, lr=3e-3)
    config = BaseModelConfig(**{**fields, **overrides})
    assert CHAT_TEMPLATE  # the template the prompts above imitate
    build_base_model(
        out_dir, docs + prompts, config, seed=seed, extra_files={"prompt_format.json": TINY_FORMAT.to_dict()}
    )
    return out_dir


def train_tiny_adapter(
    base_dir: Path, out_dir: Path, data_dir: Path, steps: int = 6, **overrides: Any
) -> Any:
    """Train a LoRA adapter on ``base_dir`` with engine.training.train (a few steps); out: the trainer."""
    from engine.sft_data import RunConfig
    from engine.training import train

    train_file = write_jsonl(data_dir / "train.jsonl", tiny_rows())
    val = write_jsonl(data_dir / "validation.jsonl", tiny_rows()[:4])
    fields = dict(
        model=str(base_dir),
        dataset=[str(train_file)],
        eval_dataset=str(val),
        output_dir=str(out_dir),
        quantization="none",
        lora_r=4,
        lora_alpha=8,
        learning_rate=5e-3,
        max_steps=steps,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_length=512,
        logging_steps=1,
        eval_each_epoch=False,
        seed=0,
        num_threads=1,
    )
    fields.update(overrides)
    return train(RunConfig(**fields))


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a micro base model + tokenizer (built once per session)."""
    return build_tiny_base(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="session")
def tiny_ft_dir(tiny_base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a LoRA adapter (adapter_config.json -> tiny_base_dir) trained for a few steps."""
    root = tmp_path_factory.mktemp("tiny_ft")
    train_tiny_adapter(tiny_base_dir, root / "ft", root / "data")
    return root / "ft"


# Store fixtures: a real SQLite file per test, sample cases and model answers.
SAMPLE_CASE: dict[str, Any] = {
    "case_id": "C-000123",
    "region": "US",
    "request_type": "return",
    "reason": "changed_mind",
    "message": "Hi, the headphones are fine but I don't need them anymore <b>bold</b>",
    "customer": {"id": "U-88", "tier": "standard", "claims_last_12m": 0},
    "order": {
        "id": "O-5512",
        "category": "electronics",
        "item": "Wireless headphones",
        "price": 129.99,
        "currency": "USD",
        "final_sale": False,
        "status": "delivered",
        "days_since_delivery": 12,
        "opened": True,
        "signature_confirmed": False,
    },
}


def make_case(case_id: str = "C-000123", **order: Any) -> Case:
    data = copy.deepcopy(SAMPLE_CASE)
    data["case_id"] = case_id
    data["order"].update(order)
    return parse_case(data)


def make_answer(
    case: Case,
    variant: str,
    decision: str | None,
    version: str = "v1",
    decisions: dict[str, str | None] | None = None,
) -> ModelAnswer:
    exp = expected_decision(case)
    # The rule engine's whole answer with ``decision`` put in: consistent (engine.consistency) when the
    # decision is the expected one, and two variants' answers differ in the decision only.
    answer = None if decision is None else {**reference_answer(case).model_dump(mode="json"),
                                            "decision": decision}
    violations = tuple(check(case, decision)) if decision else ()
    fl = tuple(flags(case, decisions))
    return ModelAnswer(
        case_id=case.case_id,
        variant=variant,
        model_version=f"{variant}@{version}",
        status="ok" if answer else "invalid",
        raw_text="{...}",
        answer=answer,
        error=None if answer else "bad json",
        latency_s=0.5,
        input_tokens=100,
        output_tokens=40,
        truncated=False,
        guard=GuardVerdict(
            exp.decision,
            exp.policy_refs,
            violations,
            fl,
            auto_send=bool(answer) and not violations and not fl,
        ),
    )



def case_with_runs(
    store: Store, case_id: str = "C-1", base: str = "DENY", ft: str = "APPROVE_REFUND_WITH_FEE", **order: Any
) -> tuple[int, dict[str, Any]]:
    """Store a case (``order`` fields overridden) with a base and a fine-tuned answer; out: (row id, runs)."""
    from db.cases import add_case, runs_for_case, save_run

    case = make_case(case_id, **order)
    with store.session() as s:
        pk = add_case(s, case, "try", "ann").id or 0
        for variant, decision in (("base", base), ("finetuned", ft)):
            save_run(
                s, pk, make_answer(case, variant, decision, decisions={"base": base, "finetuned": ft}), "ann"
            )
        return pk, runs_for_case(s, pk)


# Both stores: tests under BOTH_STORES_DIRS, in BOTH_STORES_MODULES or marked ``both_stores`` that use
# ``store_kind`` (through ``db_url``, ``store`` or tests/app's ``served``) run on SQLite and on PostgreSQL;
# every other test runs on SQLite only. The PostgreSQL half needs Debian's server binaries.
STORE_KINDS = ("sqlite", "postgresql")
BOTH_STORES_DIRS = ("tests/db/", "tests/reliability/")
BOTH_STORES_MODULES = frozenset({  # a representative set of the console's tests
    "tests/app/services/test_reviews_queue_exports.py",
    "tests/app/services/test_review_throughput.py",
    "tests/app/ui/test_api.py",
})
ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_stores: run on SQLite and on PostgreSQL (store_kind)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):  # a test that names its store(s)
        if "store_kind" in str(mark.args[0]):
            return
    rel = Path(str(metafunc.definition.path)).resolve().relative_to(ROOT).as_posix()
    if (rel.startswith(BOTH_STORES_DIRS) or rel in BOTH_STORES_MODULES
            or metafunc.definition.get_closest_marker("both_stores")):
        metafunc.parametrize("store_kind", STORE_KINDS)


@pytest.fixture
def store_kind() -> str:
    """``sqlite`` unless the test is parametrized over both stores (see pytest_generate_tests)."""
    return "sqlite"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A PostgreSQL server for the session (initdb + pg_ctl on a free port, data in a temp folder,
    stopped at the end) holding ``policyops_template``, a database migrated to head. Skips when
    Debian's server binaries are missing."""
    from scripts.pg_local import INSTALL_HINT, LocalPostgres, find_bin_dir, free_port

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL half skipped: no server binaries here; {INSTALL_HINT} (.ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="policyops-pg-"))
    server = LocalPostgres(root / "data", free_port(), bin_dir, fast=True).start()
    try:
        server.admin(f"CREATE DATABASE {PG_TEMPLATE}")
        open_store(server.url(PG_TEMPLATE)).engine.dispose()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


PG_TEMPLATE = "policyops_template"
_pg_databases = itertools.count(1)


@pytest.fixture
def new_db_url(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], str]]:
    """A factory: ``new_db_url(name)`` gives a fresh, migrated store of this test's kind (an SQLite file
    ``tmp_path/name.db``, or a PostgreSQL database copied from the template, dropped after the test)."""
    made: list[str] = []
    server = request.getfixturevalue("postgres_server") if store_kind == "postgresql" else None

    def make(name: str = "policyops") -> str:
        if server is None:
            return str(tmp_path / f"{name}.db")
        database = f"t{next(_pg_databases)}_{name.replace('-', '_')}"
        server.admin(f"CREATE DATABASE {database} TEMPLATE {PG_TEMPLATE}")
        made.append(database)
        return server.url(database)

    yield make
    for database in made:
        server.admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.fixture
def db_url(new_db_url: Callable[[str], str]) -> str:
    """One fresh store URL of this test's kind (see :func:`new_db_url`)."""
    return new_db_url("policyops")


@pytest.fixture
def store(db_url: str) -> Store:
    s = open_store(db_url)
    with s.session() as session:
        create_user(session, "ann", "agent", "agent-pass-1")
        create_user(session, "rita", "reviewer", "review-pass-1")
        create_user(session, "otto", "ops", "ops-pass-12")
    return s
