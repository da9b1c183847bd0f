"""Reviews tab: the audit log names cases as people quote them."""

from __future__ import annotations

from app.ui.review_tab import log_html
from app.ui.state import Console
from tests.app.services.test_review_throughput import _add
from tests.app.services.test_second_opinion_roles import _rita_corrects


def test_audit_log_shows_case_ids_not_row_numbers(store) -> None:
    for n in range(3):  # the case under review is not row 1, so a row number cannot pass for its id
        pk = _add(store, f"C-20000{n}")
    _rita_corrects(store, pk, "C-200002")
    html = log_html(Console(engine=None, store=store), "rita")
    assert "case C-200002" in html and f"case #{pk}" not in html
