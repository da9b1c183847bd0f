"""Shadow mode: a share of new cases also gets the challenger's answer, stored as variant ``challenger``.

Ops set the share (0 = off) with :func:`db.shadow.set_shadow_share`; :func:`shadow_answer` is called
after a new case was compared: when the case falls in the share (a stable hash of its case id, so
the same case always routes the same way) and a challenger version exists, the engine loads that
adapter as variant ``challenger`` (once per version, on the shared base) and its answer is stored as
a model run. Reviewers see it in the case view; it never replaces the champion's answer.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from db.cases import case_of, get_case, save_run
from db.models import ModelRun
from db.shadow import SHADOW_VARIANT, latest_challenger, shadow_share
from db.store import Store

_LOCK = threading.Lock()  # one engine call at a time from shadow routing
log = logging.getLogger(__name__)


def routed(case_id: str, share: float) -> bool:
    """Whether ``case_id`` falls in ``share`` (stable across runs and processes)."""
    return int(hashlib.sha256(case_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def shadow_answer(store: Store, engine: Any, case_pk: int, actor: str) -> ModelRun | None:
    """Answer stored case ``case_pk`` with the newest challenger when shadow routing picks it.

    Out: the stored run, or None (share 0, not routed, no challenger, an engine that cannot load
    adapters, or a challenger it cannot load: its dir gone, PEFT or the model server refusing it, which
    is logged as one line). A second opinion never fails the case it shadows.
    """
    from engine.backends.base import ADAPTER_LOAD_ERRORS

    with store.session() as s:
        share, challenger = shadow_share(s), latest_challenger(s)
        case = case_of(get_case(s, case_pk))
    swap = getattr(engine, "swap_adapter", None)
    if challenger is None or swap is None or not routed(case.case_id, share):
        return None
    with _LOCK:
        try:
            swap(SHADOW_VARIANT, challenger.path, version=challenger.name)
        except ADAPTER_LOAD_ERRORS as exc:
            log.warning("shadow answers: challenger %s cannot be loaded: %s", challenger.name, exc)
            return None
        answer = engine.decide(case, variant=SHADOW_VARIANT)
    with store.session() as s:
        return save_run(s, case_pk, answer, actor)
