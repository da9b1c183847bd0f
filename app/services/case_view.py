"""What the case view shows of one case, as one reviewer may see it: the case, its status, the
latest correction, the shadow (challenger) answer and the answer a correction starts from.

The Case tab renders a :class:`CaseView`; the store reads and the choice of the answer the correction
form starts from (the fine-tuned one, never the guard's) are here, not in the tab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.services.review_log import Correction, latest_correction
from app.services.reviews import correction_start
from app.services.second_opinion import visible_status
from db.cases import case_of, get_case, run_answer
from db.models import CaseRecord, ModelRun
from db.shadow import shadow_run
from db.store import Store
from engine.consistency import ConsistencyIssue, consistency_issues
from policies import Case


@dataclass(frozen=True)
class CaseView:
    """Everything the case view shows for one case and one viewer."""

    case_pk: int
    record: CaseRecord
    case: Case
    runs: dict[str, ModelRun]  # the compared answers by variant (base, finetuned)
    status: str  # as the viewer may see it: ``pending`` while another's second opinion is hidden
    correction: Correction | None  # the latest correction the viewer may see
    shadow: ModelRun | None  # the challenger's answer, when shadow mode routed this case
    start: ModelRun | None  # the answer a correction replaces (:func:`correction_start`)

    @property
    def draft(self) -> dict[str, Any]:
        """The answer the correction form starts with: the fine-tuned answer, or an empty form when it
        is not a valid answer (never the guard's decision)."""
        return (run_answer(self.start) if self.start else None) or {}

    def answer(self, variant: str) -> dict[str, Any] | None:
        """The parsed answer of ``variant`` (None when it has no run or no valid answer)."""
        run = self.runs.get(variant)
        return run_answer(run) if run is not None else None

    def consistency(self, variant: str) -> list[ConsistencyIssue] | None:
        """What the training-data check would record if ``variant``'s answer were approved (shown
        before the reviewer approves); None when there is no valid answer to check."""
        answer = self.answer(variant)
        return consistency_issues(self.case, answer) if answer is not None else None


def case_view(store: Store, case_pk: int, runs: dict[str, ModelRun], viewer: str | None) -> CaseView:
    """The case view of stored case ``case_pk`` with its compared ``runs``, as ``viewer`` may see it.

    Raises KeyError naming ``case_id`` when there is no such case.
    """
    with store.session() as s:
        record = get_case(s, case_pk)
        status = visible_status(s, case_pk, viewer)  # a hidden second-opinion verdict stays hidden
        correction = latest_correction(s, case_pk, viewer)
        shadow = shadow_run(s, case_pk)
    case = case_of(record)
    start = correction_start(runs)
    return CaseView(case_pk, record, case, dict(runs), status, correction, shadow, start)
