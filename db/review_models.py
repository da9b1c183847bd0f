"""Tables for reviewer throughput (issue 9): bulk actions, saved queue filters and review settings.

Created by migration ``m004_review_throughput``; kept apart from :mod:`db.models` so the tables
of one feature live together.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from db.models import utcnow


class BulkAction(SQLModel, table=True):
    """One bulk action (e.g. approve the fine-tuned answer of every case a filter selects)."""

    __tablename__ = "bulk_actions"
    id: int | None = Field(default=None, primary_key=True)
    actor: str = Field(foreign_key="users.username")
    kind: str  # approve_finetuned
    filter_json: str  # the queue filter that selected the cases
    count: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    undone_at: datetime | None = None
    undone_by: str | None = None


class BulkActionItem(SQLModel, table=True):
    """A review a bulk action wrote. ``review_id`` has no foreign key: undo deletes the review and
    the item stays as the record of what was undone."""

    __tablename__ = "bulk_action_items"
    id: int | None = Field(default=None, primary_key=True)
    bulk_action_id: int = Field(foreign_key="bulk_actions.id", index=True)
    case_pk: int = Field(foreign_key="cases.id")
    review_id: int = Field(unique=True)


class SavedFilter(SQLModel, table=True):
    """A named queue filter of one user."""

    __tablename__ = "saved_filters"
    __table_args__ = (UniqueConstraint("owner", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(foreign_key="users.username")
    name: str
    filter_json: str
    created_at: datetime = Field(default_factory=utcnow)


class ReviewSetting(SQLModel, table=True):
    """A console-wide review setting set by ops (``second_opinion_share``: 0..1)."""

    __tablename__ = "review_settings"
    key: str = Field(primary_key=True)
    value: str
    updated_by: str
    updated_at: datetime = Field(default_factory=utcnow)


REVIEW_THROUGHPUT_TABLES = (BulkAction, BulkActionItem, SavedFilter, ReviewSetting)
