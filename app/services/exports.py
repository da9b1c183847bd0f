"""SFT export: reviewed answers -> JSONL in TRL's conversational ``messages`` format, plus a manifest.

Each example is ``{"messages": [system, user, assistant]}``: the system and user turns come from
:func:`policies.prompt.build_messages` (the one prompt builder, in the model's prompt format) and the
assistant turn is the reviewed answer as JSON. Only the latest review of a case counts, and only
when it approved or corrected an answer. Cases of the eval set are refused (``skipped["eval_set"]``:
the case itself, by id or body), and so is any case the model could not tell from a frozen set's
case (``skipped["frozen_set"]``: the eval or stress set's deciding fields or prompt, whatever the ids
and message; :mod:`policies.leakage`); duplicate examples are dropped (within the file and against
earlier exports) and a review is never exported twice (``export_items.review_id`` is unique). Files
are published with :mod:`app.services.durable`: written to hidden temp files and fsynced, the
bookkeeping committed, then renamed into place; an export cut short is undone (or, when it had
committed, finished) by :func:`recover_exports` before the next.

Guard rails on training data (issue 18): an answer whose consistency check found issues
(:mod:`engine.consistency`; recorded with the review when it was saved, checked here for reviews saved
before the check or by a bulk approval) is refused as ``skipped["inconsistent"]``, or, with
``include_inconsistent=True``, exported with its issues in the row (``"consistency_issues"``: the
codes). The manifest's ``consistency`` block counts both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from app.services.durable import Recovery, discard, publish, recover_dir, write_temp
from app.services.paths import safe_dir
from db.audit import audit
from db.cases import canonical_json, case_fingerprints, case_of, run_answer
from db.models import CaseRecord, Export, ExportItem, ModelRun, Review, utcnow
from engine.consistency import consistency_issues
from policies import Answer, Case, parse_answer
from policies.leakage import (
    DEFAULT_FROZEN_SETS,
    FrozenKeys,
    FrozenSetError,
    fields_key,
    frozen_keys,
    prompt_key,
)
from policies.prompt import PromptFormat, answer_json, build_messages

EXPORTABLE = frozenset({"approved", "corrected"})


class ExportError(RuntimeError):
    """Nothing could be exported; the message says why."""


@dataclass
class ExportResult:
    path: str
    manifest_path: str
    count: int
    sha256: str
    review_ids: list[int]
    skipped: dict[str, list[int]] = field(default_factory=dict)  # reason -> review ids
    preferences_path: str | None = None  # the corrections as DPO pairs, beside the SFT file (None: no pair)
    preference_count: int = 0
    marked: list[int] = field(default_factory=list)  # inconsistent reviews exported with their issues

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Candidate:
    review: Review
    record: CaseRecord
    messages: list[dict[str, str]]
    sha: str
    rejected: dict[str, Any] | None = None  # a correction's replaced model answer (a DPO pair), if valid
    issues: list[str] = field(default_factory=list)  # consistency issue codes (kept only when included)


def preferences_path(sft_path: str | Path) -> Path:
    """Where an export's preference pairs lie: ``sft-STAMP.preferences.jsonl`` beside ``sft-STAMP.jsonl``."""
    path = Path(sft_path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".preferences.jsonl")


def _rejected(session: Session, review: Review, chosen: dict[str, Any]) -> dict[str, Any] | None:
    """The model answer a correction replaced, when it is a valid answer other than the correction."""
    if review.status != "corrected" or review.model_run_id is None:
        return None
    run = session.get(ModelRun, review.model_run_id)
    answer = run_answer(run) if run is not None else None
    return answer if answer is not None and answer != chosen else None


def _issue_codes(review: Review, case: Case, answer: Answer) -> list[str]:
    """The review's recorded consistency issue codes; checked now when none were recorded."""
    recorded = review.consistency_issues
    if recorded is None:
        return [issue.code for issue in consistency_issues(case, answer)]
    return [issue["code"] for issue in recorded]


