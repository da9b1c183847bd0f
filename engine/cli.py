"""What the command lines share (the scripts, ``python -m app``, ``python -m engine.serve``): every
number has bounds and every input file is checked before any work starts, and a mistake the user can
fix ends the run with one line naming the option, ``error: --option: what is wrong`` (exit status 2,
as argparse's own refusals), never a traceback. Standard library only: any layer may use it.

    p.add_argument("--batch-size", type=bounded_int(1, 1024), default=8)
    p.add_argument("--dataset", type=existing_file, required=True)
    ...
    with refusals(p, {UnknownModel: "--model", UnknownVariant: "--variant"}):
        run(config)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

MAX_NEW_TOKENS = 8192  # what any script asks a model to write at most
MAX_BATCH = 1024
MAX_ROWS = 10_000_000  # rows a script reads or writes at most


N = TypeVar("N", int, float)


def _bounded(convert: Callable[[str], N], kind: str, low: N, high: N, spec: str) -> Callable[[str], N]:
    """An argparse type: ``convert(text)`` (a ``kind``) from ``low`` to ``high`` and finite, else
    argparse's one-line refusal, its numbers written with the format ``spec``."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(
                f"{value:{spec}} is out of range: {low:{spec}} to {high:{spec}}")
        return value

    return parse


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``, else argparse's one-line refusal."""
    return _bounded(int, "a whole number", low, high, "d")


def bounded_float(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a finite number from ``low`` to ``high``, else argparse's one-line refusal."""
    return _bounded(float, "a number", low, high, "g")


def existing_file(text: str) -> str:
    """An argparse type: a path to a file that exists ("-" for stdin passes)."""
    if text != "-" and not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


def writable_dir(parser: argparse.ArgumentParser, option: str, path: str | Path) -> Path:
    """Make the output folder ``path`` now, so that one the user cannot write to is refused before the
    work that would fill it, naming ``option``."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-check"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        parser.error(f"{option}: cannot write to {path} ({exc.strerror or exc})")
    return folder


def message(exc: BaseException) -> str:
    """An error's own words (``str()`` of a KeyError adds quotes)."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


@contextmanager
def refusals(parser: argparse.ArgumentParser,
             options: Mapping[type[BaseException], str]) -> Iterator[None]:
    """Errors the user can fix, raised while the block runs, become ``error: OPTION: message`` and exit
    status 2; ``options`` maps each error class to the option it is about."""
    try:
        yield
    except tuple(options) as exc:
        option = next(opt for cls, opt in options.items() if isinstance(exc, cls))
        parser.error(f"{option}: {message(exc)}")
