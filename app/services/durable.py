"""Files that appear whole or not at all, published only once the database says so.

An export writes each file to a hidden temp file next to it (``.NAME.tmp``), fsyncs it, commits
the database rows that name the file, and only then renames the temp file into place (and fsyncs
the directory). A crash before the commit leaves only hidden temp files, which
:func:`recover_dir` deletes (rolled back); a crash after the commit leaves a recorded file still
under its temp name, which :func:`recover_dir` renames into place (rolled forward). So a visible
file is always complete and always recorded, and a recorded file is never lost.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before it is published: a hidden sibling."""
    return path.with_name(f".{path.name}{TEMP_SUFFIX}")


def fsync_dir(directory: Path) -> None:
    """Make renames and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``temp_path(path)`` (created new; fsynced). Returns the temp path."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish(paths: Iterable[Path]) -> None:
    """Rename each path's temp file into place, then fsync their directories."""
    dirs = set()
    for path in paths:
        os.replace(temp_path(path), path)
        dirs.add(path.parent)
    for directory in dirs:
        fsync_dir(directory)


def discard(paths: Iterable[Path]) -> None:
    """Remove the temp files of ``paths`` (an export that did not commit)."""
    for path in paths:
        temp_path(path).unlink(missing_ok=True)


@dataclass
class Recovery:
    """What :func:`recover_dir` did."""

    published: list[str] = field(default_factory=list)  # recorded files moved into place
    removed: list[str] = field(default_factory=list)  # temp files of exports that never committed


def recover_dir(directory: Path, recorded: set[str], pattern: str = "*") -> Recovery:
    """Finish or undo interrupted publications in ``directory``.

    ``recorded``: the names of the files the database holds. A leftover ``.NAME.tmp`` whose NAME
    is recorded is renamed into place; any other leftover temp file matching ``pattern`` is removed.
    Call it while holding the lock that export takes (so no export is half-way meanwhile).
    """
    out = Recovery()
    if not directory.is_dir():
        return out
    for tmp in sorted(directory.glob(f".{pattern}{TEMP_SUFFIX}")):
        name = tmp.name[1 : -len(TEMP_SUFFIX)]
        if name in recorded and not (directory / name).exists():
            os.replace(tmp, directory / name)
            out.published.append(name)
        else:
            tmp.unlink()
            out.removed.append(tmp.name)
    if out.published or out.removed:
        fsync_dir(directory)
    return out
