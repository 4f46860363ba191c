"""Atomic, durable file writes: a temporary file beside the destination, fsynced, then
``os.replace``d onto it (and the directory fsynced).

A reader never sees a half-written file, a crash never leaves a torn one, and nothing is
left behind when writing fails. Used by every module that writes files (data, train, viz).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "fsync_dir",
           "write_fsynced"]


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


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; write it, and on success it replaces ``path``.

    The file gets the usual permissions (0666 less the umask). On any error the temporary
    file is removed and ``path`` is left as it was; OSErrors are reworded to name ``path``.

    >>> with atomic_path("out.png") as tmp:   # doctest: +SKIP
    ...     image.save(tmp, format="PNG")
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as e:
        raise OSError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (no NaN/Inf: they are not JSON) atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())
