"""Atomic, durable file writes: a temporary file beside the destination, fsynced, then
``os.replace``d onto it (and the directory fsynced).

A reader never sees a half-written file, a crash never leaves a torn one, and nothing is
left behind when writing fails. A process killed mid-write (``kill -9``) cannot clean up:
its ``.<name>.<8 hex digits>.tmp`` stays, and :func:`remove_stale_temps` deletes such
leftovers by their exact names. Used by every module that writes files (data, train, viz).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stnkit._checks import StnkitFileError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "fsync_dir",
           "remove_stale_temps", "write_fsynced"]


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_fsynced(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (not atomic by itself)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cannot_write(path: Path, e: OSError):
    # the wording the viz/CLI tests match: "cannot write '<path>': <reason>"
    raise StnkitFileError(f"cannot write {str(path)!r}: {e.strerror or e}") from e


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; write it, and on success it replaces ``path``.

    The temporary file is named ``.<name>.<8 hex digits>.tmp`` (see :func:`remove_stale_temps`)
    and gets the usual permissions (0666 less the umask). On any error the temporary file is
    removed and ``path`` is left as it was. Errors of this function's own steps (creating,
    fsyncing, renaming) raise :class:`~stnkit._checks.StnkitFileError` ``"cannot write
    '<path>': <reason>"``; errors raised by the body (a failed download, say) pass through
    unchanged, so they keep saying what really went wrong.

    >>> from pathlib import Path
    >>> from stnkit._io import atomic_path
    >>> with atomic_path("out.txt") as tmp:
    ...     _ = tmp.write_text("all or nothing")
    >>> Path("out.txt").read_text()
    'all or nothing'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as e:
        _cannot_write(path, e)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        _fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        _cannot_write(path, e)
    fsync_dir(path.parent)


def remove_stale_temps(directory: str | os.PathLike, names: str) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``directory`` when a process was
    killed mid-write; returns them.

    Only names of the exact form ``.<name>.<8 hex digits>.tmp`` whose ``<name>`` matches the
    regular expression ``names`` (in full) are touched: never a user's file. Call it only
    while no other process writes to ``directory`` (under the run lock, say).
    """
    pattern = re.compile(rf"\.(?:{names})\.[0-9a-f]{{8}}\.tmp")
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for p in entries:
        if pattern.fullmatch(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as e:
            _cannot_write(Path(path), e)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically.

    NaN and Inf are not JSON: a caller must replace them (by None, say) first; one that
    reaches here is a bug and raises ``ValueError`` before anything is written.
    """
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())
