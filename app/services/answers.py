"""Answers on demand: run the engine only for (case, variant, model_version) not yet in the store.

The console and the batch runner call these instead of the engine directly, so a model answer
is computed once and then served from ``model_runs``. Engine calls are serialised by a lock (one
model in memory, shared by every browser tab and batch job; interactive calls go first, background
ones — batch chunks and the idle answering of :class:`app.services.navigation.BackgroundAnswers` —
take their turn only when no interactive call waits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from db.cases import add_case, case_of, find_run, get_case, runs_for_case, save_run
from db.models import ModelRun
from db.store import Store
from engine.types import ModelAnswer
from policies import Case
from policies.prompt import PromptFormat

Progress = Callable[[int, int], None]
COMPARED_VARIANTS = ("base", "finetuned")


class EngineGate:
    """One engine call at a time, interactive calls first: a batch chunk starts only when no
    interactive call is waiting, so a reviewer's compare waits at most the chunk being answered
    (a plain lock is not fair: a batch thread could take it again before a waiting compare)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._interactive_waiting = 0
        self._last_interactive = time.monotonic()  # when the latest interactive call ended

    @contextmanager
    def interactive(self) -> Iterator[None]:
        with self._cond:
            self._interactive_waiting += 1
            try:
                self._cond.wait_for(lambda: not self._busy)
            finally:
                self._interactive_waiting -= 1
            self._busy = True
        with self._held(interactive=True):
            yield

    def wait_idle(self, idle_s: float, stop: threading.Event, poll_s: float = 0.5) -> bool:
        """Block until the engine is free and no interactive call has run for ``idle_s`` seconds.

        Out: True when idle, False as soon as ``stop`` is set (checked every ``poll_s`` seconds).
        The caller then takes a :meth:`batch_turn`, which still yields to an interactive call that
        arrived in between.
        """
        with self._cond:
            while not stop.is_set():
                quiet = time.monotonic() - self._last_interactive
                if not self._busy and self._interactive_waiting == 0 and quiet >= idle_s:
                    return True
                self._cond.wait(timeout=min(poll_s, max(idle_s - quiet, 0.01)))
        return False

    @contextmanager
    def batch_turn(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._busy and self._interactive_waiting == 0)
            self._busy = True
        with self._held(interactive=False):
            yield

    @contextmanager
    def _held(self, interactive: bool) -> Iterator[None]:
        """The body of a turn the caller has taken: afterwards the engine is free again (an
        interactive turn also restarts the idle clock of :meth:`wait_idle`) and every waiter wakes."""
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                if interactive:
                    self._last_interactive = time.monotonic()
                self._cond.notify_all()


ENGINE = EngineGate()  # one model in memory, shared by every browser tab and batch job
_SEEN_VERSIONS: dict[int, dict[str, str]] = {}  # engines that cannot say their versions before running


def compared_variants(engine: Any) -> list[str]:
    """The variants :meth:`engine.compare` answers with: base and fine-tuned."""
    wanted = [v for v in COMPARED_VARIANTS if v in engine.variants]
    return wanted or list(engine.variants)


def engine_versions(engine: Any) -> dict[str, str] | None:
    """``{variant: model_version}`` of ``engine``: asked of the engine, else remembered from its answers."""
    if callable(getattr(engine, "model_version", None)):
        return {v: engine.model_version(v) for v in compared_variants(engine)}
    return _SEEN_VERSIONS.get(id(engine))


def prompt_format_of(engine: Any) -> PromptFormat:
    """The prompt format the engine's model was trained with (exports must use the same)."""
    fmt = getattr(engine, "prompt_format", None)
    spec = getattr(engine, "spec", None)
    return fmt or getattr(spec, "prompt_format", None) or PromptFormat()


def remember_versions(engine: Any, answers: dict[str, ModelAnswer]) -> None:
    """Note the model versions ``engine`` answered with (for engines that cannot say them before)."""
    _SEEN_VERSIONS[id(engine)] = {v: a.model_version for v, a in answers.items()}


def cached_runs(store: Store, engine: Any, case_pk: int) -> dict[str, ModelRun] | None:
    """The stored runs of the engine's current versions when every variant has one, else None."""
    versions = engine_versions(engine)
    if versions is None:
        return None
    with store.session() as s:
        wanted = compared_variants(engine)
        runs = {v: find_run(s, case_pk, v, versions[v]) for v in wanted if v in versions}
    if len(runs) < len(wanted) or any(r is None for r in runs.values()):
        return None
    return runs  # type: ignore[return-value]


def compare_case(
    store: Store, engine: Any, case_pk: int, actor: str, background: bool = False
) -> dict[str, ModelRun]:
    """Both variants' runs for stored case ``case_pk``: from the store, or computed now and stored.

    ``background``: wait for a batch turn (after every waiting interactive call) instead of an
    interactive one. Raises KeyError naming ``case_id`` for an unknown case.
    """
    runs = cached_runs(store, engine, case_pk)
    if runs is not None:
        return runs
    with store.session() as s:
        case = case_of(get_case(s, case_pk))
    with ENGINE.batch_turn() if background else ENGINE.interactive():
        runs = cached_runs(store, engine, case_pk)  # another thread may have computed it meanwhile
        if runs is not None:
            return runs
        answers = engine.compare(case, variants=compared_variants(engine))
        remember_versions(engine, answers)
        # saved before the lock is released: a thread waiting on it must find the runs cached
        return store.write(lambda s: {v: save_run(s, case_pk, a, actor) for v, a in answers.items()})


def compare_new_case(
    store: Store, engine: Any, case: Case, source: str, actor: str
) -> tuple[int, dict[str, ModelRun]]:
    """Store ``case`` (source ``try`` / ``batch``) and compare it; returns (case_pk, runs)."""
    case_pk = store.write(lambda s: add_case(s, case, source, actor).id or 0)
    runs = compare_case(store, engine, case_pk, actor)
    from app.services.shadow import shadow_answer  # lazy: db.shadow imports db.versions

    shadow_answer(store, engine, case_pk, actor)  # a share of new cases also goes to the challenger
    return case_pk, runs


def run_batch(
    store: Store, engine: Any, cases: Sequence[Case], actor: str, progress: Progress | None = None
) -> list[int]:
    """Store ``cases`` as a batch and compute the answers not cached yet (``progress(done, total)``).

    Returns the stored cases' ids, in input order; they appear in the queue.
    """
    pks = store.write(lambda s: [add_case(s, c, "batch", actor).id or 0 for c in cases])
    todo = [(pk, c) for pk, c in zip(pks, cases, strict=True) if cached_runs(store, engine, pk) is None]
    if todo:
        with ENGINE.batch_turn():
            results = engine.compare_many(
                [c for _, c in todo], variants=compared_variants(engine), progress=progress
            )
        if results:
            remember_versions(engine, results[0])

        def save_all(s: Any) -> None:
            for (pk, _), answers in zip(todo, results, strict=True):
                for answer in answers.values():
                    save_run(s, pk, answer, actor)

        store.write(save_all)
    elif progress:
        progress(len(cases), len(cases))
    return pks


def current_runs(store: Store, engine: Any, case_pk: int) -> dict[str, ModelRun]:
    """Stored runs of the engine's versions (no computing); the latest ones when versions are unknown."""
    with store.session() as s:
        return runs_for_case(s, case_pk, engine_versions(engine))
