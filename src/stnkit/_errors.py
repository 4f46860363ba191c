"""The errors stnkit raises on purpose, importable without torch (the command line needs them
to print ``stnkit --help`` instantly). :mod:`stnkit._checks` re-exports everything here.

Every error stnkit raises on purpose is a :class:`StnkitError`: ``fail`` raises
:class:`StnkitValueError` / :class:`StnkitTypeError` (subclasses of ``ValueError`` /
``TypeError``), and a file that is missing, corrupt or does not match what it should hold
raises :class:`StnkitFileError` (an ``OSError``) via :func:`fail_file`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StnkitError", "StnkitFileError", "StnkitTypeError", "StnkitValueError", "fail",
           "fail_file"]


class StnkitError(Exception):
    """Base of every error stnkit raises on purpose (bad input, bad file): a user can fix it."""


class StnkitValueError(StnkitError, ValueError):
    """A wrong value: shape, range, choice, content."""


class StnkitTypeError(StnkitError, TypeError):
    """A wrong type or dtype."""


class StnkitFileError(StnkitError, OSError):
    """A file or directory that is missing, unreadable, corrupt or not what it should be."""


_OURS = {ValueError: StnkitValueError, TypeError: StnkitTypeError, OSError: StnkitFileError}


def fail(fn: str, name: str, expected: str, got: Any, *, error: type[Exception] = ValueError):
    """Raise ``error`` (as its :class:`StnkitError` subclass) with the project's message format."""
    raise _OURS.get(error, error)(f"{fn}: expected {name} {expected}, got {got}")


def fail_file(fn: str, path: Any, problem: str, *,
              error: type[StnkitFileError] = StnkitFileError):
    """Raise :class:`StnkitFileError` ``"<fn>: <path>: <problem>"`` (what is wrong and, where
    there is one, what to do about it); ``error`` may name a subclass of it (a module's own
    error type, such as ``stnkit.train.CheckpointError``)."""
    raise error(f"{fn}: {path}: {problem}")
