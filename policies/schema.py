"""Case and answer schemas of the policy handbook (policy-spec.md sections 1 and 3).

Validation is strict: wrong types are never coerced, unknown fields are refused, and every
error names the field at fault. Use :func:`parse_case` / :func:`parse_answer` at every
boundary (CLI, console, dataset files); they raise :class:`InvalidCase` / :class:`InvalidAnswer`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from policies.text import IDENTIFIER, LINE_PATTERN, TEXT_PATTERN, TextRule

Region = Literal["US", "CA", "UK", "EU", "AU"]
RequestType = Literal["return", "exchange", "warranty", "not_received", "unauthorized_charge", "cancellation"]
Reason = Literal[
    "defective", "damaged_in_transit", "wrong_item", "changed_mind", "accidental_damage", "other",
    "not_received", "unauthorized",
]
Tier = Literal["standard", "plus", "vip"]
Category = Literal["electronics", "apparel", "home", "beauty", "grocery", "digital"]
OrderStatus = Literal["processing", "shipped", "delivered"]
Currency = Literal["USD", "CAD", "GBP", "EUR", "AUD"]
Decision = Literal[
    "APPROVE_REFUND", "APPROVE_REFUND_WITH_FEE", "APPROVE_EXCHANGE", "APPROVE_REPLACEMENT",
    "APPROVE_CANCELLATION", "DENY", "ESCALATE", "REQUEST_INFO",
]

REGIONS: tuple[str, ...] = get_args(Region)
REQUEST_TYPES: tuple[str, ...] = get_args(RequestType)
REASONS: tuple[str, ...] = get_args(Reason)
TIERS: tuple[str, ...] = get_args(Tier)
CATEGORIES: tuple[str, ...] = get_args(Category)
ORDER_STATUSES: tuple[str, ...] = get_args(OrderStatus)
DECISIONS: tuple[str, ...] = get_args(Decision)

CURRENCY_OF_REGION: dict[str, str] = {"US": "USD", "CA": "CAD", "UK": "GBP", "EU": "EUR", "AU": "AUD"}

_ITEM_REASONS = (
    "defective", "damaged_in_transit", "wrong_item", "changed_mind", "accidental_damage", "other",
)
REASONS_BY_REQUEST_TYPE: dict[str, tuple[str, ...]] = {
    "return": _ITEM_REASONS,
    "exchange": _ITEM_REASONS,
    "warranty": _ITEM_REASONS,
    "not_received": ("not_received",),
    "unauthorized_charge": ("unauthorized",),
    "cancellation": ("changed_mind", "other"),
}

MAX_MESSAGE_CHARS = 4000
MAX_ITEM_CHARS = 120
# Bounds on the answer's free text: they keep a constrained generation inside its token budget.
MAX_REASONING_CHARS = 400
MAX_CUSTOMER_RESPONSE_CHARS = 600
MAX_NEXT_ACTION_CHARS = 160
MAX_POLICY_REFS = 3

RULE_IDS: tuple[str, ...] = (
    "GEN-1", "FRD-1", "FRD-2", "FRD-3", "CAN-1", "CAN-2", "CAN-3", "NRC-1", "NRC-2", "NRC-3",
    "WAR-1", "WAR-2", "WAR-3", "WAR-4", "WAR-5", "WAR-6",
    "RET-1", "RET-2", "RET-3", "RET-4", "RET-5", "RET-6", "RET-7", "RET-8", "RET-9", "RET-10",
    "RET-11", "RET-12", "LIM-1",
)
RuleId = Literal[RULE_IDS]  # type: ignore[valid-type]

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)

# Every text field is checked by policies/text.py (control, bidi and zero-width characters, lone
# surrogates, length): identifiers by a printable pattern, the item as one printable line, the
# message and the answer's prose as multiline text (\n and \t allowed).
Identifier = Annotated[str, IDENTIFIER]
ItemName = Annotated[str, TextRule(MAX_ITEM_CHARS, min_chars=1, kind="line")]


class Customer(BaseModel):
    model_config = _STRICT
    id: Identifier
    tier: Tier
    claims_last_12m: int = Field(ge=0, le=10_000)


class Order(BaseModel):
    model_config = _STRICT
    id: Identifier
    category: Category
    item: ItemName
    price: float = Field(gt=0, le=1e9, allow_inf_nan=False)
    currency: Currency
    final_sale: bool
    status: OrderStatus
    days_since_delivery: int | None = Field(ge=0, le=100_000)
    opened: bool
    signature_confirmed: bool

    @field_validator("price", mode="before")
    @classmethod
    def _price_is_a_number(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError("must be a number")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return float(v)

    @model_validator(mode="after")
    def _days_only_when_delivered(self) -> Order:
        if self.status != "delivered" and self.days_since_delivery is not None:
            raise _FieldError("days_since_delivery", f"must be null while status is {self.status!r} "
                              f"(got {self.days_since_delivery})")
        return self


class Case(BaseModel):
    """One customer-service case (policy-spec.md section 1)."""

    model_config = _STRICT
    case_id: Identifier
    region: Region
    request_type: RequestType
    reason: Reason
    message: Annotated[str, TextRule(MAX_MESSAGE_CHARS)]
    customer: Customer
    order: Order

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Case:
        allowed = REASONS_BY_REQUEST_TYPE[self.request_type]
        if self.reason not in allowed:
            raise _FieldError("reason", f"{self.reason!r} is not allowed for request_type "
                              f"{self.request_type!r} (allowed: {', '.join(allowed)})")
        expected_currency = CURRENCY_OF_REGION[self.region]
        if self.order.currency != expected_currency:
            raise _FieldError("order.currency", f"{self.order.currency!r} is not the currency of region "
                              f"{self.region!r} (expected {expected_currency!r})")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Answer(BaseModel):
    """The model's answer (policy-spec.md section 3).

    Field order is the order the model writes them (the JSON schema of constrained decoding and
    the SFT targets follow it): the decision, then the short structured fields that follow from
    the deciding rule (policy_refs, next_action), then the free text. A JSON object's keys are
    unordered, so this is the handbook's answer; putting the rule ids right after the decision lets
    a small model learn them within a short training length, before the long text.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    decision: Decision
    policy_refs: list[RuleId] = Field(min_length=1, max_length=MAX_POLICY_REFS)  # type: ignore[valid-type]
    next_action: Annotated[str, TextRule(MAX_NEXT_ACTION_CHARS, min_chars=1)]
    reasoning: Annotated[str, TextRule(MAX_REASONING_CHARS, min_chars=1)]
    customer_response: Annotated[str, TextRule(MAX_CUSTOMER_RESPONSE_CHARS, min_chars=1)]


