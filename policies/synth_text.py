"""The words of the synthetic dataset: customer messages and reference answers.

:func:`customer_message` writes a varied, realistic message for a case's structured fields
(many phrasings per request type and reason, greetings, sign-offs, irrelevant detail,
occasional typos). :func:`reference_answer` writes the full answer the rule engine expects:
the reasoning cites the deciding rule id(s) and facts, the customer response is an
empathetic template personalised with the item, and the next action follows the rule.
The answer text is mostly deterministic per rule (a small model must learn it); the light
variation is chosen by a stable hash of the case id, so the same case always gets the same answer.
"""

from __future__ import annotations

import hashlib
import random

from policies.rules import AUTO_LIMIT, WARRANTY_DAYS, expected_decision, return_window
from policies.schema import Answer, Case, parse_answer

# --- customer messages ----------------------------------------------------------------------------
GREETINGS = ("Hi,", "Hello,", "Hi there,", "Hey,", "Good morning,", "Good afternoon,", "Dear support team,",
             "Hello team,", "Hiya,", "To whom it may concern,", "", "", "")
SIGN_OFFS = ("Thanks,", "Thank you,", "Cheers,", "Regards,", "Best,", "Many thanks,", "Kind regards,",
             "Thanks in advance!", "", "", "")
NAMES = ("Maria", "James", "Priya", "Tom", "Aisha", "Lukas", "Chloe", "Daniel", "Mei", "Olivia", "Jack",
         "Sofia", "Noah", "Fatima", "Liam", "Hannah", "Mateo", "Emma", "Ravi", "Grace", "")
ASIDES = (
    "It was meant to be a birthday present.", "I've been a customer for years.",
    "Sorry for the long message, it's been a hectic week.", "My neighbour recommended your shop.",
    "I'm writing this from my phone so excuse any typos.", "I already tried the chat but it timed out.",
    "We're moving house next month so timing matters.", "I bought it during the sale.",
    "My kids were really looking forward to it.", "I work nights so email is best.",
    "I still have the original box.", "The courier was very friendly, to be fair.",
    "I also ordered a few other things which were fine.", "Please let me know what you need from me.",
)

