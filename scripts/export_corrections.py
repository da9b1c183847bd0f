"""Export approved and corrected answers not exported yet as an SFT JSONL (TRL conversational format).

    uv run python scripts/export_corrections.py --user otto
    uv run python scripts/export_corrections.py --user otto --model default-ft --out var/exports
    uv run python scripts/export_corrections.py --user otto --include-inconsistent

The same function as the console's Export tab (app.services.exports.export_reviews): eval-set cases are
refused, duplicates dropped, a review is never exported twice, answers with consistency issues are
skipped (or, with ``--include-inconsistent``, exported and marked). ``--user`` must be an ops user.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.services.exports import ExportError, eval_fingerprints_of, export_reviews
from db.cases import read_case_rows
from db.migrations import MigrationError
from db.store import DEFAULT_DB_URL, StoreUnavailable, open_store
from db.users import PermissionDenied, authorize
from engine.cli import existing_file, refusals
from engine.registry import RegistryError, UnknownModel, resolve_model  # noqa: E402
from policies import InvalidCase


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--user", required=True, help="the ops user the export is recorded under")
    p.add_argument(
        "--model", default="default-ft", help="registry name: its prompt format builds the prompts"
    )
    p.add_argument("--db", default=os.environ.get("DATABASE_URL", DEFAULT_DB_URL))
    p.add_argument("--out", type=Path, default=Path("var/exports"))
    p.add_argument("--eval-set", type=lambda text: text if text == "none" else existing_file(text),
                   default="data/generated/eval.jsonl",
                   help="the frozen eval set: its cases are never exported, whatever their review "
                        "(none: no set; cases stored as eval cases stay out all the same)")
    p.add_argument("--include-inconsistent", action="store_true",
                   help="also export answers whose consistency check found issues, each row marked with "
                        "its issue codes (default: skip them)")
    args = p.parse_args(argv)
    with refusals(p, {UnknownModel: "--model", RegistryError: "--model", InvalidCase: "--eval-set",
                      StoreUnavailable: "--db", MigrationError: "--db"}):
        fmt = resolve_model(args.model).prompt_format
        eval_cases = [] if args.eval_set == "none" else read_case_rows(Path(args.eval_set))
        fingerprints = eval_fingerprints_of(eval_cases)
        store = open_store(args.db)
    try:
        with store.session() as s:
            authorize(s, args.user, "export")
            result = export_reviews(s, args.user, args.out, fmt, fingerprints,
                                    include_inconsistent=args.include_inconsistent)
    except (PermissionDenied, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "path": result.path,
                "count": result.count,
                "sha256": result.sha256,
                "manifest": result.manifest_path,
                "skipped": result.skipped,
                "marked_inconsistent": result.marked,
                "preferences": result.preferences_path,
                "preference_count": result.preference_count,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
