"""Keyboard-first review: a document-level keydown handler that clicks the case tab's buttons.

Installed once per page by ``demo.load(None, js=SHORTCUTS_JS)``. Shortcuts never fire while the
focus is in an input, textarea, select or contenteditable element, except Ctrl/Cmd+Enter (save)
and Escape (leave the field, close the help).
"""

from __future__ import annotations

from html import escape

# (keys, what it does, the button it clicks); the help panel and docs/reviewer.md list these.
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("j", "next case (opens the top of the queue when none is open)"),
    ("k", "previous case"),
    ("a", "approve the fine-tuned answer"),
    ("b", "approve the base answer"),
    ("f", "flag as ambiguous: focuses the note; Ctrl+Enter saves the flag"),
    ("c", "open the correction form (focuses the reasoning)"),
    ("Ctrl+Enter / s", "save (the flag after f, else the correction)"),
    ("?", "show or hide this help"),
    ("Esc", "leave the field / close the help"),
)

HELP_ID = "shortcut-help-panel"


def help_html() -> str:
    """The help panel (hidden until ``?``)."""
    rows = "".join(f"<tr><td><kbd>{escape(k)}</kbd></td><td>{escape(v)}</td></tr>" for k, v in SHORTCUTS)
    return (
        f"<div id='{HELP_ID}' style='display:none;border:1px solid #999;padding:8px;margin:4px 0'>"
        f"<b>Keyboard shortcuts</b><table>{rows}</table></div>"
    )


SHORTCUTS_JS = (
    """
() => {
  if (window.__policyopsKeys) return;
  window.__policyopsKeys = true;
  let mode = 'correct';  // what Ctrl+Enter / s saves: 'flag' after f, else the correction
  const byId = (id) => document.getElementById(id);
  const typing = (el) => !!el && (el.isContentEditable ||
      ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName));
  const caseTab = () => [...document.querySelectorAll('[role=tab]')]
      .find((t) => t.textContent.trim() === 'Case');
  const inCase = (then) => {
    const tab = caseTab();
    if (tab && tab.getAttribute('aria-selected') !== 'true') { tab.click(); setTimeout(then, 150); }
    else then();
  };
  const click = (id) => inCase(() => { const el = byId(id); if (el) el.click(); });
  const focusIn = (id) => inCase(() => {
    const el = document.querySelector(`#${id} textarea, #${id} input`);
    if (el) { el.scrollIntoView({block: 'center'}); el.focus(); }
  });
  const toggleHelp = (show) => {
    const el = byId('"""
    + HELP_ID
    + """');
    if (el) el.style.display = (show ?? el.style.display === 'none') ? 'block' : 'none';
  };
  const save = () => click(mode === 'flag' ? 'flag-case' : 'save-correction');
  document.addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') { e.preventDefault(); save(); return; }
    if (e.key === 'Escape') { toggleHelp(false); if (typing(e.target)) e.target.blur(); return; }
    if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    const actions = {
      j: () => { mode = 'correct'; click('case-next'); },
      k: () => { mode = 'correct'; click('case-prev'); },
      a: () => { mode = 'correct'; click('approve-ft'); },
      b: () => { mode = 'correct'; click('approve-base'); },
      f: () => { mode = 'flag'; focusIn('review-note'); },
      c: () => { mode = 'correct'; focusIn('corr-reasoning'); },
      s: save,
      '?': () => toggleHelp(),
    };
    const act = actions[e.key];
    if (act) { e.preventDefault(); act(); }
  }, true);
}
"""
)