# Phrasings per (request_type, reason); {item} is the item name in lower case.
BODIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("return", "defective"): (
        "The {item} I bought stopped working and I'd like to return it for a refund.",
        "E|my {item} is faulty - it won't turn on at all. I want to send it back and get my money back.",
        "E|The {item} doesn't work properly, keeps cutting out. Can I return it please?",
        "I'm really disappointed, the {item} has a defect right out of the box. Refund please.",
        "{Item} is broken, it just doesn't do what it should. How do I return it?",
    ),
    ("return", "damaged_in_transit"): (
        "The {item} arrived damaged, the box was crushed and it's cracked. I'd like a refund.",
        "my {item} came broken in the post. I want to return it.",
        "The parcel was clearly dropped - the {item} inside is dented. Please refund me.",
        "Unfortunately the {item} was damaged during delivery. Can I send it back for my money?",
    ),
    ("return", "wrong_item"): (
        "You sent me the wrong item - I ordered the {item} and got something completely different. "
        "Refund please.",
        "This isn't what I ordered. The package should have been the {item}. I'd like to return it.",
        "Wrong product in the box, not my {item}. I just want my money back.",
        "I received someone else's order instead of the {item}. Please arrange a return and refund.",
    ),
    ("return", "changed_mind"): (
        "I've changed my mind about the {item} and would like to return it.",
        "the {item} is fine but I don't need it anymore. Can I get a refund?",
        "I ordered the {item} but honestly it's not for me. I'd like to send it back.",
        "Bought the {item} on impulse, I'd like to return it please.",
        "The {item} just doesn't suit me, nothing wrong with it. Return and refund?",
    ),
    ("return", "accidental_damage"): (
        "I dropped the {item} and now it's broken. Can I return it?",
        "My toddler knocked the {item} off the table and it cracked. I'd like a refund.",
        "E|I accidentally spilled water on the {item}, it doesn't work now. Can I send it back?",
        "I'm embarrassed to say I broke the {item} myself. Is a return possible?",
    ),
    ("return", "other"): (
        "I need to return the {item}, it's a bit complicated to explain.",
        "I want to return the {item} for personal reasons.",
        "Can I return the {item}? There's an issue I'd rather discuss with someone.",
        "The {item} isn't working out for a reason not in your list. I'd like to return it.",
    ),
    ("exchange", "defective"): (
        "The {item} is faulty, can I swap it for a working one?",
        "my {item} has a defect, I'd like an exchange please.",
        "The {item} stopped working after a few uses. I'd like to exchange it.",
        "{Item} is defective - please send me a replacement in exchange.",
    ),
    ("exchange", "damaged_in_transit"): (
        "The {item} arrived damaged. Can I exchange it for a new one?",
        "Box was soaked and the {item} is damaged. I'd like to swap it.",
        "The {item} got damaged in shipping, please exchange it.",
    ),
    ("exchange", "wrong_item"): (
        "I received the wrong item instead of the {item}. I'd like to exchange it for what I ordered.",
        "Wrong size/colour of the {item} was sent. Can we swap it?",
        "This isn't the {item} I ordered, please exchange it for the right one.",
    ),
    ("exchange", "changed_mind"): (
        "I'd like to exchange the {item} for a different colour.",
        "Could I swap the {item} for another size? I've changed my mind.",
        "E|The {item} isn't quite what I wanted, can I exchange it for a different model?",
        "I'd prefer a different version of the {item}, is an exchange possible?",
    ),
    ("exchange", "accidental_damage"): (
        "I accidentally broke the {item}. Could I exchange it?",
        "I dropped the {item} and it's cracked, can I swap it for a new one?",
        "My dog chewed the {item}. Any chance of an exchange?",
    ),
    ("exchange", "other"): (
        "I'd like to exchange the {item}, the reason isn't in your form.",
        "Can I exchange the {item}? It's a long story.",
        "I need to swap the {item} for something else, for a reason I'd rather explain to a person.",
    ),
    ("warranty", "defective"): (
        "My {item} has stopped working and I'd like to make a warranty claim.",
        "The {item} developed a fault. Is it still under warranty?",
        "E|Warranty claim please: the {item} won't power on anymore.",
        "The {item} broke down on its own, I believe it's covered by the warranty.",
    ),
    ("warranty", "damaged_in_transit"): (
        "The {item} was damaged in delivery and I only noticed now. Warranty claim please.",
        "I found shipping damage on the {item}. Can the warranty cover it?",
        "The {item} had transport damage I missed at first. I'd like a warranty replacement.",
    ),
    ("warranty", "wrong_item"): (
        "E|I realised the {item} I got is the wrong model. Can the warranty sort this out?",
        "E|Turns out you sent the wrong version of the {item}. I'd like a warranty replacement.",
        "The {item} isn't the one on my invoice. Warranty claim please.",
    ),
    ("warranty", "changed_mind"): (
        "I don't really like the {item} anymore, can I use the warranty to get a new one?",
        "Can my warranty cover swapping the {item}? I just don't want this one now.",
        "I'd like to claim on the warranty for the {item}, I've changed my mind about it.",
    ),
    ("warranty", "accidental_damage"): (
        "E|I dropped the {item} and the screen cracked. Is that covered by warranty?",
        "I accidentally damaged the {item}. Can I claim on the warranty?",
        "Spilled coffee on the {item}. Warranty claim please.",
    ),
    ("warranty", "other"): (
        "I have a warranty question about the {item} that doesn't fit your categories.",
        "Something odd is going on with the {item}, I'd like to open a warranty claim.",
        "The {item} has an issue I can't really describe in the form. Warranty please.",
    ),
    ("not_received", "not_received"): (
        "I never received my {item}.",
        "Where is my {item}? It hasn't arrived.",
        "My order with the {item} still hasn't turned up.",
        "The {item} hasn't been delivered, I've checked with the neighbours and the mailroom.",
        "Still waiting on the {item}. Nothing at my door.",
    ),
    ("unauthorized_charge", "unauthorized"): (
        "There's a charge on my card for a {item} that I never ordered.",
        "I don't recognise this order for a {item}. Someone used my card.",
        "I was charged for a {item} I didn't buy. Please look into this.",
        "My account shows a purchase of a {item} that wasn't me. I think my account was hacked.",
    ),
    ("cancellation", "changed_mind"): (
        "Please cancel my order for the {item}, I've changed my mind.",
        "I'd like to cancel the {item}, I don't need it anymore.",
        "Can you cancel my {item} order? I found it cheaper elsewhere.",
        "Cancel the {item} please, ordered it by mistake.",
    ),
    ("cancellation", "other"): (
        "I need to cancel my order for the {item}.",
        "Please cancel the {item} order, personal circumstances.",
        "Could you cancel the {item}? I'd rather not go into why.",
    ),
}

