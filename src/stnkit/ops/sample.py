"""The differentiable image sampler of the spatial transformer, with its hand-derived backward.

Convention (the one of ``torch.nn.functional.grid_sample``, whose results ``sample`` matches):
``grid[b, ..., :]`` holds the *input* location (x, y[, z]) to read for each *output* location,
normalised to [-1, 1]; x runs along W, y along H, z along D. The pixel coordinate is

- ``align_corners=True``:  ``x_pix = (x + 1) / 2 * (W - 1)``  (-1, 1 are the corner pixel centres);
- ``align_corners=False``: ``x_pix = ((x + 1) * W - 1) / 2``  (-1, 1 are the outer image edges).

The sampler is the paper's (Jaderberg et al. 2015, eq. 3-7), for every channel c:

    V_i = sum_n sum_m U_nm k(x_i - m) k(y_i - n)      (3-D: sum_l ... k(z_i - l))

with ``k(d) = max(0, 1 - |d|)`` (bilinear), ``k(d) = delta(round(d))`` (nearest) or, beyond the
paper, the Keys cubic kernel with a = -0.75 (bicubic, 2-D only), as PyTorch uses.

Padding. ``zeros``: pixels outside the image are 0. ``border`` / ``reflection`` (bilinear,
nearest): the pixel coordinate is first clipped to [0, W-1] / reflected at the image edges
(about the corner pixel centres when ``align_corners`` else about the outer edges) and then
clipped. Bicubic pads each of its 16 taps instead (so a tap outside reads the border / mirrored
pixel). This is exactly what PyTorch does.

Sub-gradients (where V is not differentiable in the coordinates), as PyTorch chooses them:

- integer knots (bilinear): dV/dx is the derivative of the interpolant on [floor(x), floor(x)+1],
  i.e. the one-sided (right) derivative. The paper's eq. 7 gives a different value there
  (see :mod:`stnkit.ops.reference`); both agree everywhere else. A pixel coordinate within
  ``2 * eps * size`` of an integer (rounding noise: normalised pixel centres come back as
  k +- a few ulps) is snapped onto it first, so an identity grid reads every pixel exactly and
  near-knot points get this sub-gradient consistently, not whichever side rounding picked
  (PyTorch does not snap: its values differ from ours there by at most that distance times
  the local slope, its grid gradients there by a one-sided difference).
- border / reflection: d(clipped)/dx = 1 strictly inside (0, W-1) and 0 at or beyond the clip
  points (the border pixel centres count as outside); reflection multiplies by -1 on mirrored
  stretches (+1 at the fold points themselves, where the clip multiplier is 0 anyway).
- nearest: the output is piecewise constant in the grid, so the grid gradient is zero
  everywhere (PyTorch does the same); the input still gets its gradient.
- bicubic: the Keys kernel is C^1, so there is no knot ambiguity; padding acts on taps, so only
  the unnormalisation factor multiplies dV/dx.
- ties in nearest (exact half-pixel coordinates) round half to even, like ``torch.round``
  and PyTorch's ``grid_sample`` (the paper's ``floor(x + 0.5)`` rounds them up).

Second derivatives (double backward, e.g. a gradient penalty): the backward is itself an
autograd.Function with an exact hand-derived VJP, so ``create_graph=True`` works and matches
``grid_sample``'s double backward. grad_input is linear in grad_output with the weights W(grid);
grad_grid is linear in grad_output and in the input. The second-order choices follow the
first-order ones: the same taps (the interval [floor(x), floor(x) + 1] after the near-knot
snapping) give the second derivatives, so at a knot they are the right-sided ones; bilinear
d^2 V / dx^2 = 0 (piecewise linear) while d^2 V / dx dy is not; bicubic uses k'' on [0, 1)
(k'' jumps at the knots); the clip / reflection multipliers are piecewise constant, so their
derivative is 0 everywhere (also at clip and fold points, where the multiplier itself is 0, so
every second-order term through that coordinate is 0); nearest: grad_grid is identically 0 and
grad_input depends on the grid only through integer taps, so the grid gets 0 there too; a
point with a NaN/Inf coordinate gets 0 second derivatives, as it gets 0 first ones. A third
derivative raises StnkitValueError (the double backward is not differentiable again).

Non-finite values, the rule of every backend (``sample``, ``warp`` on torch / cpp / triton),
which is ``grid_sample``'s:

- pixels: an output point adds weight * value over its taps inside the image (after padding;
  bilinear: floor(x) and floor(x) + 1 per axis, bicubic: floor(x) - 1 .. floor(x) + 2,
  nearest: the rounded pixel), also where the weight is 0 (integer coordinates); taps outside
  the image (zeros padding) are never read. So a NaN pixel makes NaN every output point that
  has it among its taps, and an Inf pixel gives +-Inf where its weight is non-zero and NaN
  where it is 0 (0 * Inf). The taps are those of the computed coordinate, after the
  near-knot snapping above (within that distance of a knot PyTorch's rounding may pick the
  other side).
- backward: grad_input[tap] += weight * grad_output over the same taps, so a NaN/Inf
  grad_output reaches every tap inside the image, zero weights included. A point one of whose
  taps holds NaN/Inf gets a non-finite grid gradient in every coordinate, even where the clip
  multiplier is 0 (nearest: 0 as always); theta gradients are non-finite exactly where those
  of grid generator + ``grid_sample`` are (the fused kernels sum in another order).
- coordinates (our choice; ``grid_sample``'s depends on mode and padding): a grid point with
  a NaN or +-Inf coordinate is outside the image in every padding mode: it samples 0 and gets
  0 gradient (grid and input). Finite coordinates, however large, follow the padding mode and
  never overflow an index (they are clamped first).
- huge finite coordinates, reflection: the mirror image is computed exactly (``fmod``) from
  the pixel coordinate as computed in the input's dtype, at any magnitude, so the result
  is always a sample inside the image. ``grid_sample``'s CPU kernel subtracts
  ``trunc(x / 2 span) * 2 span`` in the coordinate dtype, which loses whole pixels once
  ``|x_pix| * eps`` nears the span (float32: from about 1e6 pixels); there its values are
  rounding noise and ours differ from them. Below that every backend agrees with it to
  about ``|x_pix| * eps`` (the cpp and triton kernels compute the coordinate in one fused step, so
  their rounding differs from the grid path's by that much).

Implementation: vectorised torch ops only (``index_select`` / ``index_add_``), so it runs on
every device, and the backward is deterministic on CUDA under
``torch.use_deterministic_algorithms`` (``index_add_`` is). Per axis we compute the taps
(integer pixel, weight, d weight / d pixel); then each tap combination (2 x 2, 2 x 2 x 2,
4 x 4 or 1) gathers rows of a channels-last copy of the input with a zero margin, which
every tap outside the image reads. The fast fused kernels live in :mod:`stnkit.ops.kernels`.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from stnkit._checks import (
    check_choice,
    check_floating,
    check_same_batch,
    check_same_device,
    check_shape,
    check_tensor,
    fail,
    format_shape,
)
from stnkit.ops._precision import compute_dtype
from stnkit.ops.grids import MAX_PIXELS

__all__ = ["MODES", "PADDING_MODES", "sample"]

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")

_CUBIC_A = -0.75  # Keys' a, as in PyTorch's bicubic


def sample(input: Tensor, grid: Tensor, *, mode: str = "bilinear", padding_mode: str = "zeros",
           align_corners: bool = False) -> Tensor:
    """Sample ``input`` at the locations in ``grid`` (the spatial transformer's sampler).

    Same results as ``torch.nn.functional.grid_sample`` on finite coordinates (forward and
    both gradients), with our own forward and backward; see the module docstring for the
    formulas, padding and sub-gradient choices.

    Args:
        input: (B, C, H_in, W_in) or (B, C, D_in, H_in, W_in), floating.
        grid: (B, H, W, 2) of (x, y), or (B, D, H, W, 3) of (x, y, z), normalised [-1, 1];
            any floating dtype, device of ``input``. NaN/Inf points sample 0 (outside).
        mode: "bilinear", "nearest" or "bicubic" (4-D input only).
        padding_mode: "zeros", "border" or "reflection".
        align_corners: whether -1 and 1 are the centres (True) or outer edges (False) of the
            corner pixels.
    Returns:
        (B, C, H, W) or (B, C, D, H, W), dtype and device of ``input``. Computed in float64
        if input or grid is float64, else in float32 (``stnkit.ops``, "Mixed precision");
        the gradients have the dtypes of input and grid. Twice differentiable
        (``create_graph=True``); a third derivative raises.

    >>> import torch
    >>> from stnkit.ops import sample
    >>> sample(torch.arange(4.0).view(1, 1, 2, 2), torch.zeros(1, 1, 1, 2)).item()  # centre
    1.5
    """
    fn = "sample"
    check_tensor(input, name="input", fn=fn)
    check_tensor(grid, name="grid", fn=fn)
    if input.dim() not in (4, 5):
        fail(fn, "input", "of shape (B, C, H, W) or (B, C, D, H, W)", format_shape(input.shape))
    nd = input.dim() - 2
    check_shape(grid, ("B", "H", "W", 2) if nd == 2 else ("B", "D", "H", "W", 3), name="grid",
                fn=fn)
    check_floating(input, name="input", fn=fn)
    check_floating(grid, name="grid", fn=fn)
    check_same_device(input, grid, names=("input", "grid"), fn=fn)
    check_same_batch(input, grid, names=("input", "grid"), fn=fn)
    check_choice(mode, MODES, name="mode", fn=fn)
    check_choice(padding_mode, PADDING_MODES, name="padding_mode", fn=fn)
    if not isinstance(align_corners, bool):
        fail(fn, "align_corners", "a bool", repr(align_corners), error=TypeError)
    if mode == "bicubic" and nd == 3:
        fail(fn, "mode", "'bilinear' or 'nearest' for 5-D input", repr(mode))
    if any(s == 0 for s in input.shape[2:]):
        fail(fn, "input", "to have non-empty spatial dimensions", format_shape(input.shape))
    if math.prod(grid.shape[1:-1]) > MAX_PIXELS:
        fail(fn, "grid", f"to have at most {MAX_PIXELS} (2**31 - 1) points per image, the index "
             "limit", format_shape(grid.shape))

    work = compute_dtype(input, grid)  # no-op casts when both have it already
    out = _Sample.apply(input.to(work), grid.to(work), mode, padding_mode, align_corners)
    return out.to(input.dtype)


# ---------------------------------------------------------------------------------------------
# Per-axis taps
# ---------------------------------------------------------------------------------------------
#
# The input is copied once into a channels-last buffer with a zero margin of `pad` pixels on
# both sides of every spatial axis, flattened to rows (B * prod(S + 2 pad), C). Every tap
# outside the image (zeros padding) and every tap of a point with a NaN/Inf coordinate is
# steered into that margin: it reads 0 and its input gradient lands there and is dropped, so
# no masks are needed. Coordinates are first clamped to a range beyond which nothing changes
# (all taps outside, or all on the border pixel), which also keeps every index in range.


def _pad_width(mode: str, padding_mode: str) -> int:
    if mode == "bicubic":
        return 4 if padding_mode == "zeros" else 1
    return 2


class _Axis:
    """Taps of one axis, as flat row offsets already multiplied by the axis stride.

    Either consecutive taps ``idx0 + offsets[i]`` (``offsets`` Python ints) or arbitrary taps
    ``idx[i]``. ``w[i]``: weight (None: 1); ``dw[i]``: d w / d pixel (float or tensor);
    ``ddw[i]``: d^2 w / d pixel^2 (float or tensor; only for the double backward);
    ``mult``: d pixel / d normalised coordinate, including clip / reflection multipliers.
    """

    __slots__ = ("idx0", "offsets", "idx", "w", "dw", "ddw", "mult")

    def __init__(self, idx0, offsets, idx, w, dw, mult, ddw=None):
        self.idx0, self.offsets, self.idx = idx0, offsets, idx
        self.w, self.dw, self.ddw, self.mult = w, dw, ddw, mult

    def __len__(self) -> int:
        return len(self.w)


def _reflect(pix: Tensor, size: int, align_corners: bool, grad: bool):
    """Mirror ``pix`` into [low, low + span]; also d out / d pix (+-1) when ``grad``.

    ``align_corners``: mirrors at the corner pixel centres 0 and size - 1, else at the outer
    edges -0.5 and size - 0.5. Exact for any finite ``pix`` (``fmod`` is exact, and ``pix`` is
    reduced by the period before ``low`` is subtracted, which would round a huge ``pix``; the
    mirror is periodic, so any representative will do); NaN stays NaN.
    """
    low, span = (0.0, size - 1.0) if align_corners else (-0.5, float(size))
    if span == 0:  # one pixel with align_corners: everything maps onto it
        zero = pix * 0  # keeps NaN
        return zero, (zero if grad else None)
    t = torch.fmod(pix, 2 * span) - low  # = pix - low modulo the period 2 span
    extra = torch.fmod(t.abs(), 2 * span)  # position in the period [0, 2 span)
    flip = extra > span  # on the mirrored half of the period
    out = torch.where(flip, 2 * span - extra, extra) + low
    if not grad:
        return out, None
    sign = 1 - 2 * (flip ^ (t < 0)).to(pix.dtype)  # -1 where the mirror reverses direction
    return out, sign


def _snap(pix: Tensor, size: int) -> Tensor:
    """Round pixel coordinates within ``2 eps size`` of an integer to that integer.

    Normalised pixel centres (an identity grid) come back from the unnormalisation as
    k +- a few ulps (at most ``eps size``, measured for sizes up to 4096): snapped, they read
    pixel k exactly (identity warps are exact) and get the knot's stated sub-gradient instead
    of whichever side rounding picked. NaN and +-Inf pass through.
    """
    tol = 2 * torch.finfo(pix.dtype).eps * max(size, 1)
    r = torch.round(pix)
    return torch.where((pix - r).abs_() <= tol, r, pix)


def _cubic_weights(t: Tensor, grad: bool, hess: bool = False):
    """Keys cubic weights of the taps floor(x) - 1 + i (i = 0..3) at t = x - floor(x), their
    derivatives in t (``grad``) and second derivatives (``hess``; on [0, 1), so the right
    ones at a knot, where k'' jumps). k(s) = (a+2)|s|^3 - (a+3)|s|^2 + 1 for |s| <= 1,
    a|s|^3 - 5a|s|^2 + 8a|s| - 4a for 1 < |s| < 2, 0 beyond; tap i sits at s = t + 1 - i."""
    a = _CUBIC_A
    u = 1 - t
    w = [
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,  # s = 1 + t
        ((a + 2) * t - (a + 3)) * t * t + 1,  # s = t
        ((a + 2) * u - (a + 3)) * u * u + 1,  # s = 1 - t
        ((a * (u + 1) - 5 * a) * (u + 1) + 8 * a) * (u + 1) - 4 * a,  # s = 2 - t
    ]
    if not grad:
        return w, None, None
    dw = [  # d/dt; the last two depend on 1 - t, hence the minus signs
        (3 * a * (t + 1) - 10 * a) * (t + 1) + 8 * a,
        (3 * (a + 2) * t - 2 * (a + 3)) * t,
        -(3 * (a + 2) * u - 2 * (a + 3)) * u,
        -((3 * a * (u + 1) - 10 * a) * (u + 1) + 8 * a),
    ]
    if not hess:
        return w, dw, None
    ddw = [  # d^2/dt^2 (the two minus signs cancel)
        6 * a * (t + 1) - 10 * a,
        6 * (a + 2) * t - 2 * (a + 3),
        6 * (a + 2) * u - 2 * (a + 3),
        6 * a * (u + 1) - 10 * a,
    ]
    return w, dw, ddw


def _index(x: Tensor, stride: int, dtype: torch.dtype) -> Tensor:
    """Integer-valued float tensor -> flat row offset ``x * stride``."""
    x = x.to(dtype)
    return x if stride == 1 else x.mul_(stride)


def _axis_taps(coord: Tensor, size: int, stride: int, mode: str, padding_mode: str,
               align_corners: bool, grad: bool, itype: torch.dtype,
               hess: bool = False) -> _Axis:
    """Taps of one axis for normalised coordinates ``coord`` (B, P); ``grad``: also the
    derivatives needed by the backward; ``hess`` (with ``grad``): also the second derivatives
    of the weights (double backward); ``itype``: the index dtype."""
    # x_pix = (x + 1) / 2 * (size - 1)   or   ((x + 1) * size - 1) / 2
    if align_corners:
        scale = (size - 1) / 2
        pix = torch.add(coord, 1).mul_(scale)
    else:
        scale = size / 2
        pix = torch.add(coord, 1).mul_(scale).sub_(0.5)
    if padding_mode != "zeros":
        pix = pix.add_(coord * 0)  # +-Inf -> NaN, so that no clip / mirror brings it back inside
    if padding_mode == "reflection":
        big = torch.finfo(pix.dtype).max
        pix = pix.clamp_(-big, big)  # a huge finite coordinate may have overflowed to inf
    if mode != "nearest":
        pix = _snap(pix, size)

    if mode == "bicubic":
        # Padding acts on each of the 4 taps (integer pixels), not on the coordinate, so only
        # the unnormalisation scale multiplies dV/dx.
        if padding_mode == "zeros":
            hi = size + 1.5
            pix = pix.nan_to_num(-2.5, hi, -2.5).clamp_(-2.5, hi)  # beyond: all taps outside
        elif padding_mode == "border":
            pix = pix.clamp_(-2.5, size + 1.5)  # beyond: all taps on the border pixel
        x0 = torch.floor(pix)
        t = pix - x0
        if padding_mode != "zeros":
            t = t.nan_to_num_(0.0)  # non-finite points: finite weights; their taps hit the margin
        w, dw, ddw = _cubic_weights(t, grad, hess)
        if padding_mode == "zeros":
            i0 = _index(x0 - 1, stride, itype)
            return _Axis(i0, [0, stride, 2 * stride, 3 * stride], None, w, dw, scale, ddw)
        idx = []
        for i in range(4):
            tap = x0 + (i - 1)
            if padding_mode == "reflection":
                tap = _reflect(tap, size, align_corners, False)[0]
            tap = tap.clamp_(0, size - 1).nan_to_num_(-1.0)  # NaN -> the margin
            idx.append(_index(tap, stride, itype))
        return _Axis(None, None, idx, w, dw, scale, ddw)

    # bilinear / nearest: pad the coordinate, then interpolate with zeros outside.
    # Below lo every tap is in the margin, and NaN points go there. A local, not a module
    # float: torch.compile(dynamic=True) traces a global float as a symbol, and
    # nan_to_num's specialisation of it restarted the whole trace.
    lo = -1.5
    mult: Tensor | float = scale
    if padding_mode == "zeros":
        hi = size + 0.5
        pix = pix.nan_to_num(lo, hi, lo).clamp_(lo, hi)  # beyond: all taps outside
    else:
        if padding_mode == "reflection":
            pix, sign = _reflect(pix, size, align_corners, grad)
        if grad:
            # d clip / d x: 1 strictly inside (0, size - 1), 0 at or beyond the borders
            mult = ((pix > 0) & (pix < size - 1)).to(pix.dtype) * scale
            if padding_mode == "reflection":
                mult = mult * sign
        pix = pix.clamp_(0, size - 1).nan_to_num_(lo)  # NaN (non-finite point) -> the margin
    if mode == "nearest":
        # k(d) = delta(round(d)): one tap of weight 1; no gradient reaches the coordinate.
        i0 = _index(torch.round(pix), stride, itype)  # round half to even, like PyTorch
        return _Axis(i0, [0], None, [None], [None], 0.0, [None])
    # bilinear, k(d) = max(0, 1 - |d|): taps floor(x) and floor(x) + 1 with t = x - floor(x),
    # weights (1 - t, t) and d w / dx = (-1, +1) on this interval, so at an integer knot dV/dx
    # is the right derivative (our stated sub-gradient, PyTorch's too); d^2 w / dx^2 = 0.
    x0 = torch.floor(pix)
    t = pix - x0
    i0 = _index(x0, stride, itype)
    return _Axis(i0, [0, stride], None, [1 - t, t], [-1.0, 1.0], mult, [0.0, 0.0])


# ---------------------------------------------------------------------------------------------
# autograd.Function
# ---------------------------------------------------------------------------------------------


def _setup(input: Tensor, grid: Tensor, mode: str, padding_mode: str, align_corners: bool,
           grad: bool, hess: bool = False):
    """Per-axis taps and the (B, 1) row offset of each image in the padded buffer."""
    B = input.shape[0]
    in_size = tuple(input.shape[2:])  # (H_in, W_in) or (D_in, H_in, W_in)
    nd = len(in_size)
    pad = _pad_width(mode, padding_mode)
    padded = tuple(s + 2 * pad for s in in_size)
    g = grid.reshape(B, math.prod(grid.shape[1:-1]), nd)  # (B, P, nd), rows (x, y[, z])
    n_rows = B * math.prod(padded)
    # int32 indices where they fit (half the memory traffic of int64); the backward scatters
    # into the flat (n_rows * C,) buffer, so that bounds the index too. A symbolic size
    # (torch.export / compile with a dynamic batch) gets int64: no guard on the batch size.
    rows_total = n_rows * max(input.shape[1], 1)
    itype = torch.int32 if isinstance(rows_total, int) and rows_total < 2**31 - 1 else torch.int64
    axes = []
    offset = 0
    for d in range(nd):  # axis d (x, y, z) runs along input dim -1 - d
        k = nd - 1 - d
        stride = math.prod(padded[k + 1:])
        axes.append(_axis_taps(g[..., d], in_size[k], stride, mode, padding_mode, align_corners,
                               grad, itype, hess))
        offset += pad * stride
    base = torch.arange(B, dtype=itype, device=input.device).mul_(math.prod(padded)).add_(offset)
    return axes, base.unsqueeze(1), pad  # base: (B, 1)


def _rows(input: Tensor, pad: int) -> Tensor:
    """Channels-last copy of ``input`` with a zero margin: (B * prod(S + 2 pad), C)."""
    B, C = input.shape[:2]
    in_size = input.shape[2:]
    rows = input.new_zeros(B, *(s + 2 * pad for s in in_size), C)
    rows[(slice(None),) + tuple(slice(pad, pad + s) for s in in_size)] = input.movedim(1, -1)
    return rows.view(math.prod(rows.shape[:-1]), C)


def _gather(rows: Tensor, lin: Tensor) -> Tensor:
    """rows[lin] -> (len(lin), C); a single channel takes the (faster) 1-D path."""
    if rows.shape[1] == 1:
        return rows.view(-1).index_select(0, lin).unsqueeze(1)
    return rows.index_select(0, lin)


def _combinations(axes: list[_Axis], base: Tensor):
    """Yield (combo, flat row index (B*P,)) for each tap combination (one tap per axis)."""
    fixed = base
    for a in axes:
        if a.idx0 is not None:
            fixed = fixed + a.idx0
    for combo in itertools.product(*(range(len(a)) for a in axes)):
        lin, const = fixed, 0
        for a, i in zip(axes, combo):
            if a.offsets is not None:
                const += a.offsets[i]
            else:
                lin = lin + a.idx[i]
        if const:
            lin = lin + const
        yield combo, lin.reshape(-1)


def _product(ws):
    out = None
    for w in ws:
        if w is not None:
            out = w if out is None else out * w
    return out


class _Sample(torch.autograd.Function):
    """V = sum_q U_q prod_d k(x_d - q_d) with hand-derived dV/dU and dV/dx_d."""

    @staticmethod
    def forward(ctx, input, grid, mode, padding_mode, align_corners):
        ctx.save_for_backward(input, grid)
        ctx.options = (mode, padding_mode, align_corners)
        B, C = input.shape[:2]
        out_size = tuple(grid.shape[1:-1])  # (H, W) or (D, H, W)
        axes, base, pad = _setup(input, grid, mode, padding_mode, align_corners, grad=False)
        rows = _rows(input, pad)
        out = None
        for combo, lin in _combinations(axes, base):
            # V_i += U_q prod_d k(x_d - q_d)   for this tap combination q
            vals = _gather(rows, lin)  # (B*P, C)
            w = _product([a.w[i] for a, i in zip(axes, combo)])
            if w is None:
                out = vals if out is None else out.add_(vals)
            elif out is None:
                out = vals.mul_(w.reshape(-1, 1))
            else:
                out.addcmul_(vals, w.reshape(-1, 1))
        return out.view(B, *out_size, C).movedim(-1, 1).contiguous()  # (B, C, *out_size)

    @staticmethod
    def backward(ctx, grad_output):
        # The backward is itself an autograd.Function, so that create_graph=True gives a
        # backward that can be differentiated again (double backward, e.g. gradient penalties).
        input, grid = ctx.saved_tensors
        need_input, need_grid = ctx.needs_input_grad[:2]
        grad_input, grad_grid = _SampleBackward.apply(grad_output, input, grid, *ctx.options,
                                                      need_input, need_grid)
        return grad_input, grad_grid, None, None, None


class _SampleBackward(torch.autograd.Function):
    """(grad_input, grad_grid) = J^T grad_output of ``_Sample``, and its own VJP.

    grad_input_q = sum_i g_i W_q(x_i) is linear in g = grad_output with weights depending on
    the grid; grad_grid_i,d = m_d sum_q sum_c U_q g_i D_d W_q(x_i) is linear in g and in U
    (W_q = prod_d k(x_d - q_d), D_d = d / d pixel_d, m_d = d pixel_d / d x_d).
    """

    @staticmethod
    def forward(ctx, grad_output, input, grid, mode, padding_mode, align_corners, need_input,
                need_grid):
        ctx.save_for_backward(grad_output, input, grid)
        ctx.options = (mode, padding_mode, align_corners)
        ctx.set_materialize_grads(False)
        need_dgrid = need_grid and mode != "nearest"  # nearest: zero gradient to the grid
        B, C = input.shape[:2]
        in_size = tuple(input.shape[2:])
        nd = len(in_size)
        axes, base, pad = _setup(input, grid, mode, padding_mode, align_corners,
                                 grad=need_dgrid)
        P = math.prod(grid.shape[1:-1])
        g_rows = grad_output.movedim(1, -1).reshape(B * P, C)  # (B*P, C)
        if need_input:
            # flat (rows * C,) buffer: 1-D index_add_ is a tight loop on CPU (the 2-D one adds
            # row by row) and deterministic on CUDA under torch.use_deterministic_algorithms
            g_in = input.new_zeros(B * math.prod(s + 2 * pad for s in in_size) * C)
            channels = torch.arange(C, dtype=base.dtype, device=base.device)
        if need_dgrid:
            rows = _rows(input, pad)
            acc = [input.new_zeros(B * P) for _ in range(nd)]
        if need_input or need_dgrid:
            for combo, lin in _combinations(axes, base):
                ws = [a.w[i] for a, i in zip(axes, combo)]
                if need_input:
                    # dV_i/dU_q = prod_d k(x_d - q_d): scatter dL/dV_i back over the taps
                    # (the 4 neighbours in 2-D bilinear, 8 in 3-D, 16 bicubic, 1 nearest).
                    w = _product(ws)
                    src = g_rows if w is None else g_rows * w.reshape(-1, 1)  # (B*P, C)
                    flat = lin if C == 1 else (lin.unsqueeze(1) * C + channels).reshape(-1)
                    g_in.index_add_(0, flat, src.reshape(-1))
                if need_dgrid:
                    # dV_i/dx = sum_q U_q k'(x - q_x) k(y - q_y) [k(z - q_z)], likewise for y
                    # (and z), summed over the channels against dL/dV_i.
                    s = _gather(rows, lin) * g_rows  # (B*P, C)
                    s = s.view(-1) if C == 1 else s.sum(dim=1)  # (B*P,)
                    for d in range(nd):
                        others = _product([ws[e] for e in range(nd) if e != d]).reshape(-1)
                        dw = axes[d].dw[combo[d]]
                        if isinstance(dw, float):
                            acc[d].addcmul_(s, others, value=dw)
                        else:
                            acc[d].addcmul_(s, others * dw.reshape(-1))
        grad_input = grad_grid = None
        if need_input:
            crop = (slice(None),) + tuple(slice(pad, pad + s) for s in in_size)
            grad_input = g_in.view(B, *(s + 2 * pad for s in in_size), C)[crop].movedim(-1, 1)
        if need_dgrid:
            # chain rule through the unnormalisation (and clip / reflection multipliers);
            # non-finite points read only zeros, so their gradient is 0.
            cols = [acc[d] * (a.mult.reshape(-1) if isinstance(a.mult, Tensor) else a.mult)
                    for d, a in enumerate(axes)]
            grad_grid = torch.stack(cols, dim=1).view(grid.shape)
        elif need_grid:
            grad_grid = torch.zeros_like(grid)  # nearest: piecewise constant in the grid
        return grad_input, grad_grid

    @staticmethod
    def backward(ctx, gg_input, gg_grid):
        grad_output, input, grid = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        with torch.no_grad():
            grads = _double_backward(grad_output, input, grid, gg_input, gg_grid, *ctx.options,
                                     needs)
        if torch.is_grad_enabled():  # create_graph=True: a third derivative may be asked for
            grads = _ThirdOrder.apply(len(grads), *grads, grad_output, input, grid, gg_input,
                                      gg_grid)
        return (*grads, None, None, None, None, None)


def _mul(*factors):
    """Product of tensors / floats / None (= 1): a tensor, or a float when no tensor is given."""
    out, scalar = None, 1.0
    for f in factors:
        if f is None:
            continue
        if isinstance(f, Tensor):
            out = f if out is None else out * f
        else:
            scalar *= f
    if out is None or scalar == 0.0:
        return scalar
    return out if scalar == 1.0 else out * scalar


def _flat(x):
    return x.reshape(-1) if isinstance(x, Tensor) else x


def _double_backward(grad_output, input, grid, gg_input, gg_grid, mode, padding_mode,
                     align_corners, needs):
    """The VJP of (grad_input, grad_grid) = _SampleBackward(g, U, x) with (A, Z) = (gg_input,
    gg_grid) (either may be None = 0): (d g, d U, d x), None where not needed.

    With S^A_q = sum_c A_q g, S^U_q = sum_c U_q g and z_d = Z_d m_d (per grid point i):

        d g_i   = sum_q A_q W_q  +  sum_q U_q sum_d z_d D_d W_q      (sample(A) + a derivative)
        d U_q   = sum_i g_i sum_d z_d D_d W_q
        d x_i,e = m_e sum_q (S^A_q D_e W_q  +  S^U_q sum_d z_d D_e D_d W_q)

    D_e D_d W is dw_e dw_d prod_{others} w for e != d and ddw_d prod_{others} w for e == d
    (0 for bilinear); m is piecewise constant, so its derivative is taken as 0.
    """
    need_go, need_in, need_grid = needs
    A = gg_input
    Z = gg_grid if mode != "nearest" else None  # nearest: grad_grid is 0 whatever the inputs
    B, C = input.shape[:2]
    in_size = tuple(input.shape[2:])
    nd = len(in_size)
    P = math.prod(grid.shape[1:-1])
    out_size = tuple(grid.shape[1:-1])
    use_go = need_go and (A is not None or Z is not None)
    use_in = need_in and Z is not None  # grad_input does not depend on the input
    use_grid = need_grid and mode != "nearest" and (A is not None or Z is not None)
    grad = Z is not None or use_grid  # the weights' first derivatives are needed
    hess = Z is not None and use_grid and mode == "bicubic"  # bilinear: d^2 w / dx^2 = 0
    axes, base, pad = _setup(input, grid, mode, padding_mode, align_corners, grad=grad,
                             hess=hess)
    g_rows = grad_output.movedim(1, -1).reshape(B * P, C)  # (B*P, C)
    mults = [_flat(a.mult) for a in axes]
    if Z is not None:
        zm = [Z[..., d].reshape(-1) * mults[d] for d in range(nd)]  # z_d = Z_d m_d, (B*P,)
    if A is not None:
        a_rows = _rows(A, pad)
    if Z is not None and (use_go or use_grid):
        u_rows = _rows(input, pad)
    if use_go:
        d_go = input.new_zeros(B * P, C)
    if use_in:
        d_in = input.new_zeros(B * math.prod(s + 2 * pad for s in in_size) * C)
        channels = torch.arange(C, dtype=base.dtype, device=base.device)
    if use_grid:
        acc = [input.new_zeros(B * P) for _ in range(nd)]
    for combo, lin in _combinations(axes, base):
        ws = [_flat(a.w[i]) for a, i in zip(axes, combo)]
        if grad:
            dws = [_flat(a.dw[i]) for a, i in zip(axes, combo)]
            dW = [_mul(dws[d], *(ws[e] for e in range(nd) if e != d)) for d in range(nd)]
        if Z is not None:
            wz = _mul(zm[0], dW[0])  # sum_d z_d D_d W_q, (B*P,)
            for d in range(1, nd):
                wz = wz + _mul(zm[d], dW[d])
        if A is not None:
            av = _gather(a_rows, lin)  # (B*P, C)
            if use_go:
                w = _mul(*ws)  # W_q; 1.0 for nearest
                if isinstance(w, float):
                    d_go += av
                else:
                    d_go.addcmul_(av, w.reshape(-1, 1))
            if use_grid:
                s = (av * g_rows).sum(dim=1)  # S^A_q, (B*P,)
                for d in range(nd):
                    acc[d] += _mul(s, dW[d])
        if Z is not None:
            if use_go or use_grid:
                uv = _gather(u_rows, lin)  # (B*P, C)
            if use_go:
                d_go.addcmul_(uv, wz.reshape(-1, 1))
            if use_in:
                src = g_rows * wz.reshape(-1, 1)
                flat = lin if C == 1 else (lin.unsqueeze(1) * C + channels).reshape(-1)
                d_in.index_add_(0, flat, src.reshape(-1))
            if use_grid:
                s = (uv * g_rows).sum(dim=1)  # S^U_q, (B*P,)
                for e in range(nd):
                    for d in range(nd):
                        if d == e:
                            dd = _mul(_flat(axes[e].ddw[combo[e]]),
                                      *(ws[f] for f in range(nd) if f != e))
                        else:
                            dd = _mul(dws[e], dws[d],
                                      *(ws[f] for f in range(nd) if f not in (d, e)))
                        if not (isinstance(dd, float) and dd == 0.0):
                            acc[e] += _mul(s, zm[d], dd)
    d_go_out = d_in_out = d_grid_out = None
    if use_go:
        d_go_out = d_go.view(B, *out_size, C).movedim(-1, 1)
    elif need_go:
        d_go_out = torch.zeros_like(grad_output)
    if use_in:
        crop = (slice(None),) + tuple(slice(pad, pad + s) for s in in_size)
        d_in_out = d_in.view(B, *(s + 2 * pad for s in in_size), C)[crop].movedim(-1, 1)
    elif need_in:
        d_in_out = torch.zeros_like(input)
    if use_grid:
        cols = [_mul(acc[d], mults[d]) for d in range(nd)]
        d_grid_out = torch.stack(cols, dim=1).view(grid.shape)
    elif need_grid:
        d_grid_out = torch.zeros_like(grid)
    return d_go_out, d_in_out, d_grid_out


class _ThirdOrder(torch.autograd.Function):
    """Passes the double backward's first ``n`` arguments (its results) through, attached to
    the graph of the others (what they were computed from); differentiating them again (a third
    derivative of ``sample``) raises instead of returning a silent None or a wrong value."""

    @staticmethod
    def forward(ctx, n, *tensors):
        return tuple(None if g is None else g.view_as(g) for g in tensors[:n])

    @staticmethod
    def backward(ctx, *grads):
        fail("sample", "derivatives", "of order at most 2 (the double backward is not "
             "differentiable)", "a request for a third derivative")
