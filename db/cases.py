"""Cases and model runs.

A case row is identified by the hash of its whole content, and a ``case_id`` names one row forever:
the same id with other content is refused (naming the differing fields), so an edited case needs a
new id and never reuses answers computed for the old text. A model run is stored once per
(case, variant, model_version): :func:`save_run` returns the existing run rather than a second one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from db.audit import audit
from db.models import CaseRecord, ModelRun
from engine.types import ModelAnswer
from policies import Case, InvalidCase, parse_case
from policies.text import TextError, check_identifier


def canonical_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _sha(data: Any) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def case_fingerprints(case: Case) -> tuple[str, str]:
    """(content_sha over the whole case, body_sha over the case without its case_id)."""
    data = case.to_json_dict()
    body = {k: v for k, v in data.items() if k != "case_id"}
    return _sha(data), _sha(body)


def add_case(session: Session, case: Case, source: str, actor: str, in_eval_set: bool = False) -> CaseRecord:
    """Store ``case`` (or return the row already holding the same content).

    A case whose id or content matches a case of the eval set is marked ``in_eval_set`` too, so
    it can never leak into a training export under another name.
    """
    content_sha, body_sha = case_fingerprints(case)
    existing = session.exec(select(CaseRecord).where(CaseRecord.content_sha == content_sha)).first()
    if existing is None:
        _refuse_shadow(session, case)
    if existing is not None:
        if in_eval_set and not existing.in_eval_set:
            before = existing.model_dump()
            existing.in_eval_set = True
            session.add(existing)
            audit(session, actor, "mark_eval", "case", existing.id, before, existing)
        return existing
    if not in_eval_set:
        in_eval_set = (
            session.exec(
                select(CaseRecord.id)
                .where(CaseRecord.in_eval_set == True)  # noqa: E712
                .where((CaseRecord.case_id == case.case_id) | (CaseRecord.body_sha == body_sha))
                .limit(1)
            ).first()
            is not None
        )
    record = CaseRecord(
        case_id=case.case_id,
        content_sha=content_sha,
        body_sha=body_sha,
        case_json=canonical_json(case.to_json_dict()),
        source=source,
        in_eval_set=in_eval_set,
        region=case.region,
        request_type=case.request_type,
    )
    session.add(record)
    session.flush()
    audit(session, actor, "add_case", "case", record.id, None, record)
    return record


def _differing_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ (``message``, ``order.price``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            f
            for key in sorted(set(old) | set(new))
            for f in _differing_fields(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        ]
    return [] if old == new else [path or "<root>"]


def _refuse_shadow(session: Session, case: Case) -> None:
    """A ``case_id`` names one case forever (issue 17, finding 3): the same id with other content is
    refused, naming the fields that differ, instead of being stored as a newer row that links and
    reviews would then land on."""
    stored = session.exec(
        select(CaseRecord).where(CaseRecord.case_id == case.case_id).order_by(col(CaseRecord.id)).limit(1)
    ).first()
    if stored is None:
        return
    diff = _differing_fields(json.loads(stored.case_json), case.to_json_dict())
    raise InvalidCase(
        [("case_id", f"{case.case_id} already names another case (row #{stored.id}); it differs in "
                     f"{', '.join(diff)}: give this case a new case_id")]
        + [(f, f"differs from the stored case {case.case_id}") for f in diff]
    )


MAX_ROW_ID = 2**63 - 1  # the largest row id a database integer holds


def get_case(session: Session, case_pk: int) -> CaseRecord:
    """The case row ``case_pk``; raises KeyError naming the id when there is none."""
    if not 0 < case_pk <= MAX_ROW_ID:  # "#9999999999999999999" would overflow the driver
        raise KeyError(f"case_id: no case with id {case_pk}")
    record = session.get(CaseRecord, case_pk)
    if record is None:
        raise KeyError(f"case_id: no case with id {case_pk}")
    return record


def case_of(record: CaseRecord) -> Case:
    return parse_case(json.loads(record.case_json))


def read_case_rows(path: Path) -> list[Case]:
    """Cases from a JSONL file: each line a case, or a dataset row whose ``input`` is the case.

    Raises :class:`InvalidCase` whose fields are prefixed with ``line N``.
    """
    cases = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidCase([(f"line {n}", f"not valid JSON: {exc.msg}")]) from exc
        data = row.get("input", row) if isinstance(row, dict) else row
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise InvalidCase([(f"line {n}.input", f"not valid JSON: {exc.msg}")]) from exc
        try:
            cases.append(parse_case(data))
        except InvalidCase as exc:
            raise InvalidCase([(f"line {n}: {f}", m) for f, m in exc.errors]) from exc
    return cases


def load_eval_set(session: Session, path: Path, actor: str = "system") -> int:
    """Load the eval set as the demo queue, once: returns the number of cases added (0 if done before)."""
    if session.exec(select(CaseRecord.id).where(CaseRecord.source == "eval").limit(1)).first() is not None:
        return 0
    cases = read_case_rows(path)
    for case in cases:
        add_case(session, case, "eval", actor, in_eval_set=True)
    return len(cases)


# --- model runs ------------------------------------------------------------------------------------


def find_run(session: Session, case_pk: int, variant: str, model_version: str) -> ModelRun | None:
    return session.exec(
        select(ModelRun).where(
            ModelRun.case_pk == case_pk, ModelRun.variant == variant, ModelRun.model_version == model_version
        )
    ).first()


def save_run(session: Session, case_pk: int, answer: ModelAnswer, actor: str) -> ModelRun:
    """Store one model answer with its figures and guard verdict; an existing run for the key wins."""
    existing = find_run(session, case_pk, answer.variant, answer.model_version)
    if existing is not None:
        return existing
    guard = answer.to_dict()["guard"]
    run = ModelRun(
        case_pk=case_pk,
        variant=answer.variant,
        model_version=answer.model_version,
        status=answer.status,
        decision=answer.decision,
        answer_json=canonical_json(answer.answer) if answer.answer is not None else None,
        raw_text=answer.raw_text,
        error=answer.error,
        latency_s=answer.latency_s,
        input_tokens=answer.input_tokens,
        output_tokens=answer.output_tokens,
        truncated=answer.truncated,
        guard_json=canonical_json(guard) if guard else None,
    )
    session.add(run)
    session.flush()
    audit(session, actor, "add_model_run", "model_run", run.id, None, run)
    return run


def runs_for_case(
    session: Session, case_pk: int, versions: dict[str, str] | None = None
) -> dict[str, ModelRun]:
    """The case's runs by variant: for the given ``{variant: model_version}``, else the latest per variant."""
    runs = session.exec(select(ModelRun).where(ModelRun.case_pk == case_pk).order_by(col(ModelRun.id))).all()
    return latest_by_variant(runs, versions)


