"""Checks for values that cross a public boundary, and the one way we word their errors.

Every message has the form ``"<fn>: expected <name> <what>, got <actual>"`` so a user reads
which call, which argument, what was wanted and what arrived:

    >>> import torch
    >>> from stnkit._checks import check_shape
    >>> check_shape(torch.zeros(4, 3, 3), ("B", 2, 3), name="theta", fn="warp")
    Traceback (most recent call last):
    stnkit._errors.StnkitValueError: warp: expected theta of shape (B, 2, 3), got (4, 3, 3)

``TypeError`` for a wrong type, ``ValueError`` for a wrong value. Inner kernels trust their
callers and check nothing; these helpers run once, at the public entry points.

Every error stnkit raises on purpose is a :class:`StnkitError`: ``fail`` raises
:class:`StnkitValueError` / :class:`StnkitTypeError` (subclasses of ``ValueError`` /
``TypeError``, so callers may catch either), and a file that is missing, corrupt or does not
match what it should hold raises :class:`StnkitFileError` (an ``OSError``) via
:func:`fail_file`. The command line shortens exactly these to one line; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "StnkitError",
    "StnkitFileError",
    "StnkitTypeError",
    "StnkitValueError",
    "check_choice",
    "check_finite_number",
    "check_floating",
    "check_same_batch",
    "check_same_device",
    "check_same_dtype",
    "check_shape",
    "check_size",
    "check_tensor",
    "fail",
    "fail_file",
    "format_shape",
]


# The error classes and the two raising helpers live in the torch-free ``stnkit._errors``
# (so that the command line can use them without importing torch); re-exported here.
from stnkit._errors import (  # noqa: E402
    StnkitError,
    StnkitFileError,
    StnkitTypeError,
    StnkitValueError,
    fail,
    fail_file,
)


def format_shape(spec: Iterable[Any]) -> str:
    """``(B, 2, 3)`` from a spec or a concrete shape."""
    return "(" + ", ".join(str(s) for s in spec) + ")"


def check_tensor(x: Any, *, name: str, fn: str) -> Tensor:
    """``x`` must be a torch.Tensor."""
    if not isinstance(x, Tensor):
        fail(fn, name, "to be a torch.Tensor", type(x).__name__, error=TypeError)
    return x


def check_shape(x: Any, spec: Sequence[int | str | None], *, name: str, fn: str) -> dict[str, int]:
    """Check ``x.shape`` against ``spec`` and return the sizes bound to named dimensions.

    A spec entry is an int (that exact size), a str (a named size; the same name must have
    the same size everywhere in the spec) or None (any size). Returns ``{"B": 4, ...}``.
    """
    check_tensor(x, name=name, fn=fn)
    shape = tuple(x.shape)
    bound: dict[str, int] = {}
    ok = len(shape) == len(spec)
    if ok:
        for want, got in zip(spec, shape):
            if want is None:
                continue
            if isinstance(want, str):
                if bound.setdefault(want, got) != got:
                    ok = False
                    break
            elif want != got:
                ok = False
                break
    if not ok:
        fail(fn, name, f"of shape {format_shape('*' if s is None else s for s in spec)}",
             format_shape(shape))
    return bound


def check_floating(x: Tensor, *, name: str, fn: str, allow_half: bool = True) -> None:
    """``x`` must have a floating dtype (float16/bfloat16 only when ``allow_half``)."""
    ok = x.is_floating_point() and (allow_half or x.dtype in (torch.float32, torch.float64))
    if not ok:
        want = "a floating dtype" if allow_half else "dtype float32 or float64"
        fail(fn, name, f"to have {want}", x.dtype, error=TypeError)


def check_same_dtype(a: Tensor, b: Tensor, *, names: tuple[str, str], fn: str) -> None:
    if a.dtype != b.dtype:
        fail(fn, names[1], f"to have the same dtype as {names[0]} ({a.dtype})", b.dtype,
             error=TypeError)


def check_same_device(a: Tensor, b: Tensor, *, names: tuple[str, str], fn: str) -> None:
    if a.device != b.device:
        fail(fn, names[1], f"to be on the same device as {names[0]} ({a.device})", b.device)


def check_same_batch(a: Tensor, b: Tensor, *, names: tuple[str, str], fn: str) -> None:
    if a.shape[0] != b.shape[0]:
        fail(fn, names[1], f"to have batch size {a.shape[0]} like {names[0]}", b.shape[0])


def check_choice(value: Any, choices: Sequence[Any], *, name: str, fn: str) -> None:
    """``value`` must be one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        fail(fn, name, "one of " + ", ".join(repr(c) for c in choices), repr(value))


def check_size(size: Any, ndim: int | Sequence[int] | None, *, name: str = "size",
               fn: str) -> tuple[int, ...]:
    """A sequence of positive ints: a spatial size, layer widths, ...

    ``ndim`` is the allowed length, a sequence of allowed lengths, or None for any length >= 1.
    Accepts ``torch.Size``, tuples, lists and 0-d integer tensors as entries; rejects bools,
    floats and non-positive entries.
    """
    lengths = None if ndim is None else (ndim,) if isinstance(ndim, int) else tuple(ndim)
    want = "any number of" if lengths is None else " or ".join(str(n) for n in lengths)
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence):
        fail(fn, name, f"a sequence of {want} positive ints", repr(size), error=TypeError)
    if (lengths is None and len(size) == 0) or (lengths is not None and len(size) not in lengths):
        fail(fn, name, f"to have {'at least 1' if lengths is None else want} entries",
             f"{len(size)} ({tuple(size)!r})")
    out = []
    for s in size:
        if isinstance(s, bool) or not isinstance(s, int):
            if isinstance(s, Tensor) and s.dim() == 0 and not s.is_floating_point():
                s = int(s)
            else:
                fail(fn, name, "to contain ints", repr(tuple(size)), error=TypeError)
        if s <= 0:
            fail(fn, name, "to contain positive ints", repr(tuple(size)))
        out.append(int(s))
    return tuple(out)


def check_finite_number(value: Any, *, name: str, fn: str, positive: bool = False) -> float:
    """A finite real number (``positive``: strictly > 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(fn, name, "a real number", repr(value), error=TypeError)
    if not math.isfinite(value) or (positive and value <= 0):
        fail(fn, name, "a finite positive number" if positive else "a finite number", repr(value))
    return float(value)
