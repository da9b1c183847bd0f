"""Changing the served adapter: the promotion gate, rollback, and pointing the engine at the champion.

The table and its CRUD are :mod:`db.versions`'; here is what the console does with them.
:func:`promote` is the gate: it reads the stored comparison dataset by dataset
(:func:`engine.champion.gate_verdicts`, the same verdicts the Models tab shows) and refuses a
challenger that is worse on a gating dataset (the frozen eval set; a stress set when evaluated),
whatever the held-out corrections say. :func:`change_champion` changes the champion and swaps the
engine's adapter in one transaction, so the store never names a champion the console does not serve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from sqlmodel import Session

from db.models import AdapterVersion
from db.store import Store
from db.versions import VersionError, champion, ensure_bundled_version, get_version, set_champion
from engine.champion import ACCURACY_MARGIN, gate_refusal, gate_verdicts


class PromotionRefused(VersionError):
    """The challenger may not be promoted; the message gives the figures that refused it."""


def promote(session: Session, actor: str, name: str, margin: float = ACCURACY_MARGIN) -> AdapterVersion:
    """Make challenger ``name`` the champion (the old one retires), audited, in ``session``.

    Refused (:class:`PromotionRefused`, the message names the dataset and its figures) when the
    version was never evaluated; was evaluated against another champion than today's; its stored
    comparison has no per-dataset figures for a gating dataset (an old evaluation: re-evaluate); or,
    on a gating dataset (``eval``; ``stress`` when evaluated), the challenger has more cases with a
    hard violation than the champion or a decision accuracy more than ``margin`` (absolute, default
    :data:`engine.champion.ACCURACY_MARGIN`) below the champion's. The held-out corrections are
    never gating and never added to the eval figures. Permissions are the caller's job
    (``authorize(..., "promote")``).
    """
    target = get_version(session, name)
    evaluation = target.evaluation()
    current = champion(session)
    if not evaluation:
        raise PromotionRefused(f"{name}: not evaluated yet; promotion needs the comparison with the champion")
    against = evaluation.get("champion_version")
    if current is not None and against not in (None, current.name):
        raise PromotionRefused(f"{name}: evaluated against {against}, but the champion is now {current.name}")
    refusal = gate_refusal(gate_verdicts(evaluation, margin))
    if refusal:
        raise PromotionRefused(f"{name}: {refusal}; not promoted")
    return set_champion(session, actor, target, "promote")


def rollback(session: Session, actor: str, name: str) -> AdapterVersion:
    """Make any earlier (retired or challenger) version the champion again: one audited action."""
    return set_champion(session, actor, get_version(session, name), "rollback")


class ChampionNotServed(VersionError):
    """The champion's adapter cannot be served (its dir is gone, or the model server refused to load it);
    the message names the version and says why."""


def serve_champion(engine: Any, session: Session, variant: str = "finetuned") -> str | None:
    """Point ``engine``'s ``variant`` adapter at the champion's weights (base stays loaded).

    Out: the champion's name, or None when there is none or the engine cannot swap adapters.
    Errors: :class:`ChampionNotServed` when a local engine finds no adapter in the champion's dir or a
    model server will not load it, or PEFT cannot load it on this base (the engine keeps serving what
    it served).
    """
    from engine.backends.base import ADAPTER_LOAD_ERRORS

    current = champion(session)
    swap = getattr(engine, "swap_adapter", None)
    if current is None or swap is None:
        return None
    # A served model's adapter dirs are paths on the server's machine: only the server can say.
    local = getattr(engine, "backend_name", "local") == "local"
    if local and not (Path(current.path) / "adapter_config.json").is_file():
        raise ChampionNotServed(f"champion {current.name}: no adapter at {current.path} "
                                "(adapter_config.json missing)")
    try:
        swap(variant, current.path, version=current.name)
    except ADAPTER_LOAD_ERRORS as exc:
        raise ChampionNotServed(f"champion {current.name}: {exc}") from None
    return current.name


def start_serving(engine: Any, store: Store) -> str | None:
    """What a console does on start: record the model's bundled adapter as ``ft-v1`` on a fresh store,
    then serve the champion as ``finetuned``. Out: the line to print (None: no champion). A champion
    that cannot be served does not stop the console (its Models tab is where to roll back): the engine
    keeps the adapter it loaded, whose version its answers carry, and the line says so."""
    adapter = (getattr(engine.spec, "adapters", None) or {}).get("finetuned")
    try:
        with store.session(immediate=True) as s:  # consoles starting at once record ft-v1 once
            if adapter:
                ensure_bundled_version(s, adapter, engine.spec.base)
            served = serve_champion(engine, s)
    except ChampionNotServed as exc:
        instead = (f"serves {engine.model_version('finetuned')} as finetuned instead (answers carry that "
                   "version)") if "finetuned" in engine.variants else "serves no fine-tuned adapter"
        return (f"Warning: {exc}. The console {instead}; roll back in the Models tab, or make the "
                "champion's adapter loadable and restart")
    return f"Serving champion {served} as finetuned" if served else None


def change_champion(
    store: Store, engine: Any, actor: str, name: str, how: Literal["promote", "rollback"]
) -> str | None:
    """Promote or roll back to ``name`` and serve it, in one transaction; returns the served name.

    When the gate refuses (:class:`PromotionRefused`), the name is unknown (:class:`VersionError`) or
    the engine cannot serve the adapter (:class:`ChampionNotServed`), nothing is committed and the
    engine keeps its adapter.
    """
    change = promote if how == "promote" else rollback

    # Store.write may run ``unit`` again when the database is locked: swapping in the same adapter
    # again is harmless.
    def unit(s: Session) -> str | None:
        change(s, actor, name)
        s.flush()
        return serve_champion(engine, s)

    return store.write(unit)
