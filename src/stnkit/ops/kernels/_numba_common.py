"""Per-element helpers of the Numba warp kernels (LLVM inlines them into the calling loops).

Coordinates here are *pixel* coordinates of the input (``x_pix`` of ``stnkit.ops.sample``).
Every helper works in the dtype of its arguments (float32 or float64): constants are cast
explicitly, because a bare Python float or an int product silently promotes to 64 bits and
stops the loops from vectorising.

Padding codes: ``ZEROS = 0``, ``BORDER = 1``, ``REFLECTION = 2``; modes ``BILINEAR = 0``,
``NEAREST = 1``. A coordinate that is outside in every padding mode (NaN, +-Inf, projective
w <= 0) is replaced by :data:`OUTSIDE` (-2): both of its bilinear taps, and its nearest tap,
then lie outside the image and it contributes nothing.
"""

from __future__ import annotations

import numpy as np

from stnkit.ops.kernels._numba_runtime import jit

ZEROS, BORDER, REFLECTION = 0, 1, 2
BILINEAR, NEAREST = 0, 1
OUTSIDE = -2.0


@jit()
def pad_coord(x, size, pad, align, t):
    """Apply the padding mode to pixel coordinate ``x`` of an axis of ``size`` pixels.

    ``t`` is the scalar type (np.float32 / np.float64). Returns ``(x', m)``: ``x'`` finite and
    in [-2, size + 1] (in [0, size - 1] for border and reflection unless outside) and
    ``m = d x' / d x`` (0, +1 or -1).
    """
    zero = t(0.0)
    outside = t(OUTSIDE)
    hi = t(size - 1)
    m = t(1.0)
    if pad == ZEROS:
        # Beyond [-2, size + 1] both taps are outside: clamp there (also keeps int casts safe).
        if not (x > outside):  # also NaN / -Inf
            return outside, zero
        if not (x < t(size + 1)):
            return t(size + 1), zero
        return x, m
    if not (abs(x) < t(np.inf)):  # NaN or +-Inf: outside in every padding mode
        return outside, zero
    if pad == REFLECTION:
        if align:
            low = zero
            span = hi
        else:
            low = t(-0.5)
            span = t(size)
        if span == zero:  # one pixel with align_corners: everything maps onto it
            return zero, zero
        # x - low modulo the period, reduced first (exact) so that a huge x is not rounded
        u = np.fmod(x, span + span) - low
        extra = np.fmod(abs(u), span + span)  # exact, like the torch path
        flip = extra > span
        if flip:
            extra = span + span - extra
        x = extra + low
        if flip != (u < zero):
            m = -m
    # border clip (also after reflecting): d/dx = 1 strictly inside (0, size - 1), else 0
    if not (x > zero):
        return zero, zero
    if not (x < hi):
        return hi, zero
    return x, m
