"""The policy documents (``policies/docs/*.md``) and the sections that apply to a case.

Each document holds ``## `` sections; the line after a heading says where it applies:
``<!-- applies: request_types=return,exchange; regions=* -->``. The same text serves the
model's prompt and the human agent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from policies.schema import REGIONS, REQUEST_TYPES, Case

DOCS_DIR = Path(__file__).parent / "docs"
# Prompt order: general first, limits last (LIM-1 is applied last).
DOCUMENT_ORDER = (
    "general", "fraud_delivery", "cancellations", "warranty", "returns_exchanges",
    "regional_statutory", "escalation_limits",
)
_APPLIES = re.compile(r"<!--\s*applies:\s*request_types=([\w,*]+);\s*regions=([\w,*]+)\s*-->")


class PolicyDocumentError(ValueError):
    """A policy document is malformed; the message names the file and section."""


@dataclass(frozen=True)
class PolicySection:
    document: str
    title: str
    body: str
    request_types: frozenset[str]
    regions: frozenset[str]

    def applies_to(self, case: Case) -> bool:
        return case.request_type in self.request_types and case.region in self.regions

    def render(self) -> str:
        return f"## {self.title}\n{self.body}"


def _parse_list(raw: str, universe: tuple[str, ...], where: str) -> frozenset[str]:
    if raw == "*":
        return frozenset(universe)
    values = frozenset(v.strip() for v in raw.split(","))
    unknown = values - set(universe)
    if unknown:
        raise PolicyDocumentError(f"{where}: unknown value(s) {sorted(unknown)}")
    return values


def _parse_document(name: str, text: str) -> list[PolicySection]:
    sections = []
    for chunk in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        title, _, rest = chunk.partition("\n")
        where = f"{name}.md section {title.strip()!r}"
        match = _APPLIES.match(rest.strip())
        if not match:
            raise PolicyDocumentError(f"{where}: missing '<!-- applies: ... -->' line")
        body = rest.strip()[match.end():].strip()
        sections.append(PolicySection(
            document=name, title=title.strip(), body=body,
            request_types=_parse_list(match.group(1), REQUEST_TYPES, where),
            regions=_parse_list(match.group(2), REGIONS, where),
        ))
    return sections


@cache
def all_sections() -> tuple[PolicySection, ...]:
    """Every section of every document, in prompt order."""
    out: list[PolicySection] = []
    for name in DOCUMENT_ORDER:
        path = DOCS_DIR / f"{name}.md"
        out.extend(_parse_document(name, path.read_text(encoding="utf-8")))
    return tuple(out)


def applicable_sections(case: Case) -> list[PolicySection]:
    """The sections that apply to ``case`` (by request type and region), in prompt order."""
    return [s for s in all_sections() if s.applies_to(case)]


def policy_text(case: Case) -> str:
    """The applicable sections rendered as one Markdown text, for a prompt or an agent."""
    return "\n\n".join(s.render() for s in applicable_sections(case))
