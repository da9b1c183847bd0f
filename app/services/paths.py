"""Paths that come from outside (a batch file typed in the console, an export directory) stay
inside the directory they belong to: no ``..``, no absolute path elsewhere, no symlink out."""

from __future__ import annotations

from pathlib import Path


class UnsafePath(ValueError):
    """A path would leave its directory; the message names the field and the directory."""


def contained_path(root: Path, candidate: str | Path, field: str = "path") -> Path:
    """``candidate`` resolved (symlinks followed), when it lies under ``root``; else UnsafePath.

    A relative ``candidate`` is read against the working directory (``data/x.jsonl``) and then
    against ``root`` (``x.jsonl``). Any ``..`` component is refused outright, even one that would
    land back inside. Existence is the caller's business.
    """
    text = str(candidate).strip()
    if not text or "\x00" in text:
        raise UnsafePath(f"{field}: give a path under {root}")
    path = Path(text)
    if ".." in path.parts:
        raise UnsafePath(f"{field}: '..' is not allowed in {text!r}")
    base = root.resolve()
    tries = [path] if path.is_absolute() else [Path.cwd() / path, base / path]
    for option in tries:
        resolved = option.resolve()  # follows symlinks: a link pointing out resolves outside
        if resolved.is_relative_to(base):
            return resolved
    raise UnsafePath(f"{field}: {text!r} is outside {base}")


def safe_dir(directory: Path, field: str = "out_dir") -> Path:
    """``directory`` when it has no ``..`` and is not a symlink leading out of its parent."""
    if ".." in Path(directory).parts:
        raise UnsafePath(f"{field}: '..' is not allowed in {str(directory)!r}")
    parent = Path(directory).absolute().parent.resolve()
    resolved = Path(directory).absolute().resolve()
    if not resolved.is_relative_to(parent):
        raise UnsafePath(f"{field}: {str(directory)!r} is a symlink to {resolved}, outside {parent}")
    return resolved
