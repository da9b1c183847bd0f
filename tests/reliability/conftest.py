"""Fixtures for the reliability tests: the console served in-process (shared with tests/app)."""

from __future__ import annotations

from tests.app.conftest import PASSWORDS, ROLES, Served, served, tiny_engine  # noqa: F401