class _FieldError(ValueError):
    """Raised inside validators to report an error on a field other than the model itself."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class InvalidInput(ValueError):
    """A case or answer broke its schema. ``errors`` lists (field, message) pairs; str() names them all."""

    kind = "input"

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in errors))

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.errors]


class InvalidCase(InvalidInput):
    kind = "case"


class InvalidAnswer(InvalidInput):
    kind = "answer"


def _errors_of(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        ctx = err.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, _FieldError):
            # The validator's field is relative to the model it validates (loc): "order" + "currency".
            field, msg = ".".join((*map(str, err["loc"]), inner.field)), inner.message
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "field required"
            elif err["type"] == "extra_forbidden":
                msg = "unknown field"
        out.append((field, msg))
    return out


MAX_ABS_INT = 2**53  # integers beyond this are not exact in JSON numbers (nor fit a float field)


def out_of_range_numbers(data: Any) -> list[tuple[str, str]]:
    """(field, message) for every integer in ``data`` beyond +-MAX_ABS_INT (``price=10**400``),
    found before pydantic converts one to a float and fails with an OverflowError naming nothing.
    Walks with a stack, so nesting as deep as :func:`json.loads` allows cannot exhaust recursion."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}" if path else str(i), v) for i, v in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ABS_INT:
            found.append((path or "<root>", f"number out of range (at most {MAX_ABS_INT} in size)"))
    return sorted(found)


def parse_case(data: Any) -> Case:
    """Validate a case from a JSON-like dict. Raises :class:`InvalidCase` naming every bad field."""
    if not isinstance(data, dict):
        raise InvalidCase([("<root>", f"a case must be a JSON object, got {type(data).__name__}")])
    if huge := out_of_range_numbers(data):
        raise InvalidCase(huge)
    try:
        return Case.model_validate(data)
    except ValidationError as exc:
        raise InvalidCase(_errors_of(exc)) from None


def parse_answer(data: Any) -> Answer:
    """Validate an answer from a JSON-like dict. Raises :class:`InvalidAnswer` naming every bad field."""
    if not isinstance(data, dict):
        raise InvalidAnswer([("<root>", f"an answer must be a JSON object, got {type(data).__name__}")])
    if huge := out_of_range_numbers(data):
        raise InvalidAnswer(huge)
    try:
        return Answer.model_validate(data)
    except ValidationError as exc:
        raise InvalidAnswer(_errors_of(exc)) from None


def answer_json_schema() -> dict[str, Any]:
    """The JSON schema a constrained decoder enforces: the Answer model, fields in their spec order.

    Its prose fields carry a pattern refusing what :func:`parse_answer` refuses (control, bidi and
    zero-width characters), so a constrained answer always validates. The model writes each of them
    on one line, as every training answer is written: no ``\\n`` or ``\\t``, whose ``\\u000a``-style
    escapes the grammar would also admit and :func:`json.dumps` never writes. A reviewer's correction
    may still hold both.
    """
    schema = Answer.model_json_schema()
    schema.pop("title", None)
    for prop in schema["properties"].values():
        prop.pop("title", None)
        if prop.get("pattern") == TEXT_PATTERN:
            prop["pattern"] = LINE_PATTERN
    return schema
