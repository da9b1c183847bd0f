"""Item names the bundled catalogue does not have: a retailer's catalogue is not ours.

A case's item name decides nothing (no rule reads it; the category does), yet a model trained on the
58 names of :data:`policies.catalog.ITEMS`, each always in its own category, can read the category
from the name. On a name it has never seen it then has only the category field, which it may not have
learnt to read. :func:`open_item_name` composes names from an open vocabulary (an optional modifier and
a product noun) drawn without regard to the case's category, and :func:`renamed_row` puts one into a
generator row: the item, the customer message's mentions of it, and the rule engine's answer, which
names it. Only the name changes, so the decision and every deciding field stay the same.

The nouns are split three ways, so no name of a measurement set was ever trained on:
``train`` (training pools), ``validation`` (renamed copies of the validation sets, for choosing) and
``test`` (the renamed stress set, for reporting).
"""

from __future__ import annotations

import random
import re
from typing import Any, Literal

from policies.catalog import ITEMS
from policies.schema import parse_case
from policies.synth_text import reference_answer

NameSplit = Literal["train", "validation", "test"]
NameStyle = Literal["plain", "title", "mixed"]
NAME_STYLES: tuple[NameStyle, ...] = ("plain", "title", "mixed")
NAME_SPLITS: tuple[NameSplit, ...] = ("train", "validation", "test")

# Product nouns, none a catalogue name (split three ways by _three_ways, as the brands are).
OPEN_NOUNS: tuple[str, ...] = (
    "backpack", "projector", "kettle", "bookshelf", "scarf", "trimmer", "syrup", "storage plan",
    "dashcam", "toaster", "gloves", "lotion", "honey", "audiobook", "soundbar", "bed frame", "trousers",
    "palette", "pasta", "font licence", "headset", "curtains", "swimsuit", "curling iron", "truffle oil",
    "streaming pass", "tracker", "ceiling fan", "sneakers", "sunscreen", "cheese board", "map pack",
    "router", "dining table", "linen shirt", "nail kit", "granola", "recipe app", "microphone",
    "pressure cooker", "trench coat", "bath salts", "jam set", "photo album", "webcam", "towel set",
    "raincoat", "shaving kit", "nut butter", "language course", "printer", "desk lamp", "beanie",
    "face mask", "rice cooker", "puzzle game", "graphics card", "wardrobe", "cardigan", "hair oil",
    "olive tapenade", "e-ticket", "power bank", "bar stool", "overalls", "eye cream", "cereal box",
    "design template", "turntable", "shoe rack", "windbreaker", "foot spa", "smoked salmon",
    "cloud backup", "drawing tablet", "pillow set", "tracksuit", "massage gun", "coffee pods",
    "video editor", "smart plug", "garden hose", "polo shirt", "beard oil", "pickles", "sheet music",
    "thermostat", "wall clock", "sandals", "bath robe", "seaweed snacks", "ringtone pack", "modem",
    "tool kit", "leggings", "body scrub", "hot sauce", "wallpaper pack",
)
MODIFIERS: tuple[str, ...] = (
    "compact", "deluxe", "travel", "classic", "premium", "mini", "pro", "eco", "vintage", "smart",
    "organic", "portable", "family", "studio", "outdoor", "kids'", "limited edition", "black", "blue",
    "oak", "steel", "bamboo", "cotton", "ceramic",
)
P_MODIFIER = 0.6
# A catalogue title as a retailer writes one: brand, model code, the noun, then colour and variant, with
# digits that are neither a price nor a day count ("Brightline Z9407 desk – navy, 500 ml").
BRANDS: tuple[str, ...] = (
    "Acme", "Nordhaus", "Kirin", "Zephyr", "Lumo", "Brightline", "Oakridge", "Velora", "Tamsin", "Korvo",
    "Halcyon", "Brisa", "Quill & Co", "Maison Ly", "Fjelda", "Sunward", "Ironbark", "Pellucid", "Café Royale",
    "Tessel", "Umbra", "Greyfield", "Nimbus", "Orla",
)
COLOURS: tuple[str, ...] = ("black", "ivory", "navy", "sage green", "graphite", "rose gold", "white", "oak")
VARIANTS: tuple[str, ...] = ("size M", "2-pack", "500 ml", "EU plug", "128 GB", "queen", "1 kg", "10 pack",
                             "XL", "12 months", "UK size 9", "3 m", "1.5 l", "set of 4")


