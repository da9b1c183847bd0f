"""Keyboard-first review: a document-level keydown handler that clicks the case tab's buttons.

Installed once per page by ``demo.load(None, js=SHORTCUTS_JS)``. Shortcuts never fire while the
focus is in an input, textarea, select or contenteditable element, except Ctrl/Cmd+Enter (save)
and Escape (leave the field, close the help). A key whose button the viewer's role does not get
(an agent's a, b, c) writes "Your role (agent) cannot approve this case." next to the status
message instead; the server refuses such an action all the same.
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


REFUSAL_ID = "shortcut-refusal"
# next to the status message in the case tab's action bar; the script below writes into it
REFUSAL_HTML = f"<span id='{REFUSAL_ID}' role='status' aria-live='polite'></span>"
# the case tab's "Correct the answer" button: what the c key does (the function SHORTCUTS_JS installs)
OPEN_CORRECTION_JS = "() => { if (window.__policyopsCorrect) window.__policyopsCorrect(); }"

# Each key's button is shown only to roles allowed its action (the load handler hides the rest): a key
# whose button is hidden says so next to the status message instead of doing nothing.
SHORTCUTS_JS = (
    """
() => {
  if (window.__policyopsKeys) return;
  window.__policyopsKeys = true;
  let mode = 'correct';  // what Ctrl+Enter / s saves: 'flag' after f, else the correction
  let opening = false;  // c is opening the folded correction form
  const byId = (id) => document.getElementById(id);
  const shown = (el) => !!el && el.getClientRects().length > 0;
  const typing = (el) => !!el && (el.isContentEditable ||
      ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName));
  const caseTab = () => [...document.querySelectorAll('[role=tab]')]
      .find((t) => t.textContent.trim() === 'Case');
  const inCase = (then) => {
    const tab = caseTab();
    if (tab && tab.getAttribute('aria-selected') !== 'true') { tab.click(); setTimeout(then, 150); }
    else then();
  };
  const say = (text) => { const el = byId('"""
    + REFUSAL_ID
    + """'); if (el) el.textContent = text; };
  const roleName = () => {  // from the page header "Signed in as NAME (ROLE)"
    const m = /Signed in as \\S+ \\((\\w+)\\)/.exec(document.body.innerText);
    return m ? m[1] : null;
  };
  const refuse = (verb) => {
    const role = roleName();
    say(`Your role${role ? ` (${role})` : ''} cannot ${verb} this case.`);
  };
  // click button ``id`` when ``gate`` (the button, or the form holding it) is shown to this role
  const press = (id, verb, gate = id) => inCase(() => {
    const el = byId(id);
    if (el && shown(byId(gate))) { say(''); el.click(); } else refuse(verb);
  });
  const focusIn = (id, verb) => inCase(() => {
    const el = document.querySelector(`#${id} textarea, #${id} input`);
    if (!el || !shown(el)) { refuse(verb); return; }
    say(''); el.focus();  // scrolls only when the field is out of view
  });
  const openCorrection = () => inCase(() => {
    const form = byId('correction-form');
    if (!shown(form)) { refuse('correct'); return; }
    if (shown(document.querySelector('#corr-reasoning textarea'))) {
      focusIn('corr-reasoning', 'correct');  // at once: the keys typed next go to the field
      return;
    }
    const toggle = form.querySelector('.label-wrap');  // the form is collapsed: open it first
    if (toggle) toggle.click();
    opening = true;  // until the field has the focus, keys are swallowed, not taken as shortcuts
    const started = Date.now();
    const wait = () => {
      const field = document.querySelector('#corr-reasoning textarea');
      if (shown(field) || Date.now() - started > 1000) {
        opening = false;
        focusIn('corr-reasoning', 'correct');
      } else requestAnimationFrame(wait);
    };
    requestAnimationFrame(wait);
  });
  window.__policyopsCorrect = () => { mode = 'correct'; openCorrection(); };
  const toggleHelp = (show) => {
    const el = byId('"""
    + HELP_ID
    + """');
    if (el) el.style.display = (show ?? el.style.display === 'none') ? 'block' : 'none';
  };
  const save = () => (mode === 'flag' ? press('flag-case', 'flag')
                                      : press('save-correction', 'correct', 'correction-form'));
  document.addEventListener('keydown', (e) => {
    if (opening) { e.preventDefault(); return; }
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') { e.preventDefault(); save(); return; }
    if (e.key === 'Escape') { toggleHelp(false); if (typing(e.target)) e.target.blur(); return; }
    if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    const actions = {
      j: () => { mode = 'correct'; press('case-next', 'open'); },
      k: () => { mode = 'correct'; press('case-prev', 'open'); },
      a: () => { mode = 'correct'; press('approve-ft', 'approve'); },
      b: () => { mode = 'correct'; press('approve-base', 'approve'); },
      f: () => { mode = 'flag'; focusIn('review-note', 'flag'); },
      c: window.__policyopsCorrect,
      s: save,
      '?': () => toggleHelp(),
    };
    const act = actions[e.key];
    if (act) { e.preventDefault(); act(); }
  }, true);
}
"""
)
