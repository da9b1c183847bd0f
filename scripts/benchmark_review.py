"""Reviewer-throughput benchmark: "next case" to both answers visible, with and without background
answering, in a real browser on the embedded models; and the time to bulk-approve 500 cases.

uv run python scripts/benchmark_review.py --model default-ft --cases 3 --bulk 500

The console runs in-process on a temporary SQLite store holding eval-set cases; Debian chromium
(Playwright) logs in as a reviewer, presses ``j`` and waits until both answer cards show their
guard panel. Between two cases the reader "reads": with background answering until the next
case's answers are in the store, without it for ``--read-s`` seconds (the models are not asked
until ``j``). The bulk figure is :func:`app.services.bulk.bulk_approve` (what the Confirm button runs) over
``--bulk`` pending cases with fine-tuned answers. Writes benchmarks/review.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.services.answers import cached_runs
from app.services.bulk import bulk_approve
from app.services.queue import QueueFilter
from app.ui.browser import CHROMIUM, CHROMIUM_ARGS
from db.cases import add_case, read_case_rows, save_run
from db.store import open_store
from db.users import create_user
from engine.cli import bounded_float, bounded_int, existing_file
from engine.guard import guard
from engine.types import ModelAnswer
from policies import Case, expected_decision

USER, PASSWORD = "bench", "bench-pass-1"


@dataclass
class Config:
    model: str = "default-ft"
    eval_set: Path = Path("data/generated/validation.jsonl")  # the demo queue; a dev tool never reads eval
    cases: int = 3  # "next" presses timed per mode
    read_s: float = 2.0  # reading time without background answering (s)
    max_read_s: float = 300.0  # give up waiting for a background answer after this (s)
    bulk: int = 500  # cases bulk-approved
    out: Path = Path("benchmarks/review.json")


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bounded = {"cases": bounded_int(1, 1000), "read_s": bounded_float(0, 600),
               "max_read_s": bounded_float(1, 3600), "bulk": bounded_int(1, 100_000),
               "eval_set": lambda text: Path(existing_file(text))}
    for name, default in vars(Config()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=bounded.get(name, type(default)), default=default)
    return Config(**vars(p.parse_args(argv)))


def _launch(engine: Any, store: Any, prefetch: bool) -> tuple[Any, str]:
    import socket

    from app.ui.interface import build_app, serve_options

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = build_app(engine, store, prefetch=prefetch)
    demo.queue()
    _, url, _ = demo.launch(  # served as `python -m app` serves it: login, limits, theme and CSS
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
        **serve_options(store),
    )
    return demo, url


def _fresh_store(tmp: Path, name: str, cases: list[Case]) -> Any:
    store = open_store(tmp / f"{name}.db")
    with store.session() as s:
        create_user(s, USER, "reviewer", PASSWORD)
        for case in cases:
            add_case(s, case, "eval", "system", in_eval_set=True)
    return store


def time_next_case(cfg: Config, engine: Any, cases: list[Case], prefetch: bool, tmp: Path) -> dict[str, Any]:
    """Seconds from pressing ``j`` to both answers visible, for ``cfg.cases`` presses."""
    from playwright.sync_api import expect, sync_playwright

    store = _fresh_store(tmp, f"prefetch-{prefetch}", cases)
    demo, url = _launch(engine, store, prefetch)
    waits, reads = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(cfg.max_read_s * 1000)
            page.goto(url)
            page.locator("input[type=text]").first.fill(USER)
            page.locator("input[type=password]").first.fill(PASSWORD)
            page.get_by_role("button", name="Login").click()
            page.get_by_text(f"Signed in as {USER}").wait_for()
            previous = ""
            for i in range(cfg.cases + 1):  # the first press opens the top case: not timed
                start = time.perf_counter()
                page.keyboard.press("j")
                if previous:
                    expect(page.locator("#case-panel")).not_to_contain_text(
                        previous, timeout=cfg.max_read_s * 1000
                    )
                page.locator("#base-answer .guard").wait_for()
                page.locator("#ft-answer .guard").wait_for()
                elapsed = time.perf_counter() - start
                previous = next(
                    w for w in page.locator("#case-panel").inner_text().split() if w.startswith("C-")
                )
                if i > 0:
                    waits.append(elapsed)
                start = time.perf_counter()  # reading; the verdict is stored directly (not timed)
                _approve(store, page.locator("#case-panel").inner_text())
                if prefetch:
                    answered = _answered(store, engine)
                    while (
                        _answered(store, engine) <= answered and time.perf_counter() - start < cfg.max_read_s
                    ):
                        time.sleep(0.2)
                else:
                    time.sleep(cfg.read_s)
                reads.append(time.perf_counter() - start)
            browser.close()
    finally:
        demo.close()
    return {
        "prefetch": prefetch,
        "next_to_answers_s": waits,
        "median_s": statistics.median(waits),
        "reading_s": reads,
    }


def _approve(store: Any, panel_text: str) -> None:
    import re

    from db.reviews import add_review

    pk = int(re.search(r"\(#(\d+)\)", panel_text).group(1))  # type: ignore[union-attr]
    with store.session() as s:
        add_review(s, pk, "approved", USER, note="benchmark reader")


def _answered(store: Any, engine: Any) -> int:
    from sqlmodel import select

    from db.models import CaseRecord

    with store.session() as s:
        pks = list(s.exec(select(CaseRecord.id)))
    return sum(cached_runs(store, engine, pk) is not None for pk in pks)


def _answer(case: Case, variant: str, decision: str, decisions: dict[str, str | None]) -> ModelAnswer:
    """A valid answer with ``decision``; its verdict is the engine's guard (``decisions``: all variants')."""
    exp = expected_decision(case)
    answer = {
        "decision": decision,
        "reasoning": f"{exp.rule} applies.",
        "customer_response": "Thank you.",
        "next_action": "Close the case.",
        "policy_refs": list(exp.policy_refs),
    }
    unguarded = ModelAnswer(
        case.case_id, variant, f"{variant}@bench", "ok", "{}", answer, None, 0.1, 100, 40, False
    )
    return replace(unguarded, guard=guard(case, unguarded, decisions))


def time_bulk(cfg: Config, cases: list[Case], tmp: Path) -> dict[str, Any]:
    """Seconds for one bulk approve of ``cfg.bulk`` pending cases with fine-tuned answers."""
    store = open_store(tmp / "bulk.db")
    with store.session() as s:
        create_user(s, USER, "reviewer", PASSWORD)
        for i in range(cfg.bulk):
            case = cases[i % len(cases)].model_copy(update={"case_id": f"C-{900000 + i}"})
            pk = add_case(s, case, "batch", "system").id or 0
            decision = expected_decision(case).decision
            decisions: dict[str, str | None] = {"base": decision, "finetuned": decision}
            for variant in decisions:
                save_run(s, pk, _answer(case, variant, decision, decisions), "system")
    start = time.perf_counter()
    with store.session() as s:
        action = bulk_approve(s, USER, QueueFilter())
    return {"cases": action.count, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_args(argv)
    cases = read_case_rows(cfg.eval_set)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        bulk = time_bulk(cfg, cases, tmp)
        print(f"bulk approve: {bulk['cases']} cases in {bulk['seconds']:.2f} s", flush=True)
        from engine import Engine  # heavy import (torch) after the cheap part

        engine = Engine.load(cfg.model, device="cpu")
        picked = cases[: cfg.cases + 2]
        modes = [time_next_case(cfg, engine, picked, prefetch, tmp) for prefetch in (False, True)]
    result = {
        "config": {k: str(v) for k, v in vars(cfg).items()},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "model_versions": {v: engine.model_version(v) for v in ("base", "finetuned")},
        "next_case": modes,
        "bulk_approve": bulk,
    }
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| measurement | median s | each (s) |\n|---|---|---|")
    for m in modes:
        label = "next → both answers, " + ("with background answering" if m["prefetch"] else "without")
        print(f"| {label} | {m['median_s']:.2f} | {', '.join(f'{w:.2f}' for w in m['next_to_answers_s'])} |")
    print(f"| bulk approve {bulk['cases']} cases | {bulk['seconds']:.2f} | |")
    return result


if __name__ == "__main__":
    main()