def _three_ways(words: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``words`` split for :data:`NAME_SPLITS`: of every four, the second to validation, the fourth to
    test, the other two to train."""
    return {"train": words[0::2], "validation": words[1::4], "test": words[3::4]}


_SPLIT_BRANDS = _three_ways(BRANDS)
_SPLIT_NOUNS = _three_ways(OPEN_NOUNS)


def open_item_name(rng: random.Random, split: NameSplit = "train") -> str:
    """A name from the open vocabulary of ``split``: "Compact soundbar", "Backpack"."""
    name = noun = rng.choice(_SPLIT_NOUNS[split])
    if rng.random() < P_MODIFIER:
        modifier = rng.choice(MODIFIERS)
        if modifier.split()[0] not in noun.split():  # not "Smart smart plug"
            name = f"{modifier} {noun}"
    return name[0].upper() + name[1:]


def item_title(rng: random.Random, split: NameSplit = "train") -> str:
    """A catalogue title from ``split``'s brands and nouns: "Brightline Z9407 desk – navy, 500 ml",
    "Orla compact kettle (2-pack)", "Nimbus backpack"; the colour, variant and code each by a coin."""
    name = rng.choice(_SPLIT_BRANDS[split])
    if rng.random() < 0.6:
        name += f" {rng.choice(('X', 'K', 'Z', 'S', 'M', 'Pro '))}{rng.randint(1, 9999)}"
    name += " " + open_item_name(rng, split).lower()
    colour, variant = rng.random() < 0.5, rng.random() < 0.5
    if colour and variant:
        name += f" {rng.choice(('–', '-', ','))} {rng.choice(COLOURS)}, {rng.choice(VARIANTS)}"
    elif colour or variant:
        extra = rng.choice(COLOURS) if colour else rng.choice(VARIANTS)
        name += f" ({extra})" if rng.random() < 0.5 else f" {rng.choice(('–', '-', ','))} {extra}"
    return name


def draw_name(rng: random.Random, split: NameSplit = "train", style: NameStyle = "plain") -> str:
    """A name in ``style``: ``plain`` (:func:`open_item_name`), ``title`` (:func:`item_title`) or
    ``mixed`` (either, by a coin)."""
    if style == "mixed":
        style = "title" if rng.random() < 0.5 else "plain"
    return item_title(rng, split) if style == "title" else open_item_name(rng, split)


def renamed_row(row: dict[str, Any], name: str) -> dict[str, Any]:
    """Generator row ``row`` (``{"id", "instruction", "input", "output"}``) with its item called
    ``name``: in the case, in the customer message (each mention of the old name, any case, becomes
    ``name`` in lower case) and in the rule engine's answer, made again for the renamed case."""
    fields = {**row["input"], "order": {**row["input"]["order"], "item": name}}
    old = row["input"]["order"]["item"]
    fields["message"] = re.sub(re.escape(old), name.lower(), row["input"].get("message") or "",
                               flags=re.IGNORECASE)
    case = parse_case(fields)
    return {**row, "input": case.to_json_dict(), "output": reference_answer(case).model_dump(mode="json")}


def rename_rows(rows: list[dict[str, Any]], seed: int, share: float = 1.0,
                split: NameSplit = "train", style: NameStyle = "plain") -> list[dict[str, Any]]:
    """``rows`` with a ``share`` of them (a seeded coin per row) renamed by :func:`draw_name` from
    ``split``'s words in ``style``; the others as they were. Deterministic in (rows, seed, share,
    split, style); ``plain`` draws as before titles existed, so its files reproduce."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    if split not in NAME_SPLITS:
        raise ValueError(f"split must be one of {', '.join(NAME_SPLITS)}, got {split!r}")
    if style not in NAME_STYLES:
        raise ValueError(f"style must be one of {', '.join(NAME_STYLES)}, got {style!r}")
    rng = random.Random(f"policyops-item-names:{seed}:{split}" + ("" if style == "plain" else f":{style}"))
    out = []
    for row in rows:
        take = rng.random() < share
        name = draw_name(rng, split, style)
        out.append(renamed_row(row, name) if take else row)
    return out


def catalogue_names() -> frozenset[str]:
    """The catalogue's names, lower case (none of the open vocabulary's nouns is one of them)."""
    return frozenset(name.lower() for items in ITEMS.values() for name, _, _ in items)
