"""Run the console: ``uv run python -m app [--model default-ft] [--host 127.0.0.1] [--port 7860] [--db URL]``.

Opens the store (``--db``, else DATABASE_URL, else SQLite at var/policyops.db), creates the first
ops user on first start, loads the demo queue from the frozen eval set, loads the models and serves
the console behind a login.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from app.services.exports import eval_fingerprints_of
from app.services.jobs import JobError, Runner, RunnerConfig
from app.services.versions import serve_champion
from app.ui.interface import build_app, make_auth
from db.cases import load_eval_set, read_case_rows
from db.store import DEFAULT_DB_URL, open_store
from db.users import ensure_admin
from db.versions import ensure_bundled_version
from engine.registry import resolve_model

EVAL_SET = Path("data/generated/eval.jsonl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default-ft", help="registry name or model/adapter dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument(
        "--db",
        default=os.environ.get("DATABASE_URL", DEFAULT_DB_URL),
        help="SQLAlchemy URL or SQLite file (default: $DATABASE_URL or var/policyops.db)",
    )
    p.add_argument(
        "--eval-set", type=Path, default=EVAL_SET, help="frozen eval set: demo queue, never exported"
    )
    p.add_argument("--export-dir", type=Path, default=Path("var/exports"))
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="retraining jobs write ft-vN here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    store = open_store(args.db)
    with store.session() as s:
        boot = ensure_admin(
            s, os.environ.get("POLICYOPS_ADMIN_USER"), os.environ.get("POLICYOPS_ADMIN_PASSWORD")
        )
    if boot and boot.generated_password:
        print(
            f"First start: created ops user {boot.username!r} with password {boot.generated_password}"
            " (shown once; change it with scripts/create_user.py)",
            flush=True,
        )
    fingerprints: set[str] = set()
    if args.eval_set.is_file():
        with store.session() as s:
            added = load_eval_set(s, args.eval_set)
        fingerprints = eval_fingerprints_of(read_case_rows(args.eval_set))
        if added:
            print(f"Demo queue: {added} cases from {args.eval_set}", flush=True)
    spec = resolve_model(args.model)
    try:  # retraining retrains what is served: the spec's base, retrain recipe and prompt format
        runner_config = RunnerConfig.for_spec(spec, runs_dir=args.runs_dir, eval_set=str(args.eval_set))
    except JobError as exc:
        raise SystemExit(f"--model {args.model}: {exc}") from None
    if runner_config.refusal:
        print(f"Retraining is off: {runner_config.refusal}", flush=True)
    from engine import Engine  # heavy import (torch): after the cheap checks above

    engine = Engine.load(spec)
    with store.session() as s:  # the bundled adapter is ft-v1 on first start; serve today's champion
        adapter = getattr(engine.spec, "adapters", {}).get("finetuned")
        if adapter:
            ensure_bundled_version(s, adapter, engine.spec.base)
        served = serve_champion(engine, s)
    if served:
        print(f"Serving champion {served} as finetuned", flush=True)
    runner = Runner(store, runner_config)
    demo = build_app(engine, store, export_dir=args.export_dir, eval_fingerprints=fingerprints,
                     runner=runner)
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host,
        server_port=args.port,
        auth=make_auth(store),
        auth_message="PolicyOps Console: sign in",
        allowed_paths=[],
    )


if __name__ == "__main__":
    main()
