"""Training pools that cannot leak: one key for "the same case, as far as the model can tell".

A model never sees a case's ids, and a tiny model never sees its message either (its prompt format
drops them), so two cases that differ only there are one case to it. Two keys catch that:

- :func:`fields_key`: SHA-256 of the case's *deciding fields*, every field except ``case_id``,
  ``customer.id``, ``order.id`` and ``message``, as canonical JSON. It needs no prompt format.
- :func:`prompt_key`: SHA-256 of the prompt the model reads in a format (the system and user turns of
  :func:`policies.prompt.build_messages`); a ``{"messages": [...]}`` row (an export) is keyed by
  its own system and user turns, which were rendered that way.

Every :class:`~policies.prompt.PromptFormat` renders all deciding fields (JSON: the whole case;
``fields``: all but ids and message), and the system turn depends on the deciding fields only, so
equal prompt keys in any format imply equal fields keys. Hence deduplicating generator rows by
fields key removes every prompt-key collision too; the prompt key still matters for ``messages``
rows, whose case cannot always be read back (:func:`row_keys` reads it back when it can).

The frozen sets (the eval set, and the out-of-distribution stress set once it exists) are never
trained on: :func:`frozen_keys` loads them, :func:`find_leaks` names the rows of a pool that match
them, :class:`TrainingPoolLeak` is the error. Checked where data is made or used for training:
the generator (:func:`policies.synth.write_splits`), the export of reviewed answers
(``app.services.exports``), the start of training (``engine.training.train``) and the base model's
language-model corpus (``engine.lm_corpus``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.prompt import PromptFormat, build_messages
from policies.schema import Case, InvalidInput, parse_case

__all__ = [
    "DEFAULT_FROZEN_SETS", "KNOWN_FORMATS", "FrozenKeys", "FrozenSetError", "Leak", "TrainingPoolLeak",
    "fields_key", "find_leaks", "frozen_keys", "iter_jsonl", "messages_prompt_key", "prompt_key",
    "resolve_frozen_paths", "row_keys",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
# The sets no training pool may share a case with (paths relative to the working dir or the repo).
DEFAULT_FROZEN_SETS: tuple[str, ...] = ("data/generated/eval.jsonl", "data/generated/stress.jsonl")
_DEFAULT_FORMAT = PromptFormat()
# The prompt formats in use: real models' (the default) and the tiny embedded model's.
KNOWN_FORMATS: tuple[PromptFormat, ...] = (
    _DEFAULT_FORMAT,
    PromptFormat(policy="titles", instructions="short", max_message_chars=0, case="fields"),
)
SHOWN = 20  # leaking rows named in an error message

# The deciding fields, flat, in the order the ``fields`` prompt format shows them; their JSON types.
_TOP = ("region", "request_type", "reason")
_CUSTOMER = ("tier", "claims_last_12m")
_ORDER = ("category", "item", "price", "currency", "final_sale", "status", "days_since_delivery",
          "opened", "signature_confirmed")
_STRINGS = frozenset({"region", "request_type", "reason", "tier", "category", "item", "currency", "status"})
_DECIDING = (*_TOP, *_CUSTOMER, *_ORDER)


def _sha(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _flat_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The deciding fields of a case dict (nested as the schema has it), flat; price as a float."""
    flat = {k: data[k] for k in _TOP}
    flat.update({k: data["customer"][k] for k in _CUSTOMER})
    flat.update({k: data["order"][k] for k in _ORDER})
    flat["price"] = float(flat["price"])
    return flat


def fields_key(case: Case | Mapping[str, Any]) -> str:
    """SHA-256 of the case's deciding fields: every field but case_id, customer.id, order.id, message."""
    data = case.to_json_dict() if isinstance(case, Case) else case
    return _sha(_flat_fields(data))


def messages_prompt_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of the prompt turns (every turn but the assistant's answer): role and content."""
    return _sha([[m.get("role"), m.get("content")] for m in messages if m.get("role") != "assistant"])


def prompt_key(case: Case, fmt: PromptFormat = _DEFAULT_FORMAT) -> str:
    """SHA-256 of the prompt the model reads for ``case`` in ``fmt`` (build_messages' system + user)."""
    return messages_prompt_key(build_messages(case, fmt))


def _fields_of_user_turn(text: str) -> dict[str, Any] | None:
    """The deciding fields read back from a rendered user turn (JSON or ``key=value`` lines), or None."""
    if text.startswith("{"):
        try:
            return _flat_fields(parse_case(json.loads(text)).to_json_dict())
        except (ValueError, KeyError, TypeError):
            return None
    flat: dict[str, Any] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if not sep or key == "message":
            break
        if key not in _DECIDING or key in flat:
            return None
        try:  # policies.prompt.case_fields writes json.dumps(value) without its quotes
            flat[key] = json.loads(f'"{value}"' if key in _STRINGS else value)
        except json.JSONDecodeError:
            return None
    if set(flat) != set(_DECIDING) or not isinstance(flat["price"], int | float):
        return None
    flat["price"] = float(flat["price"])
    return flat


def row_keys(row: Mapping[str, Any], fmt: PromptFormat) -> dict[str, str]:
    """``{"fields": ..., "prompt": ...}`` of a dataset row in ``fmt``.

    A generator row ``{"input": case, ...}`` (SFT or preference) is rendered in ``fmt``; a
    ``{"messages": [...]}`` row, or a preference row ``{"prompt": [...], "chosen", "rejected"}``, is
    keyed by its own system + user turns (its fields key only when the user turn can be read back).
    Raises ValueError for a row that is none of these, or whose case is invalid.
    """
    if "input" in row:
        case = parse_case(row["input"])
        return {"fields": fields_key(case), "prompt": prompt_key(case, fmt)}
    messages = row.get("messages", row.get("prompt"))
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise ValueError("a row needs 'input' (a case), 'messages' (chat turns) "
                         "or 'prompt' (preference turns)")
    keys = {"prompt": messages_prompt_key(messages)}
    user = [m.get("content") for m in messages if m.get("role") == "user"]
    if len(user) == 1 and isinstance(user[0], str):
        flat = _fields_of_user_turn(user[0])
        if flat is not None:
            keys["fields"] = _sha(flat)
    return keys


def _label(where: str, row: Mapping[str, Any]) -> str:
    """``path:line (case id)``: where a row is, and its id when it has one."""
    ident = None
    if isinstance(row, Mapping):
        case = row.get("input")
        ident = row.get("id") or (case.get("case_id") if isinstance(case, Mapping) else None)
    return f"{where} ({ident})" if isinstance(ident, str) and ident else where


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, Any]]:
    """``("path:line", row)`` for every non-blank line of a JSONL file (rows as parsed JSON)."""
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if line.strip():
                yield f"{path}:{line_no}", json.loads(line)