LEGAL_LINES = ("If this isn't sorted I'll be talking to my lawyer.", "I'll take this to small claims court.",
               "I know my consumer protection rights.")
CHARGEBACK_LINES = ("Otherwise I'll file a chargeback with my bank.",
                    "I'm ready to call my bank and reverse the charge.")


def _timing_clause(case: Case, rng: random.Random) -> str:
    o = case.order
    if case.request_type == "not_received":
        if o.status == "delivered":
            return rng.choice(("Tracking says it was delivered but there's nothing here.",
                               "The app says delivered, but I never got it.",
                               f"It shows as delivered {o.days_since_delivery} days ago, but nothing came."))
        return rng.choice(("It was supposed to be here by now.", "Tracking hasn't updated in days.",
                           "It's been ages since I ordered."))
    if o.status == "processing":
        return rng.choice(("I only ordered it yesterday.", "It hasn't even shipped yet.", ""))
    if o.status == "shipped":
        return rng.choice(("It's still in transit.", "Tracking says it's on its way.", ""))
    days = o.days_since_delivery
    if days is None:
        return rng.choice(("It arrived a while ago.", "I can't remember exactly when it came.", ""))
    if days <= 1:
        return rng.choice(("It arrived yesterday.", "It only came today.", f"Delivered {days} day(s) ago."))
    return rng.choice((f"It arrived {days} days ago.", f"I received it {days} days ago.",
                       f"Delivered {days} days ago.", f"Got it {days} days back.", ""))


