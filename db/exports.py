"""Export rows: which SFT files were written and which reviews went into each.

Writing an export (choosing reviews, rendering prompts, publishing the file) is app.services.exports'.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from db.models import Export, ExportItem


def list_exports(session: Session) -> list[Export]:
    """Every export, newest first."""
    return list(session.exec(select(Export).order_by(col(Export.id).desc())))


def export_items(session: Session, export_id: int) -> list[ExportItem]:
    """The items of export ``export_id`` in the order their lines were written."""
    return list(session.exec(select(ExportItem).where(ExportItem.export_id == export_id)
                             .order_by(col(ExportItem.id))))
