"""Try a case: paste or edit a case as JSON and compare both models at once.
Validation errors are shown inline, each naming its field."""

from __future__ import annotations

import json
from html import escape
from typing import Any

import gradio as gr

from app.ui import actions
from app.ui.render import answer_html
from app.ui.state import Console
from policies import InvalidCase

EXAMPLE_CASE: dict[str, Any] = {
    "case_id": "C-TRY-001",
    "region": "US",
    "request_type": "return",
    "reason": "changed_mind",
    "message": "Hi, the headphones are fine but I don't need them anymore. Can I send them back?",
    "customer": {"id": "U-88", "tier": "standard", "claims_last_12m": 0},
    "order": {
        "id": "O-5512",
        "category": "electronics",
        "item": "Wireless headphones",
        "price": 129.99,
        "currency": "USD",
        "final_sale": False,
        "status": "delivered",
        "days_since_delivery": 12,
        "opened": True,
        "signature_confirmed": False,
    },
}


def errors_html(exc: InvalidCase) -> str:
    items = "".join(f"<li><code>{escape(field)}</code>: {escape(msg)}</li>" for field, msg in exc.errors)
    return f"<div class='case-errors' style='color:#b91c1c'><b>Invalid case</b><ul>{items}</ul></div>"


def create_try_tab(console: Console) -> None:
    """Declare the Try-a-case tab's widgets and wire its events."""
    editor = gr.Code(
        json.dumps(EXAMPLE_CASE, indent=2), language="json", label="Case JSON", elem_id="try-case"
    )
    run = gr.Button("Compare", variant="primary", elem_id="try-compare")
    errors = gr.HTML(elem_id="try-errors")
    with gr.Row():
        base_panel = gr.HTML()
        ft_panel = gr.HTML()

    def try_compare(case_json: str, request: gr.Request) -> tuple[str, str, str]:
        try:
            actions.parse_case_text(case_json)
        except InvalidCase as exc:
            return errors_html(exc), "", ""
        case_pk, runs = actions.compare_text(console, request, case_json, source="try")
        note = f"<div>Stored as case #{case_pk}; it is in the queue.</div>"
        return note, answer_html("Base", runs.get("base")), answer_html("Fine-tuned", runs.get("finetuned"))

    run.click(try_compare, [editor], [errors, base_panel, ft_panel], api_visibility="private")
