"""Where data lives: the data directory, the embedded subset, the cache, offline mode.

Resolution of the data directory (``root``), first match wins:

1. an explicit ``root`` argument (``--data-dir`` on the command line);
2. the ``STNKIT_DATA`` environment variable;
3. ``<user cache dir>/data`` (platformdirs; ``~/.cache/stnkit/data`` on Linux).

``root="embedded"`` (:data:`EMBEDDED`) selects the small real-MNIST subset shipped inside
the package instead of a directory. Inside a data directory, MNIST's IDX files are looked
for in ``ROOT``, ``ROOT/mnist`` and ``ROOT/MNIST/raw`` (torchvision's layout) and downloaded
to ``ROOT/mnist``; generated datasets are cached in ``ROOT/distorted``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs

from stnkit._checks import fail

__all__ = [
    "DATA_ENV",
    "EMBEDDED",
    "MIRRORS_ENV",
    "OFFLINE_ENV",
    "default_data_dir",
    "is_offline",
    "mnist_search_dirs",
    "resolve_root",
    "user_cache_dir",
]

EMBEDDED = "embedded"
"""``root`` value selecting the MNIST subset shipped inside the package."""

DATA_ENV = "STNKIT_DATA"
"""Environment variable naming the default data directory (else the user cache)."""
OFFLINE_ENV = "STNKIT_OFFLINE"
"""Environment variable that, set to anything but a false word ("", 0, false, no, off...),
forbids every download (offline mode)."""
MIRRORS_ENV = "STNKIT_MNIST_MIRRORS"
"""Environment variable with MNIST base URLs (commas or whitespace between them) tried instead
of the built-in ``MIRRORS``."""

_FALSE_WORDS = ("", "0", "false", "no", "off")


def user_cache_dir() -> Path:
    """stnkit's per-user cache directory (platformdirs), e.g. ``~/.cache/stnkit``."""
    return platformdirs.user_cache_path("stnkit")


def default_data_dir() -> Path:
    """The data directory used when neither ``root`` nor ``STNKIT_DATA`` is given."""
    return user_cache_dir() / "data"


def resolve_root(root: Any = None, *, fn: str = "resolve_root") -> Path | str:
    """The data directory for ``root``: a ``Path``, or the string :data:`EMBEDDED`.

    ``root`` is None, ``"embedded"``, or a ``str`` / ``os.PathLike`` directory (``~``
    expanded; it need not exist yet).
    """
    if root is None:
        env = os.environ.get(DATA_ENV, "").strip()
        if not env:
            return default_data_dir()
        root = env
    if isinstance(root, str) and root == EMBEDDED:
        return EMBEDDED
    if isinstance(root, bool) or not isinstance(root, (str, os.PathLike)):
        fail(fn, "root", "None, 'embedded' or a directory path (str or os.PathLike)",
             type(root).__name__, error=TypeError)
    path = Path(os.fspath(root)).expanduser()
    if str(path) == "":
        fail(fn, "root", "a non-empty directory path", repr(root))
    return path


def mnist_search_dirs(root: Path) -> list[Path]:
    """Directories searched for the IDX files under a data directory, in order."""
    return [root, root / "mnist", root / "MNIST" / "raw"]


def is_offline(offline: bool | None = None, *, fn: str = "is_offline") -> bool:
    """Whether network use is forbidden: ``offline`` if given, else ``STNKIT_OFFLINE``.

    ``STNKIT_OFFLINE`` counts as set unless empty or one of ``0``, ``false``, ``no``, ``off``.
    """
    if offline is not None:
        if not isinstance(offline, bool):
            fail(fn, "offline", "a bool or None", type(offline).__name__, error=TypeError)
        return offline
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in _FALSE_WORDS