def _candidates(
    session: Session, fmt: PromptFormat, eval_fingerprints: set[str], frozen: FrozenKeys,
    include_inconsistent: bool = False,
) -> tuple[list[_Candidate], dict[str, list[int]]]:
    latest: dict[int, Review] = {}
    for review in session.exec(select(Review).order_by(col(Review.id))):
        latest[review.case_pk] = review
    exported = set(session.exec(select(ExportItem.review_id)))
    exported_shas = set(session.exec(select(ExportItem.example_sha)))
    skipped: dict[str, list[int]] = {"eval_set": [], "frozen_set": [], "inconsistent": [], "duplicate": []}
    out: list[_Candidate] = []
    for review in latest.values():
        if review.status not in EXPORTABLE or review.id in exported or review.answer_json is None:
            continue
        record = session.get(CaseRecord, review.case_pk)
        assert record is not None
        if record.in_eval_set or {record.case_id, record.body_sha} & eval_fingerprints:
            skipped["eval_set"].append(review.id or 0)
            continue
        case = case_of(record)
        keys = {"fields": fields_key(case), "prompt": prompt_key(case, fmt)}
        if keys["fields"] in eval_fingerprints or frozen.match(keys):
            skipped["frozen_set"].append(review.id or 0)
            continue
        answer = parse_answer(json.loads(review.answer_json))
        issues = _issue_codes(review, case, answer)
        if issues and not include_inconsistent:
            skipped["inconsistent"].append(review.id or 0)
            continue
        messages = build_messages(case, fmt, answer)
        sha = hashlib.sha256(canonical_json(messages).encode()).hexdigest()
        if sha in exported_shas:
            skipped["duplicate"].append(review.id or 0)
            continue
        exported_shas.add(sha)
        rejected = _rejected(session, review, answer.model_dump(mode="json"))
        out.append(_Candidate(review, record, messages, sha, rejected, issues))
    return out, {k: v for k, v in skipped.items() if v}


def _marks(candidate: _Candidate) -> dict[str, list[str]]:
    """What an exported row carries beside its turns: an inconsistent answer's issue codes."""
    return {"consistency_issues": candidate.issues} if candidate.issues else {}


def recover_exports(session: Session, out_dir: Path) -> Recovery:
    """Finish or undo exports in ``out_dir`` that a crash cut short (see :mod:`app.services.durable`)."""
    recorded: set[str] = set()
    for export in session.exec(select(Export)):
        recorded.update({Path(export.path).name, Path(export.manifest_path).name,
                         preferences_path(export.path).name})
    return recover_dir(Path(out_dir), recorded, "sft-*")