def latest_by_variant(
    runs: Iterable[ModelRun], versions: dict[str, str] | None = None
) -> dict[str, ModelRun]:
    out: dict[str, ModelRun] = {}
    for run in runs:  # in id order, so later runs replace earlier ones
        if versions is None or versions.get(run.variant) == run.model_version:
            out[run.variant] = run
    return out


def run_answer(run: ModelRun) -> dict[str, Any] | None:
    return json.loads(run.answer_json) if run.answer_json else None


def run_guard(run: ModelRun) -> dict[str, Any]:
    """The stored guard verdict (empty dict when the engine gave none)."""
    return json.loads(run.guard_json) if run.guard_json else {}


def resolve_case_ref(session: Session, ref: str | int) -> int:
    """The row id of a case given as ``12`` / ``#12`` (row id) or ``C-000123`` (the first, immutable row
    with that case_id: a later row with the same id, left by an older version, never shadows it).

    Raises KeyError whose message names ``case_id``.
    """
    text = str(ref).strip()
    if not text:
        raise KeyError("case_id: give a case id (C-...) or a row number (#12)")
    digits = text.lstrip("#")
    if digits.isascii() and digits.isdigit():
        if len(digits) > len(str(MAX_ROW_ID)):
            raise KeyError(f"case_id: no case with id {digits[:20]}...")
        return get_case(session, int(digits)).id or 0
    try:  # a case id is an identifier (policies.text): anything else names no case, unread by the database
        check_identifier(text, "case_id")
    except TextError as exc:
        raise KeyError(f"case_id: no such case ({exc.problem})") from None
    record = session.exec(
        select(CaseRecord).where(CaseRecord.case_id == text).order_by(col(CaseRecord.id))
    ).first()
    if record is None:
        raise KeyError(f"case_id: no case {text!r}")
    return record.id or 0
