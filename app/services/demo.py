"""What a fresh console starts with: the demo queue, and the eval set's fingerprints that exports refuse.

The demo queue is ``data/generated/demo.jsonl``: 48 generated cases (independent mode, seed 2000,
balanced over the rule chains) none of which shares its deciding fields, hence its prompt in any
format, with the committed splits or the frozen eval and stress sets (``scripts/generate_sft_dataset.py
--demo-out``). Reviews of these cases can therefore be exported and retrained on, which closes the
loop on a fresh store. The frozen eval set is never put in the queue (reviews of it could never be
exported); it is only read for the fingerprints the export refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import Session, select

from app.services.exports import eval_fingerprints_of
from db.cases import add_case, read_case_rows
from db.models import CaseRecord
from db.store import Store

DEMO_QUEUE = Path("data/generated/demo.jsonl")
EVAL_SET = Path("data/generated/eval.jsonl")
DEMO_SOURCE = "import"  # a case source the store knows (db.models.CASE_SOURCES)


@dataclass
class ConsoleSeed:
    """What :func:`seed_console` did: demo cases added (0: loaded before, or no file) and the eval
    set's fingerprints (case ids, body hashes, fields keys) for ``build_app(eval_fingerprints=...)``."""

    demo_added: int = 0
    eval_fingerprints: set[str] = field(default_factory=set)


def load_demo_queue(store: Store, path: Path = DEMO_QUEUE, actor: str = "system") -> int:
    """Add the cases of ``path`` to the queue, once: returns how many were added (0 when any of them
    is in the store already, so a restart or a second console adds nothing).

    Raises :class:`policies.InvalidCase` naming the line of a bad row.
    """
    cases = read_case_rows(path)
    if not cases:
        return 0

    def unit(s: Session) -> int:
        seen = s.exec(select(CaseRecord.id).where(CaseRecord.case_id == cases[0].case_id).limit(1)).first()
        if seen is not None:
            return 0
        for case in cases:
            add_case(s, case, DEMO_SOURCE, actor)
        return len(cases)

    return store.write(unit)


def seed_console(
    store: Store, demo_queue: Path | None = DEMO_QUEUE, eval_set: Path | None = EVAL_SET
) -> ConsoleSeed:
    """What ``python -m app`` does to its store before serving: the demo queue from ``demo_queue``
    (skipped when None or missing) and the fingerprints of the frozen ``eval_set`` (empty when None or
    missing: exports still refuse the repo's frozen sets by their deciding fields and prompt)."""
    seed = ConsoleSeed()
    if eval_set is not None and Path(eval_set).is_file():
        seed.eval_fingerprints = eval_fingerprints_of(read_case_rows(Path(eval_set)))
    if demo_queue is not None and Path(demo_queue).is_file():
        seed.demo_added = load_demo_queue(store, Path(demo_queue))
    return seed