def export_reviews(
    session: Session,
    actor: str,
    out_dir: Path,
    fmt: PromptFormat | None = None,
    eval_fingerprints: set[str] | None = None,
    frozen: FrozenKeys | None = None,
    include_inconsistent: bool = False,
) -> ExportResult:
    """Export every approved/corrected review not yet exported; commits ``session`` itself.

    ``eval_fingerprints``: extra case ids / body hashes to refuse (the eval file's), on top of cases
    marked ``in_eval_set``, and fields keys (:func:`eval_fingerprints_of`). ``frozen``: the frozen
    sets' keys (:func:`policies.leakage.frozen_keys`); None: the repo's eval and stress sets, those
    that exist. A case whose deciding fields or prompt (in ``fmt``) match is refused as
    ``frozen_set``. An answer with consistency issues is refused as ``inconsistent`` (it stays waiting
    for a later export); ``include_inconsistent=True`` exports it with ``"consistency_issues"`` (the
    codes) in its row, listed in ``ExportResult.marked``. Raises :class:`ExportError` when there is
    nothing new to export or a frozen set cannot be read.
    Raises :class:`app.services.paths.UnsafePath` for an ``out_dir`` with ``..`` or symlinked out
    of its parent.
    Permissions are the caller's job (:func:`db.users.authorize` with ``"export"``).
    """
    out_dir = safe_dir(Path(out_dir))  # no "..", no symlink out: refused before anything is read
    recover_exports(session, out_dir)  # the first statement: the caller's write lock is held from here
    fmt = fmt or PromptFormat()
    try:
        if frozen is None or frozen.fmt != fmt:  # prompt keys are those of the format exported in
            frozen = frozen_keys(DEFAULT_FROZEN_SETS if frozen is None else frozen.paths, fmt)
    except FrozenSetError as exc:
        raise ExportError(f"cannot check the export against the frozen sets: {exc}") from exc
    candidates, skipped = _candidates(session, fmt, eval_fingerprints or set(), frozen, include_inconsistent)
    if not candidates:
        detail = ", ".join(f"{len(v)} refused as {k}" for k, v in skipped.items())
        hint = ("; answers with consistency issues can be included, marked (include_inconsistent)"
                if "inconsistent" in skipped else "")
        raise ExportError(
            "export: nothing to export: no approved or corrected review is waiting"
            + (f" ({detail}{hint})" if detail else "")
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
    path = out_dir / f"sft-{stamp}.jsonl"
    manifest_path = out_dir / f"sft-{stamp}.manifest.json"
    data = "".join(json.dumps({"messages": c.messages, **_marks(c)}, ensure_ascii=False) + "\n"
                   for c in candidates).encode()
    sha256 = hashlib.sha256(data).hexdigest()
    review_ids = [c.review.id or 0 for c in candidates]
    marked = [c.review.id or 0 for c in candidates if c.issues]
    # TRL's conversational preference format: chosen = the reviewed answer, rejected = the replaced one
    pairs = [{"prompt": c.messages[:-1], "chosen": c.messages[-1:],
              "rejected": [{"role": "assistant", "content": answer_json(parse_answer(c.rejected))}],
              **_marks(c)}
             for c in candidates if c.rejected is not None]
    pref_path = preferences_path(path)
    pref_data = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs).encode()
    manifest = {
        "file": path.name,
        "count": len(candidates),
        "sha256": sha256,
        "format": "trl-conversational",
        "prompt_format": fmt.to_dict(),
        "created_by": actor,
        "created_at": utcnow().isoformat(),
        "review_ids": review_ids,
        "case_ids": [c.record.case_id for c in candidates],
        "skipped": skipped,
        "consistency": {"include_inconsistent": include_inconsistent,
                        "skipped": len(skipped.get("inconsistent", [])), "marked": len(marked),
                        "marked_review_ids": marked},
        "frozen_sets": frozen.paths,
        "preferences": {"file": pref_path.name, "count": len(pairs), "format": "trl-preference",
                        "sha256": hashlib.sha256(pref_data).hexdigest()} if pairs else None,
    }
    files = [path, manifest_path, *([pref_path] if pairs else [])]
    try:
        write_temp(path, data)
        if pairs:
            write_temp(pref_path, pref_data)
        write_temp(manifest_path, json.dumps(manifest, indent=2).encode())
        export = Export(
            path=str(path),
            manifest_path=str(manifest_path),
            sha256=sha256,
            count=len(candidates),
            created_by=actor,
        )
        session.add(export)
        session.flush()
        for c in candidates:
            session.add(ExportItem(export_id=export.id or 0, review_id=c.review.id or 0, example_sha=c.sha))
        audit(
            session,
            actor,
            "export",
            "export",
            export.id,
            None,
            {**export.model_dump(), "review_ids": review_ids},
        )
        session.commit()
    except BaseException:
        session.rollback()
        discard(files)
        raise
    publish(files)  # a crash before this line is finished by the next recover_exports
    return ExportResult(str(path), str(manifest_path), len(candidates), sha256, review_ids, skipped,
                        str(pref_path) if pairs else None, len(pairs), marked)


def eval_fingerprints_of(cases: list[Any]) -> set[str]:
    """Case ids, body hashes and fields keys (:func:`policies.leakage.fields_key`) of the eval file's
    cases, for :func:`export_reviews`."""
    out: set[str] = set()
    for case in cases:
        out.add(case.case_id)
        out.add(case_fingerprints(case)[1])
        out.add(fields_key(case))
    return out
