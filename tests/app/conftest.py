"""Fixtures for the console tests: the real Engine on the tiny model, a tmp SQLite store with one
user per role, and the app launched in-process on a free port behind the login."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.services.exports import eval_fingerprints_of
from app.ui.interface import build_app, serve_options
from db.cases import add_case, load_eval_set, read_case_rows
from db.store import Store, open_store
from db.users import create_user
from policies import parse_case
from tests.conftest import tiny_cases, write_jsonl

PASSWORDS = {"ann": "agent-pass-1", "rita": "review-pass-1", "otto": "ops-pass-12"}
ROLES = {"ann": "agent", "rita": "reviewer", "otto": "ops"}


@dataclass
class Served:
    url: str
    store: Store
    tmp: Path
    eval_case_ids: list[str]
    batch_case_ids: list[str]

    def auth(self, user: str) -> tuple[str, str]:
        return user, PASSWORDS[user]


@pytest.fixture(scope="session")
def tiny_engine(tiny_base_dir: Path, tiny_ft_dir: Path):
    from engine import Engine

    return Engine.load(str(tiny_base_dir), adapters={"finetuned": str(tiny_ft_dir)}, device="cpu")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path, tiny_engine, db_url: str) -> Iterator[Served]:
    store = open_store(db_url)  # SQLite, or PostgreSQL for the tests run on both (tests/conftest.py)
    with store.session() as s:
        for user, password in PASSWORDS.items():
            create_user(s, user, ROLES[user], password)
    cases = tiny_cases()
    eval_path = write_jsonl(tmp_path / "eval.jsonl", [{"id": c["case_id"], "input": c} for c in cases[:3]])
    with store.session() as s:
        load_eval_set(s, eval_path)
        for c in cases[3:5]:
            add_case(s, parse_case(c), "batch", "otto")
    demo = build_app(
        tiny_engine,
        store,
        export_dir=tmp_path / "exports",
        eval_fingerprints=eval_fingerprints_of(read_case_rows(eval_path)),
        batch_root=tmp_path,
    )
    demo.queue()
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
        **serve_options(store),
    )
    try:
        yield Served(
            url, store, tmp_path, [c["case_id"] for c in cases[:3]], [c["case_id"] for c in cases[3:5]]
        )
    finally:
        demo.close()
