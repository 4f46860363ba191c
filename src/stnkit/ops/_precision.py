"""The mixed-precision policy of :mod:`stnkit.ops`, implemented once (stated in
``stnkit.ops``'s docstring and docs/library.md, "Mixed precision").

Every op (grid generators, ``sample``, ``warp`` on every backend) computes in one *compute
dtype*: float64 when any floating operand is float64, else float32. So coordinates (theta,
grids, the kernels' geometry) are never computed in 16 bits, the image is accumulated in at
least float32, and ``input`` and ``theta`` / ``grid`` may have different floating dtypes.
Results go back to the dtype of what they belong to: the output to the input's dtype,
grad_input to the input's, grad_theta / grad_grid to theirs, a grid generator's grid to
theta's (``warp`` hands its grid on in the compute dtype, unrounded).

``torch.autocast`` does not reach inside: the few autocast-eligible operators the ops use
(the grid generators' ``matmul``) run under :func:`full_precision`, so an fp32 theta is not
cast to bfloat16 / float16 there.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import Tensor

__all__ = ["HALF", "autocast_off", "compute_dtype", "full_precision"]

HALF = (torch.float16, torch.bfloat16)


def compute_dtype(*operands: Tensor | torch.dtype) -> torch.dtype:
    """float64 if any operand (a tensor or a dtype) is float64, else float32."""
    for x in operands:
        if (x if isinstance(x, torch.dtype) else x.dtype) == torch.float64:
            return torch.float64
    return torch.float32


def autocast_off(device_type: str):
    """A context that disables ``torch.autocast`` for ``device_type`` where it is on (else a
    no-op, so the common path enters no autocast context at all)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def full_precision(fn):
    """Run an ``autograd.Function``'s ``forward`` / ``backward`` with autocast off on the
    device of its first tensor argument (backward too: it may be called inside an autocast
    region)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, Tensor)), None)
        if device is None:
            return fn(*args, **kwargs)
        with autocast_off(device):
            return fn(*args, **kwargs)

    return wrapper
