"""Run the console: ``uv run python -m app [--model default-ft] [--host 127.0.0.1] [--port 7860] [--db URL]``.

Opens the store (``--db``, else DATABASE_URL, else SQLite at var/policyops.db), creates the first
ops user on first start (a generated password goes to ``admin-password.txt`` beside the SQLite file,
mode 0600, never to the terminal), loads the demo queue once (``data/generated/demo.jsonl``: generated
cases outside every frozen set, so their reviews can be exported; :mod:`app.services.demo`), loads the
models, answers pending cases in the background while nobody is asking (``--no-background-answers``
turns it off) and serves the console behind a login that is throttled per user name and client address.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from sqlalchemy.engine import make_url

from app.services.batches import resume_stale_batches
from app.services.demo import DEMO_QUEUE, EVAL_SET, seed_console
from app.services.jobs import JobError, Runner, RunnerConfig
from app.services.navigation import BackgroundAnswers
from app.services.versions import start_serving
from app.ui.interface import build_app, serve_options
from db.migrations import MigrationError
from db.store import DEFAULT_DB_URL, StoreUnavailable, open_store
from db.users import UserError, ensure_admin
from engine.cli import bounded_int, refusals
from engine.registry import RegistryError, UnknownModel, resolve_model

ADMIN_PASSWORD_FILE = "admin-password.txt"


def admin_password_path(db_url: str) -> Path:
    """Where a generated first-start password is written: beside the SQLite file, else under var/."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / ADMIN_PASSWORD_FILE
    return Path("var") / ADMIN_PASSWORD_FILE


def write_admin_password(path: Path, password: str) -> Path:
    """Write ``password`` to ``path``, readable and writable by its owner only (0600, whatever the
    umask): a fresh file (never through an existing file or link) moved into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (password + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default-ft", help="registry name or model/adapter dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=bounded_int(1, 65535), default=7860)
    p.add_argument(
        "--db",
        default=os.environ.get("DATABASE_URL", DEFAULT_DB_URL),
        help="SQLAlchemy URL or SQLite file (default: $DATABASE_URL or var/policyops.db)",
    )
    p.add_argument(
        "--eval-set", type=Path, default=EVAL_SET,
        help="frozen eval set: never exported, evaluated on by retraining jobs",
    )
    p.add_argument(
        "--demo-queue", type=Path, default=DEMO_QUEUE,
        help="cases put in the queue on first start (outside every frozen set)",
    )
    p.add_argument(
        "--no-background-answers", dest="background_answers", action="store_false",
        help="answer a case only when it is opened (default: answer pending cases while idle)",
    )
    p.add_argument("--export-dir", type=Path, default=Path("var/exports"))
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="retraining jobs write ft-vN here")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Start the console; a wrong ``--model`` or a store that cannot be opened ends it with status 2
    and one line naming the option (before anything is written for a wrong model)."""
    p = parser()
    args = p.parse_args(argv)
    with refusals(p, {UnknownModel: "--model", RegistryError: "--model"}):
        spec = resolve_model(args.model)
    with refusals(p, {StoreUnavailable: "--db", MigrationError: "--db"}):
        store = open_store(args.db)
    try:  # immediate: consoles starting at once on one store create the first user once
        with store.session(immediate=True) as s:
            boot = ensure_admin(
                s, os.environ.get("POLICYOPS_ADMIN_USER"), os.environ.get("POLICYOPS_ADMIN_PASSWORD")
            )
    except UserError as exc:  # e.g. POLICYOPS_ADMIN_PASSWORD too short or too common
        raise SystemExit(f"first ops user (POLICYOPS_ADMIN_USER / POLICYOPS_ADMIN_PASSWORD): {exc}") from None
    if boot and boot.generated_password:
        path = write_admin_password(admin_password_path(store.url), boot.generated_password)
        print(
            f"First start: created ops user {boot.username!r}; its generated password is in {path}"
            " (readable by you only; store it elsewhere and delete the file)",
            flush=True,
        )
    seed = seed_console(store, args.demo_queue, args.eval_set)
    if seed.demo_added:
        print(f"Demo queue: {seed.demo_added} cases from {args.demo_queue}", flush=True)
    try:  # retraining retrains what is served: the spec's base, retrain recipe and prompt format
        runner_config = RunnerConfig.for_spec(spec, runs_dir=args.runs_dir, eval_set=str(args.eval_set))
    except JobError as exc:
        raise SystemExit(f"--model {args.model}: {exc}") from None
    if runner_config.refusal:
        print(f"Retraining is off: {runner_config.refusal}", flush=True)
    from engine import BackendError, Engine  # heavy import (torch): after the cheap checks above

    try:
        engine = Engine.load(spec)
    except BackendError as exc:  # a served model: the server is down, refuses the key or lacks a model
        raise SystemExit(f"--model {args.model}: {exc}") from None
    if line := start_serving(engine, store):
        print(line, flush=True)
    runner = Runner(store, runner_config)
    name = f"{socket.gethostname()}:{args.port}"  # one address, one live console
    demo = build_app(engine, store, export_dir=args.export_dir, eval_fingerprints=seed.eval_fingerprints,
                     runner=runner, console_name=name)
    background = BackgroundAnswers(store, engine)
    if args.background_answers:
        background.start()
    try:
        demo.queue(default_concurrency_limit=4).launch(
            server_name=args.host, server_port=args.port, prevent_thread_lock=True, **serve_options(store)
        )
        # the address is ours now, so an earlier process of this console has stopped: its batch runs
        # (and any other console's silent for BATCH_STALE_S) continue here
        for job in resume_stale_batches(store, engine, name):
            print(f"Resuming batch run {job.run_id} (its console stopped mid-run)", flush=True)
        demo.block_thread()
    finally:  # launch returns on Ctrl-C: let a case being answered finish, then stop
        background.stop()


if __name__ == "__main__":
    main()
