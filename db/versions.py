"""Adapter versions (``ft-v1``, ``ft-v2``, ...): what was trained, on what, how it scored, which one serves.

One :class:`AdapterVersion` row per trained adapter: its directory, base, run config, data hashes,
training metrics and the champion/challenger evaluation. Exactly one version is the ``champion``
(the adapter the console serves as ``finetuned``); new versions arrive as ``challenger``; a
champion that is replaced becomes ``retired``. :func:`promote` and :func:`rollback` change the
champion in the caller's transaction and audit it there, so the swap is atomic.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from db.audit import audit
from db.models import VERSION_STATUSES, AdapterVersion, utcnow

BUNDLED_VERSION = "ft-v1"  # the adapter shipped in data/models/default-ft
_NAME = re.compile(r"^ft-v(\d+)$")




class VersionError(ValueError):
    """A version action that cannot be done (unknown name, already champion, ...)."""


def _read_json(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def version_number(name: str) -> int:
    """``ft-v7`` -> 7; 0 for names outside the scheme."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else 0


def next_version_name(session: Session, taken: list[str] | None = None) -> str:
    """The next free ``ft-vN`` after every registered version and ``taken`` (e.g. running jobs)."""
    names = list(session.exec(select(AdapterVersion.name))) + list(taken or [])
    return f"ft-v{max([version_number(n) for n in names] + [0]) + 1}"


def get_version(session: Session, name: str) -> AdapterVersion:
    version = session.exec(select(AdapterVersion).where(AdapterVersion.name == name)).first()
    if version is None:
        raise VersionError(f"version: no adapter version named {name!r}")
    return version


def list_versions(session: Session) -> list[AdapterVersion]:
    """Every version, newest first."""
    return list(session.exec(select(AdapterVersion).order_by(col(AdapterVersion.id).desc())))


def champion(session: Session) -> AdapterVersion | None:
    return session.exec(select(AdapterVersion).where(AdapterVersion.status == "champion")).first()


def register_version(
    session: Session,
    actor: str,
    name: str,
    path: str | Path,
    base: str,
    status: str = "challenger",
    evaluation: dict[str, Any] | None = None,
    job_id: int | None = None,
) -> AdapterVersion:
    """Record the adapter in ``path`` (reading its run_config/data_sha256/metrics JSON) as ``name``.

    Raises :class:`VersionError` for a name already taken or an unknown status.
    """
    if status not in VERSION_STATUSES:
        raise VersionError(f"status: {status!r} is not one of {', '.join(VERSION_STATUSES)}")
    if session.exec(select(AdapterVersion).where(AdapterVersion.name == name)).first():
        raise VersionError(f"name: version {name!r} exists already")
    p = Path(path)
    version = AdapterVersion(
        name=name, path=str(path), base=base, status=status,
        run_config_json=_read_json(p / "run_config.json"),
        data_hashes_json=_read_json(p / "data_sha256.json"),
        metrics_json=_read_json(p / "metrics.json"),
        evaluation_json=json.dumps(evaluation) if evaluation is not None else None,
        job_id=job_id, created_by=actor,
        promoted_at=utcnow() if status == "champion" else None,
    )
    session.add(version)
    session.flush()
    audit(session, actor, "register_version", "adapter_version", name, None, _summary(version))
    return version


def ensure_bundled_version(session: Session, path: str | Path, base: str) -> AdapterVersion | None:
    """On first start (no versions yet) register the bundled adapter as ``ft-v1`` champion."""
    if session.exec(select(AdapterVersion)).first() is not None:
        return None
    return register_version(session, "system", BUNDLED_VERSION, path, base, status="champion")


def set_champion(session: Session, actor: str, target: AdapterVersion, action: str) -> AdapterVersion:
    """Make ``target`` the champion (the old one retires), audited as ``action``, in ``session``.

    No gate: callers decide whether the change is allowed. VersionError when it is the champion already.
    """
    if target.status == "champion":
        raise VersionError(f"version: {target.name} is the champion already")
    old = champion(session)
    before = {"champion": old.name if old else None}
    if old is not None:
        old.status = "retired"
        session.add(old)
    target.status = "champion"
    target.promoted_at = utcnow()
    session.add(target)
    session.flush()
    audit(session, actor, action, "adapter_version", target.name, before, {"champion": target.name})
    return target


def _summary(v: AdapterVersion) -> dict[str, Any]:
    return {"name": v.name, "path": v.path, "base": v.base, "status": v.status, "job_id": v.job_id}