class FrozenSetError(ValueError):
    """A frozen set's file is unreadable or holds a bad row; the message names ``path:line``."""


@dataclass
class FrozenKeys:
    """The keys of the frozen sets in one prompt format: key -> ``path:line (case id)`` of its row."""

    fmt: PromptFormat
    paths: list[str] = field(default_factory=list)  # the files loaded (missing ones are not)
    fields: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.fields) + len(self.prompts)

    def match(self, keys: Mapping[str, str]) -> tuple[str, str] | None:
        """(which key, the frozen row) for the first of ``keys`` found (fields first), or None."""
        if keys.get("fields") in self.fields:
            return "fields", self.fields[keys["fields"]]
        if keys.get("prompt") in self.prompts:
            return "prompt", self.prompts[keys["prompt"]]
        return None

    def match_case(self, case: Case) -> tuple[str, str] | None:
        return self.match({"fields": fields_key(case), "prompt": prompt_key(case, self.fmt)})


def resolve_frozen_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The frozen sets that exist: a relative path is tried in the working dir, then the repo root."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        for candidate in (path,) if path.is_absolute() else (path, REPO_ROOT / path):
            if candidate.is_file():
                out.append(candidate)
                break
    return out


def frozen_keys(paths: Iterable[str | Path] = DEFAULT_FROZEN_SETS,
                fmt: PromptFormat = _DEFAULT_FORMAT) -> FrozenKeys:
    """The fields and prompt keys (in ``fmt``) of every row of the frozen sets that exist.

    Rows are generator rows ``{"input": case}`` or ``messages`` rows. Raises :class:`FrozenSetError`
    naming ``path:line`` for a row that is not valid JSON or not a valid case.
    """
    frozen = FrozenKeys(fmt)
    for path in resolve_frozen_paths(paths):
        frozen.paths.append(str(path))
        try:
            for where, row in iter_jsonl(path):
                try:
                    keys = row_keys(row, fmt)
                except (InvalidInput, ValueError, TypeError, AttributeError) as exc:
                    raise FrozenSetError(f"frozen set {where}: {exc}") from None
                label = _label(where, row)
                for kind, table in (("fields", frozen.fields), ("prompt", frozen.prompts)):
                    if kind in keys:
                        table.setdefault(keys[kind], label)
        except json.JSONDecodeError as exc:
            raise FrozenSetError(f"frozen set {path}: a line is not valid JSON ({exc.msg})") from None
    return frozen


@dataclass(frozen=True)
class Leak:
    """A pool row that matches a frozen row: where each is, and by which key (fields / prompt)."""

    row: str  # "path:line (id)" of the pool row
    frozen: str  # "path:line (id)" of the frozen row
    key: str

    def __str__(self) -> str:
        return f"{self.row} ~ {self.frozen} by {self.key} key"


class TrainingPoolLeak(ValueError):
    """Rows of a training pool match a frozen set's rows; the message names the first 20 and the count."""

    def __init__(self, leaks: Sequence[Leak], what: str = "training row(s)"):
        self.leaks = list(leaks)
        shown = "; ".join(str(leak) for leak in self.leaks[:SHOWN])
        more = f"; and {len(self.leaks) - SHOWN} more" if len(self.leaks) > SHOWN else ""
        super().__init__(
            f"{len(self.leaks)} {what} match a frozen evaluation set (same deciding fields or the same "
            f"prompt, ids and message aside): {shown}{more}"
        )


def find_leaks(rows: Iterable[tuple[str, Mapping[str, Any]] | Mapping[str, Any]], frozen: FrozenKeys,
               fmt: PromptFormat | None = None) -> list[Leak]:
    """Every row of ``rows`` whose fields key or prompt key (in ``fmt``) is a frozen row's.

    ``rows``: ``(where, row)`` pairs (as :func:`iter_jsonl` yields) or bare rows (named by their id,
    else their position). ``fmt`` must be the format ``frozen`` was keyed in (default: that one).
    A row that cannot be keyed raises ValueError naming it.
    """
    fmt = frozen.fmt if fmt is None else fmt
    if fmt != frozen.fmt:
        raise ValueError(f"frozen keys are in format {frozen.fmt}, the rows in {fmt}: key both in one")
    leaks = []
    for i, item in enumerate(rows):
        where, row = item if isinstance(item, tuple) else (f"#{i + 1}", item)
        try:
            keys = row_keys(row, fmt)
        except (InvalidInput, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{where}: cannot key the row: {exc}") from None
        hit = frozen.match(keys)
        if hit is not None:
            leaks.append(Leak(_label(where, row), hit[1], hit[0]))
    return leaks