def _typo(text: str, rng: random.Random) -> str:
    """Swap two neighbouring letters in one or two words: customers type fast."""
    words = text.split(" ")
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 3 and w.isalpha():
            j = rng.randrange(len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def customer_message(case: Case, rng: random.Random) -> str:
    """A customer's free-text message consistent with ``case``'s fields (its message is ignored)."""
    item = case.order.item
    # "E|" phrasings talk about screens and power: only for electronics.
    bodies = [b for b in BODIES[(case.request_type, case.reason)]
              if case.order.category == "electronics" or not b.startswith("E|")]
    body = rng.choice(bodies).removeprefix("E|")
    body = body.replace("{item}", item.lower()).replace("{Item}", item)
    parts = [rng.choice(GREETINGS), body, _timing_clause(case, rng)]
    for _ in range(rng.choices((0, 1, 2, 3), (55, 28, 12, 5))[0]):
        parts.append(rng.choice(ASIDES))
    if rng.random() < 0.04:
        parts.append(rng.choice(LEGAL_LINES))
    if rng.random() < 0.04 or (case.request_type == "unauthorized_charge" and rng.random() < 0.2):
        parts.append(rng.choice(CHARGEBACK_LINES))
    sign_off, name = rng.choice(SIGN_OFFS), rng.choice(NAMES)
    parts.append(f"{sign_off} {name}".strip())
    text = " ".join(p for p in parts if p)
    if rng.random() < 0.15:
        text = _typo(text, rng)
    if rng.random() < 0.1:
        text = text.lower()
    return text


# --- reference answers ----------------------------------------------------------------------------
_REASON_WORDS = {"defective": "defective item", "damaged_in_transit": "item damaged in transit",
                 "wrong_item": "wrong item sent", "changed_mind": "change of mind",
                 "accidental_damage": "accidental damage", "other": "reason 'other'"}


def _variant(case: Case, salt: str, n: int) -> int:
    digest = hashlib.sha256(f"{case.case_id}:{salt}".encode()).digest()
    return digest[0] % n


def _money(case: Case, amount: float) -> str:
    return f"{amount:.2f} {case.order.currency}"


def _facts(case: Case, rule: str) -> str:
    """The deciding facts of ``rule`` for ``case``, as one clause of the reasoning."""
    o, days = case.order, case.order.days_since_delivery
    reason = _REASON_WORDS.get(case.reason, case.reason)
    window = return_window(case)
    vip = " incl. VIP +30" if case.customer.tier == "vip" else ""
    warranty = WARRANTY_DAYS[case.region]
    claims = case.customer.claims_last_12m
    return {
        "GEN-1": f"{case.request_type} on a delivered order with unknown days since delivery",
        "FRD-1": "unauthorized charge claim, which goes to the fraud team",
        "FRD-2": f"customer has {claims} claims in the last 12 months (5 or more)",
        "FRD-3": f"not-received claim from a customer with {claims} claims in the last 12 months (3 or more)",
        "CAN-1": "cancellation while the order is still processing",
        "CAN-2": f"cancellation of a shipped order in {case.region}, where the distance-selling right "
                 "applies",
        "CAN-3": f"cancellation of an order that is already {o.status}" + (
            "" if o.status == "delivered" else f" outside UK/EU ({case.region})"),
        "NRC-1": f"order is {o.status}, not delivered yet, so it is still on its way",
        "NRC-2": "carrier marked it delivered with a confirmed signature",
        "NRC-3": "carrier marked it delivered without a signature",
        "WAR-1": f"warranty claim on an order that is {o.status}, not delivered",
        "WAR-2": f"{o.category} is not covered by warranty (electronics and home only)",
        "WAR-3": f"{days} days since delivery, beyond the {warranty}-day warranty in {case.region}",
        "WAR-4": f"{reason}, {days} days since delivery, within the {warranty}-day warranty",
        "WAR-5": f"warranty claim with reason 'other', {days} days since delivery",
        "WAR-6": f"{reason} is not covered by warranty",
        "RET-1": f"{case.request_type} requested while the order is {o.status}, not delivered",
        "RET-2": f"{case.request_type} with reason 'other' needs a human",
        "RET-3": f"{reason}, {days} days since delivery, within the {window}-day window{vip}",
        "RET-4": f"{reason}, {days} days since delivery, beyond the {window}-day window{vip} but within "
                 f"the {warranty}-day warranty for {o.category}",
        "RET-5": f"{reason}, {days} days since delivery, beyond the {window}-day window{vip} and not "
                 f"covered by warranty ({o.category})",
        "RET-6": "accidental damage is not covered",
        "RET-7": f"change of mind on {o.category}, which is not returnable",
        "RET-8": f"change of mind {days} days after delivery in {case.region}: statutory 14-day right, "
                 "even if final sale or opened, no fee",
        "RET-9": "change of mind on a final-sale item",
        "RET-10": f"change of mind {days} days after delivery, beyond the {window}-day window{vip}",
        "RET-11": f"change of mind on opened electronics, {days} days since delivery, within the "
                  f"{window}-day window" + (": 15% restocking fee" if case.request_type == "return" else ""),
        "RET-12": f"change of mind, {days} days since delivery, within the {window}-day window{vip}",
    }[rule]


def _reasoning(case: Case) -> str:
    exp = expected_decision(case)
    text = f"{exp.rule}: {_facts(case, exp.rule)}."
    if exp.limit_applied:
        limit = AUTO_LIMIT[case.region]
        text += (f" LIM-1: the {exp.before_limit} of {_money(case, case.order.price)} is above the "
                 f"{case.region} AUTO_LIMIT of {_money(case, limit)}, so it is escalated.")
    return f"{text} Decision: {exp.decision}."


_RESPONSES: dict[str, tuple[str, ...]] = {
    "REQUEST_INFO": (
        "Thank you for reaching out about your {item}. So we can help, could you tell us the date it was "
        "delivered? Once we have it we'll look at your request straight away.",
        "Thanks for getting in touch about your {item}. We're missing the delivery date on our side - could "
        "you let us know when it arrived? Then we can take it from there.",
    ),
    "ESCALATE": (
        "Thank you for contacting us about your {item}. I've passed your case to a specialist team who "
        "will review it carefully and get back to you shortly.",
        "I'm sorry for the trouble with your {item}. Your case needs a colleague's review, so I've handed "
        "it over and they will contact you soon.",
    ),
    "ESCALATE+LIM-1": (
        "Thank you for your patience. Because of the amount, a refund for your {item} needs a "
        "supervisor's approval; I've passed it on and they will get back to you shortly.",
        "I'm sorry about your {item}. Refunds of this size are approved by a supervisor, so I've sent "
        "your case to them and you'll hear from us soon.",
    ),
    "APPROVE_CANCELLATION": (
        "Good news: your order for the {item} has been cancelled and you won't be charged. Sorry it "
        "didn't work out this time.",
        "Your order for the {item} is cancelled. Any payment will be refunded to your original payment "
        "method.",
    ),
    "APPROVE_REFUND": (
        "I'm sorry about your {item}. We've approved a full refund of {price}, which will reach your "
        "original payment method within 5-10 business days.",
        "Thank you for your patience. Your refund of {price} for the {item} is approved and on its way "
        "to your original payment method.",
    ),
    "APPROVE_REFUND_WITH_FEE": (
        "We've approved the return of your {item}. As it has been opened, a 15% restocking fee applies, so "
        "you'll receive {net} back to your original payment method.",
        "Your return of the {item} is approved. Because it's opened electronics, a 15% restocking fee is "
        "deducted and {net} will be refunded.",
    ),
    "APPROVE_EXCHANGE": (
        "Happy to help! Your exchange for the {item} is approved. We'll email a prepaid return label and "
        "send the new item as soon as we receive yours.",
        "Your exchange of the {item} is approved. You'll get a return label by email, and we'll ship the "
        "replacement once the original is back with us.",
    ),
    "APPROVE_REPLACEMENT": (
        "I'm sorry your {item} let you down. We'll send you a replacement at no cost; a prepaid label for "
        "the faulty one will follow by email.",
        "Thank you for letting us know about your {item}. A free replacement is approved and we'll email "
        "you a return label for the original.",
    ),
}

# DENY responses depend on why: one explanation per denying rule.
_DENY_WHY: dict[str, str] = {
    "CAN-3/shipped": "your order for the {item} has already left our warehouse, so it can no longer be "
                     "cancelled. Once it arrives you're welcome to request a return",
    "CAN-3/delivered": "your order for the {item} has already been delivered, so it can no longer be "
                       "cancelled. You're welcome to request a return instead",
    "NRC-1": "your {item} is still on its way to you. We'll share the latest tracking so you can follow it",
    "WAR-1": "a warranty claim can only be made once the {item} has been delivered",
    "WAR-2": "our warranty covers electronics and home goods only, so it doesn't extend to your {item}",
    "WAR-3": "your {item} is past its warranty period, so we can't offer a replacement under warranty",
    "WAR-6": "the warranty on your {item} covers faults, not accidental damage or a change of mind",
    "RET-1": "your {item} hasn't been delivered yet, so it can't be returned. We can help you cancel the "
             "order instead",
    "RET-5": "your {item} is outside the return window and not covered by warranty",
    "RET-6": "accidental damage to your {item} isn't covered by our return policy",
    "RET-7": "grocery and digital items like your {item} can't be returned for a change of mind",
    "RET-9": "your {item} was a final-sale item, which can't be returned for a change of mind",
    "RET-10": "your {item} is outside the return window for change-of-mind returns",
}
_DENY_OPENERS = ("I'm sorry, but {why}.", "Thank you for contacting us. Unfortunately {why}.",
                 "I understand this is frustrating, and I'm sorry: {why}.")

_NEXT_ACTIONS: dict[str, str] = {
    "GEN-1": "Ask the customer for the delivery date, then re-evaluate the request.",
    "FRD-1": "Hand the case to the fraud team; do not refund.",
    "FRD-2": "Hand the case to the fraud team for review of the claim history.",
    "FRD-3": "Hand the case to the fraud team for review of the delivery claims.",
    "CAN-1": "Cancel the order before it ships and void the payment.",
    "CAN-2": "Cancel the order, arrange the return of the shipment and refund on receipt.",
    "CAN-3": "Explain the return process; the customer can request a return after delivery.",
    "NRC-1": "Share the tracking link and delivery estimate with the customer.",
    "NRC-2": "Open a carrier investigation with the signature record.",
    "NRC-3": "Issue the refund to the original payment method.",
    "WAR-1": "Share the tracking; a warranty claim can be opened after delivery.",
    "WAR-2": "Close the claim; no warranty for this category.",
    "WAR-3": "Close the claim; offer paid repair options if available.",
    "WAR-4": "Ship a replacement and email a prepaid return label.",
    "WAR-5": "Hand the warranty claim to a specialist for review.",
    "WAR-6": "Close the claim; no warranty cover for this reason.",
    "RET-1": "Offer to cancel the order instead.",
    "RET-2": "Hand the case to an agent to clarify the reason.",
    "RET-3": "Email a prepaid return label; {approve} on receipt.",
    "RET-4": "Ship a replacement under warranty and email a prepaid return label.",
    "RET-5": "Close the request; outside window and warranty.",
    "RET-6": "Close the request; accidental damage is not covered.",
    "RET-7": "Close the request; category not returnable.",
    "RET-8": "Email a prepaid return label; {approve} on receipt with no fee (statutory right).",
    "RET-9": "Close the request; final-sale item.",
    "RET-10": "Close the request; outside the return window.",
    "RET-11": "Email a return label; {approve} on receipt.",
    "RET-12": "Email a prepaid return label; {approve} on receipt.",
}
_LIMIT_ACTION = "Hand to a supervisor to approve the {refund} above the auto-approval limit."


def _customer_response(case: Case) -> str:
    exp = expected_decision(case)
    item = case.order.item.lower()
    if exp.decision == "DENY":
        opener = _DENY_OPENERS[_variant(case, "deny", len(_DENY_OPENERS))]
        key = f"CAN-3/{case.order.status}" if exp.rule == "CAN-3" else exp.rule
        text = opener.format(why=_DENY_WHY[key].format(item=item))
        text += " If anything else comes up, we're here to help."
    else:
        templates = _RESPONSES["ESCALATE+LIM-1" if exp.limit_applied else exp.decision]
        text = templates[_variant(case, "response", len(templates))].format(
            item=item, price=_money(case, case.order.price),
            net=_money(case, round(case.order.price * 0.85, 2)))
    return text


def _next_action(case: Case) -> str:
    exp = expected_decision(case)
    if exp.limit_applied:
        refund = "refund" if exp.before_limit == "APPROVE_REFUND" else "refund with the 15% restocking fee"
        return _LIMIT_ACTION.format(refund=refund)
    if exp.decision == "APPROVE_REFUND_WITH_FEE":
        approve = "refund minus the 15% restocking fee"
    elif exp.decision == "APPROVE_REFUND":
        approve = "refund"
    else:
        approve = "ship the exchange"
    return _NEXT_ACTIONS[exp.rule].format(approve=approve)


def reference_answer(case: Case) -> Answer:
    """The full expected answer for ``case``: the rule engine's decision and refs, with text.

    Deterministic in the case. Raises :class:`~policies.schema.InvalidAnswer` only if a
    template broke the Answer schema (a bug: the tests cover every rule).
    """
    exp = expected_decision(case)
    return parse_answer({
        "decision": exp.decision,
        "reasoning": _reasoning(case),
        "customer_response": _customer_response(case),
        "next_action": _next_action(case),
        "policy_refs": list(exp.policy_refs),
    })
