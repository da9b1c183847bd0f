"""The console's look: a theme whose fonts the console serves itself, and the CSS that keeps one case
on one screen (1440x900): compact spacing, the case facts as a strip, both answers side by side in
bounded panels, and an action bar that stays in view.

Fonts: Gradio ships Source Sans Pro and IBM Plex Mono under its own ``static/fonts`` (SIL Open Font
License), served by the console at ``/static/fonts/...``: no request leaves for another host. Only
their Regular (400) and Bold (700) files hold every glyph; the SemiBold (600) files Gradio's default
theme asks for are a few dozen glyphs each, so bold capitals fell back to another font. We declare
400 and 700 only: text styled 600 is drawn with the true bold face.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

FONT = gr.themes.LocalFont("Source Sans Pro", weights=(400, 700))
FONT_MONO = gr.themes.LocalFont("IBM Plex Mono", weights=(400, 700))

ANSWER_MAX_HEIGHT = "max(240px, calc(100vh - 360px))"  # each answer scrolls inside its panel past this
MESSAGE_MAX_HEIGHT = "4.6em"  # the customer message scrolls inside its box past this

CSS = (
    """
/* Gradio clips the page with overflow: hidden, which stops position: sticky; clip does not */
.gradio-container { overflow: clip !important; padding-top: 4px !important; }

/* compact header: the title and "Signed in as" on one line, a small Log out button */
.gradio-container .prose h1 { display: inline-block; font-size: 1.3rem; margin: 0 0.75em 0 0; }
.gradio-container .prose h1 + p { display: inline-block; margin: 0; }
#logout { align-self: center; }
/* the shortcut help takes no room while it is hidden (the ? key shows it) */
#shortcut-help:has(#shortcut-help-panel[style*="display:none"]),
#shortcut-help:has(#shortcut-help-panel[style*="display: none"]) { display: none; }

/* queue table: headers never wrap into letters */
#queue-table th, #queue-table th * { white-space: nowrap; word-break: keep-all; overflow-wrap: normal; }

/* case view: a strip of facts next to the customer message */
#case-top { align-items: center; }
#case-hint { align-self: center; }
.case-fields { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 4px 16px; }
.case-fields .facts { display: flex; flex-wrap: wrap; gap: 2px 18px; margin: 0; align-content: flex-start; }
.case-fields .fact { display: flex; gap: 5px; max-width: 100%; }
.case-fields .fact dt { font-weight: 700; white-space: nowrap; }
.case-fields .fact dd { margin: 0; }
.case-fields .message-box h4 { margin: 0 0 2px 0; font-size: 1em; }
.case-fields .customer-message {
  white-space: pre-wrap; margin: 0; padding: 3px 6px; font-family: inherit; font-size: inherit;
  max-height: """
    + MESSAGE_MAX_HEIGHT
    + """; overflow-y: auto;
  border: 1px solid var(--border-color-primary); border-radius: 4px;
  background: var(--background-fill-secondary);
}

/* both answers side by side, each bounded: a long answer scrolls inside, the actions stay on screen */
#case-work { align-items: stretch; flex-wrap: nowrap; }
#base-answer, #ft-answer {
  flex: 1 1 0; min-width: 0; max-height: """
    + ANSWER_MAX_HEIGHT
    + """; overflow-y: auto !important;  /* Gradio sets overflow: visible inline */
  border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 4px 8px;
}
#correction-form { flex: 1.15 1 0; min-width: 0; }
.answer h3 { margin: 0; font-size: 1.05em; }
.answer dl { margin: 4px 0 0 0; }
.answer dt { margin-top: 2px; }
.answer dd { margin: 0 0 2px 0; }
.answer .guard {
  margin: 4px 0; padding: 3px 6px; border-radius: 4px; background: var(--background-fill-secondary);
}

/* the action bar sticks to the bottom of the window whenever the page is taller than it */
#action-bar {
  position: sticky; bottom: 0; z-index: 50; gap: 2px;
  background: var(--background-fill-primary); border-top: 1px solid var(--border-color-primary);
  padding: 6px 0 2px 0;
}
#action-buttons { align-items: center; flex-wrap: nowrap; }
#action-buttons button { white-space: nowrap; min-width: max-content !important; }
#review-message, #shortcut-refusal { min-height: 1.3em; }
#shortcut-refusal { color: #b91c1c; }
/* each review button shows its key */
#approve-base::after, #approve-ft::after, #flag-case::after, #correct-case::after {
  margin-left: 0.3em; opacity: .6;
}
#approve-base::after { content: "(b)"; }
#approve-ft::after { content: "(a)"; }
#flag-case::after { content: "(f)"; }
#correct-case::after { content: "(c)"; }
"""
)


def console_theme() -> gr.themes.Base:
    """Gradio's default theme with compact spacing and fonts served by the console itself."""
    return gr.themes.Default(
        spacing_size=gr.themes.sizes.spacing_sm,
        font=(FONT, "ui-sans-serif", "system-ui", "sans-serif"),
        font_mono=(FONT_MONO, "ui-monospace", "Consolas", "monospace"),
    )


def look_options() -> dict[str, Any]:
    """The ``launch()`` arguments of the console's look: its theme and CSS."""
    return {"theme": console_theme(), "css": CSS}
