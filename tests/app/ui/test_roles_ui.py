"""Roles shape the page: the load handler shows each role only the tabs and buttons it may use."""

from __future__ import annotations

import gradio as gr
from starlette.requests import Request

from app.ui.interface import build_app
from tests.app.services.test_navigation import CountingEngine


def _load_handler(demo: gr.Blocks):
    return next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_load")


def _shown(demo: gr.Blocks, user: str) -> dict[str, bool]:
    """Label of each tab, button and panel the load handler sets -> whether ``user`` sees it."""
    page = Request({"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []})
    updates = _load_handler(demo)(gr.Request(page, username=user, session_hash=user))
    return {block.label or block.value: update["visible"] for block, update in updates.items()
            if isinstance(update, dict) and "visible" in update}


def test_each_role_sees_only_what_it_may_use(store, tmp_path) -> None:
    demo = build_app(CountingEngine(), store, export_dir=tmp_path / "exports", prefetch=False)
    ann, rita, otto = (_shown(demo, user) for user in ("ann", "rita", "otto"))
    assert set(ann) == set(rita) == set(otto)
    assert all(otto.values())
    ops_only = {"Batch run", "Export", "Models", "Drift"}
    assert {k for k, v in rita.items() if not v} == ops_only
    assert {k for k, v in ann.items() if not v} == ops_only | {
        "Reviews", "Approve base", "Approve fine-tuned", "Correct the answer", "Bulk actions"
    }
    assert ann["Flag as ambiguous"]
    tabs = [b for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    gated_tabs = [t for t in tabs if t.label in ops_only | {"Reviews"}]
    assert len(gated_tabs) == 5 and not any(t.visible for t in gated_tabs)  # until the load shows them
    logout = [b for b in demo.blocks.values() if isinstance(b, gr.Button) and b.elem_id == "logout"]
    assert logout and logout[0].link == "logout" and logout[0].visible
