"""Fused CPU warp kernels (Numba): the sampling grid is never materialised.

Each output pixel's source coordinate is computed on the fly from theta and sampled at once
(affine and projective 2-D, affine 3-D; bilinear and nearest; zeros / border / reflection
padding; both ``align_corners``; float16, bfloat16, float32 and float64 images and theta in
any mix). Same results as the ``"torch"``
backend (``affine_grid`` / ``projective_grid`` + ``stnkit.ops.sample``, i.e.
``F.grid_sample`` semantics, NaN/Inf or w <= 0 points outside), up to float rounding.

Precision (the policy of ``stnkit.ops._precision``): the kernels compute in float64 when the
image or theta is float64, else in float32. A float16 / bfloat16 image (Numba has no bfloat16
type) is converted to float32 once at the operator's boundary, warped in float32 and the
output rounded back to its dtype; the backward likewise (grad_input is accumulated in float32
and rounded to the image's dtype, grad_theta goes to theta's). The conversions are Numba
loops (``_numba_half``, bit-exact with ``Tensor.to``), not ``Tensor.to``, whose OpenMP
threads would compete with the kernel's. The coefficients are computed in
float64 from theta whatever its dtype. ``benchmarks/warp_half.py`` measures this against the
torch path and ``F.grid_sample`` on bfloat16.

Operators (``_library``): ``stnkit::warp`` runs ``_forward``, ``stnkit::warp_backward`` runs
``_backward`` (second derivatives: through the torch path, see ``_library``).

Backward: grad_input is
scattered straight into its (B, C, H, W) result, and grad_theta is accumulated as per-row
sums (float64) of dL/dx * j, dL/dx, ... that are combined into the 6 / 8 / 12 entries at the
end: no (B, H, W, 2) grid or grid gradient exists at any point. Sub-gradients are those of
``stnkit.ops.sample`` (right derivative at integer knots; 0 at and beyond the clip points).

Parallel backward without races or atomics (``_plan``): the work is cut into tasks that
never write the same grad_input element at the same time -- whole images, single channels,
or, for affine maps whose geometry allows it (``_band_rows``), bands of output rows run in
two phases so that bands running together are never neighbours. The order of accumulation
inside a task is fixed, so the backward gives the same bits on every run at a given thread
count. Only when no such cut gives every thread work (fewer images than threads, one
channel, and projective or a clipping border / reflection padding) do the rows of an image go
to threads that scatter into private copies of grad_input (one extra input-sized buffer per
extra thread, summed in a fixed order).

Deterministic mode (``deterministic=True``, or ``torch.use_deterministic_algorithms``):
only cuts that do not depend on the thread count (bands, else whole images), so the bits
are also the same for every ``torch.set_num_threads``; it can be slower when there are
fewer images than threads. (A race-free "pull" backward -- each input pixel gathering from
the output pixels whose footprint covers it -- was measured for affine/zeros/C=1 at 512x512:
5.1 ms against 0.9 ms for the scatter, one thread; the two-phase bands give the same
freedom from races at the scatter's speed, so the pull was not kept.)

Threads: ``torch.get_num_threads()``. Threading layer, disk cache and the first-compile
note: see ``_numba_runtime``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from stnkit.ops._precision import compute_dtype
from stnkit.ops.kernels import _numba_2d, _numba_3d, _numba_half
from stnkit.ops.kernels._geometry import axes_coefficients
from stnkit.ops.kernels._library import register
from stnkit.ops.kernels._numba_common import BILINEAR, NEAREST
from stnkit.ops.kernels._numba_runtime import launch

__all__ = ["supports", "warp"]

_MODES = {"bilinear": BILINEAR, "nearest": NEAREST}
_PADS = {"zeros": 0, "border": 1, "reflection": 2}
# Output tiles (measured on a 2-core Zen 5, 1 thread; see the report of issue 7). Forward:
# 2-D tiles of 64 x 16 keep the input footprint of a tile in L1 under rotation, which pays
# for one channel and for big images; several channels of a cache-sized image go faster in
# whole rows (one tap computation serves all channels, and the planes' rows stream through
# L2). Backward: whole rows of about 512 pixels at every size (3 channels: 1.2-1.4x faster
# than 64 x 16 at 224^2 - 2048^2; 3-D 96^3: 1.2-1.3x, its 21 scratch rows then fit in L1;
# one 2-D channel: the same).
_BIG_IMAGE = 8 * 2**20  # bytes of one batch item's input


def _threads() -> int:
    """Threads the kernels use: torch's, capped at Numba's pool size (as ``launch`` does)."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _tiles(input: Tensor, backward: bool = False) -> tuple[int, int]:
    """(TW, L): tile width (images at most TW wide are cut into whole rows) and pixels a
    tile, for the kernels' ``tiling``."""
    if backward:
        return 4096, 512
    if input.shape[1] == 1 or input[0].numel() * input.element_size() > _BIG_IMAGE:
        return 64, 1024
    return 4096, 512  # whole rows up to 4096 pixels (bounds the per-thread scratch)


_MAX_PLANE = 2**31  # input pixels per channel: 32-bit tap offsets


def supports(input: Tensor, theta: Tensor, *, transform: str, mode: str,
             padding_mode: str) -> str | None:
    """None if the numba kernels handle this call, else a one-line reason."""
    if input.device.type != "cpu":
        return f"the numba kernels run on the CPU only (input is on {input.device})"
    if not (input.is_floating_point() and theta.is_floating_point()):
        return f"the numba kernels take floating images and theta (got {input.dtype}, " \
               f"{theta.dtype})"
    if transform not in ("affine", "projective"):
        return f"transform {transform!r} runs on the torch backend (numba: affine, projective)"
    if mode not in _MODES:
        return f"mode {mode!r} runs on the torch backend (numba: bilinear, nearest)"
    if padding_mode not in _PADS:
        return f"unknown padding_mode {padding_mode!r}"
    if input.dim() == 5 and transform != "affine":
        return "5-D input supports the affine transform only"
    if math.prod(input.shape[2:]) >= _MAX_PLANE:
        return "the input has 2**31 or more pixels per channel (32-bit offsets)"
    return None


def warp(input: Tensor, theta: Tensor, *, transform: str, size: tuple[int, ...], mode: str,
         padding_mode: str, align_corners: bool, deterministic: bool) -> Tensor:
    """Fused grid + sample (arguments already validated by ``stnkit.ops.warp``).

    Args:
        input: (B, C, H, W) or (B, C, D, H, W), floating, CPU.
        theta: (B, 2, 3) affine, (B, 3, 3) projective or (B, 3, 4) 3-D affine, floating.
        size: output spatial size (H_out, W_out) or (D_out, H_out, W_out).
        deterministic: backward bits independent of the thread count too (see module doc).
    Returns:
        (B, C, *size), dtype of ``input``.
    """
    return warp_op(input, theta, list(size), transform, mode, padding_mode, align_corners,
                   deterministic)


# ---------------------------------------------------------------------------------------------
# Coefficients: theta -> output pixel index (j, i[, k]) to input pixel coordinates
# ---------------------------------------------------------------------------------------------


def _coefficients(theta: np.ndarray, projective: bool, axes) -> np.ndarray:
    """(B, 9) (2-D) or (B, 12) (3-D) float64, see ``_numba_2d`` / ``_numba_3d``.

    ``axes`` lists ``axis_coefficients`` per coordinate (x, y[, z]). Row r of the result maps
    the output index vector (j, i[, k], 1) to input pixel coordinate r (numerator for
    projective).
    """
    nd = len(axes)
    a = np.array([ax[0] for ax in axes])
    b = np.array([ax[1] for ax in axes])
    s = np.array([ax[2] for ax in axes])
    o = np.array([ax[3] for ax in axes])
    # normalised point (x, y[, z], 1) = P @ (j, i[, k], 1)
    P = np.zeros((nd + 1, nd + 1))
    P[np.arange(nd), np.arange(nd)] = a
    P[:nd, nd] = b
    P[nd, nd] = 1.0
    with np.errstate(all="ignore"):  # NaN / Inf theta: outside, handled by the kernels
        m = theta @ P  # (B, rows, nd + 1): normalised rows in terms of output indices
        if projective:  # pixel = (s u + o w) / w
            num = s[None, :, None] * m[:, :nd] + o[None, :, None] * m[:, nd:nd + 1]
            pix = np.concatenate([num, m[:, nd:nd + 1]], axis=1)
        else:
            pix = s[None, :, None] * m
            pix[:, :, nd] += o
    return pix.reshape(theta.shape[0], pix.shape[1] * pix.shape[2])


def _theta_grad(rows: np.ndarray, axes, projective: bool, out_shape) -> np.ndarray:
    """d L / d theta from the kernels' per-row sums.

    ``rows`` (B, G, R, 2 * nd (+2)): per output row (2-D: i; 3-D: k * Ho + i) the sums
    ``sum e_c j`` and ``sum e_c`` for each coordinate c (e_c = dL/d pixel coordinate c, times
    1/w for projective), then ``sum s j``, ``sum s`` (projective).
    """
    nd = len(axes)
    r = rows.sum(axis=1)  # (B, R, K), fixed order: deterministic
    B = r.shape[0]
    # normalised coordinates of each row: y (2-D), or (y, z) per (k, i) (3-D)
    if nd == 2:
        Ho = out_shape[0]
        ys = [axes[1][0] * np.arange(Ho) + axes[1][1]]
    else:
        Do, Ho = out_shape[0], out_shape[1]
        ys = [np.tile(axes[1][0] * np.arange(Ho) + axes[1][1], Do),
              np.repeat(axes[2][0] * np.arange(Do) + axes[2][1], Ho)]
    nrow = nd + 1 if projective else nd
    grad = np.empty((B, nrow, nd + 1))
    # NaN / Inf row sums (from NaN / Inf pixels or upstream gradients) propagate as in the
    # torch path; numpy's warnings about them are not news to the caller.
    with np.errstate(invalid="ignore", over="ignore"):
        for c in range(nrow):
            sj = r[:, :, 2 * c].sum(axis=1)
            s1 = r[:, :, 2 * c + 1].sum(axis=1)
            grad[:, c, 0] = axes[0][0] * sj + axes[0][1] * s1
            for d, y in enumerate(ys):
                grad[:, c, d + 1] = r[:, :, 2 * c + 1] @ y
            grad[:, c, nd] = s1
            # d pixel / d normalised: s for the coordinate rows; -1 (already in pixels) for w
            grad[:, c] *= axes[c][2] if c < nd else -1.0
    return grad


# ---------------------------------------------------------------------------------------------
# Backward work plan (see the module docstring)
# ---------------------------------------------------------------------------------------------


def _band_rows(cf: np.ndarray, nd: int, in_size, out_size, pad: int, projective: bool):
    """Rows per band such that bands two apart never touch the same input pixel, or None.

    Output row index r (2-D: i; 3-D: depth k, in slices) is a linear function of the source
    point; over the 2 x 2 (x 2) footprint of one input pixel it varies by
    ``l = 2 * sum |d r / d source|``, so bands of more than l rows keep bands k and k + 2
    apart. Border / reflection padding fold the plane, so they qualify only when every
    sample lies strictly inside the image (then they do nothing).
    """
    if projective:
        return None
    B = cf.shape[0]
    M = cf.reshape(B, nd, nd + 1)
    if not np.all(np.isfinite(M)):
        return None
    lin = M[:, :, :nd]  # (B, nd, nd): d source / d (j, i[, k])
    if np.any(np.abs(np.linalg.det(lin)) < 1e-12):
        return None
    inv = np.linalg.inv(lin)  # rows: d (j, i[, k]) / d source
    ell = 2.0 * np.abs(inv[:, nd - 1, :]).sum(axis=1).max()
    if not np.isfinite(ell) or ell > 1e6:
        return None
    if pad != 0:
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in reversed(out_size)],
                                       indexing="ij")).reshape(nd, -1)  # (nd, 2**nd): (j, i..)
        src = lin @ corners + M[:, :, nd:]  # (B, nd, 2**nd)
        hi = np.array(list(reversed(in_size)), dtype=float)[None, :, None] - 1
        if not (np.all(src > 1e-6) and np.all(src < hi - 1e-6)):
            return None
    n_band_axis = out_size[0]
    return max(math.ceil(ell) + 2, math.ceil(n_band_axis / 64))


def _plan(B: int, C: int, n_axis: int, row_mult: int, need_input: bool, deterministic: bool,
          band: int | None, threads: int):
    """(tasks (n, 7) int64, phases, n_private, groups) for ``backward``.

    Rows are output rows (2-D: Ho) or (depth, row) pairs (3-D: Do * Ho); ``n_axis`` is the
    length of the band axis (Ho or Do) and ``row_mult`` the rows per unit of it (1 or Ho).
    Cuts: "images" (one task per image), "bands" (two phases of row bands, see
    ``_band_rows``), "channels" (one task per (image, channel); theta sums per channel) and
    "private" (row chunks scattering into private grad_input copies). ``deterministic``
    allows only images and bands, whose bits do not depend on ``threads``.
    """
    rows = n_axis * row_mult
    tasks = []
    if not need_input:  # only grad_theta: no scatter, any split is race-free
        per = min(n_axis, max(1, -(-4 * threads // B)))
        for b in range(B):
            for k in range(per):
                tasks.append((b, 0, C, k * n_axis // per * row_mult,
                              (k + 1) * n_axis // per * row_mult, -1, 0))
        return np.array(tasks, np.int64), np.array([0, len(tasks)], np.int64), 0, 1
    banded = band is not None and n_axis > band
    if deterministic:  # cuts that do not depend on the thread count
        how = "bands" if banded else "images"
    elif B >= 4 * threads or threads == 1:
        how = "images"
    elif banded:
        how = "bands"
    elif C > 1 and B * C >= 2 * threads:
        how = "channels"
    else:
        how = "images" if B >= threads else "private"
    if how == "images":
        tasks = np.zeros((B, 7), np.int64)
        tasks[:, 0] = np.arange(B)
        tasks[:, 2], tasks[:, 4], tasks[:, 5] = C, rows, -1
        return tasks, np.array([0, B], np.int64), 0, 1
    if how == "bands":
        nb = -(-n_axis // band)
        for parity in (0, 1):
            for b in range(B):
                for k in range(parity, nb, 2):
                    tasks.append((b, 0, C, k * band * row_mult,
                                  min(n_axis, (k + 1) * band) * row_mult, -1, 0))
        split = sum(1 for t in tasks if (t[3] // (band * row_mult)) % 2 == 0)
        return np.array(tasks, np.int64), np.array([0, split, len(tasks)], np.int64), 0, 1
    if how == "channels":
        tasks = [(b, c, c + 1, 0, rows, -1, c) for b in range(B) for c in range(C)]
        return np.array(tasks, np.int64), np.array([0, len(tasks)], np.int64), 0, C
    per = -(-threads // B)  # row chunks per image; chunk 0 writes grad_input itself
    n_priv = 0
    for b in range(B):
        for k in range(per):
            buf = -1
            if k > 0:
                buf = n_priv
                n_priv += 1
            tasks.append((b, 0, C, k * n_axis // per * row_mult,
                          (k + 1) * n_axis // per * row_mult, buf, 0))
    return np.array(tasks, np.int64), np.array([0, len(tasks)], np.int64), n_priv, 1


# ---------------------------------------------------------------------------------------------
# The kernels behind the operators stnkit::warp / stnkit::warp_backward (see ``_library``)
# ---------------------------------------------------------------------------------------------


def _np(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


_WIDEN = {torch.bfloat16: _numba_half.widen_bf16, torch.float16: _numba_half.widen_f16}
_NARROW = {torch.bfloat16: _numba_half.narrow_bf16, torch.float16: _numba_half.narrow_f16}


def _widened(x: Tensor, work: torch.dtype) -> np.ndarray:
    """``x`` as a C-contiguous array of the compute dtype ``work``; a 16-bit tensor is widened
    on Numba's side (``_numba_half``: no OpenMP region right before a kernel)."""
    if x.dtype not in _WIDEN:
        return _np(x.to(work))
    bits = _np(x.view(torch.int16)).view(np.uint16)
    out = np.empty(bits.shape, np.float32)
    launch(_WIDEN[x.dtype], f"widen {x.dtype}", bits.reshape(-1), out.reshape(-1))
    return out if work == torch.float32 else out.astype(np.float64)


def _narrowed(x: Tensor, dtype: torch.dtype) -> Tensor:
    """The compute-dtype result ``x`` (contiguous) in ``dtype``: float32 -> 16 bits on Numba's
    side, rounded as ``Tensor.to`` rounds; anything else by ``Tensor.to`` (a no-op for the
    same dtype)."""
    if dtype not in _NARROW or x.dtype != torch.float32:
        return x.to(dtype)
    bits = np.empty(x.shape, np.uint16)
    launch(_NARROW[dtype], f"narrow {dtype}", x.numpy().reshape(-1), bits.reshape(-1))
    return torch.from_numpy(bits.view(np.int16)).view(dtype)


def _forward(input: Tensor, theta: Tensor, size, transform: str, mode: str, padding_mode: str,
             align: bool, deterministic: bool) -> Tensor:
    """output = sample(input, grid(theta)) computed without the grid."""
    projective, size, mode, pad = (transform == "projective", tuple(size), _MODES[mode],
                                   _PADS[padding_mode])
    nd = input.dim() - 2
    B, C = input.shape[:2]
    in_size = tuple(input.shape[2:])
    axes = axes_coefficients(size, in_size, align)
    cf64 = _coefficients(theta.detach().double().numpy(), projective, axes)
    work, dtype = compute_dtype(input, theta), input.dtype  # 16-bit images: warped in float32
    out = torch.empty((B, C, *size), dtype=work)
    if out.numel() == 0:
        return out.to(dtype)
    x = _widened(input, work)
    input = torch.from_numpy(x)
    cf = cf64.astype(x.dtype)
    P = math.prod(in_size)
    dt = "float32" if x.dtype == np.float32 else "float64"
    chunks = 8 * _threads()
    if nd == 2:
        launch(_numba_2d.forward, f"2-D forward {dt}", x.reshape(B, C, P), in_size[0],
               in_size[1], cf, out.numpy().reshape(B, C, -1), size[0], size[1], projective,
               mode, pad, align, *_tiles(input), chunks)
    else:
        launch(_numba_3d.forward, f"3-D forward {dt}", x.reshape(B, C, P), *in_size, cf,
               out.numpy().reshape(B, C, -1), *size, mode, pad, align, *_tiles(input), chunks)
    return _narrowed(out, dtype)  # no copy unless the image is 16-bit


def _backward(grad_out: Tensor, input: Tensor, theta: Tensor, size, transform: str, mode: str,
              padding_mode: str, align: bool, deterministic: bool, need_input: bool,
              need_theta_out: bool):
    """(grad_input or None, grad_theta or None) as described in the module docstring
    (formulas in ``_numba_2d.backward`` / ``_numba_3d.backward``)."""
    projective, size, mode, pad = (transform == "projective", tuple(size), _MODES[mode],
                                   _PADS[padding_mode])
    nd = input.dim() - 2
    axes = axes_coefficients(size, tuple(input.shape[2:]), align)
    cf64 = _coefficients(theta.detach().double().numpy(), projective, axes)
    need_theta = need_theta_out and mode == BILINEAR  # nearest: zero grid gradient
    B, C = input.shape[:2]
    in_size = tuple(input.shape[2:])
    theta_shape = (B, 3, 3) if projective else (B, nd, nd + 1)
    if input.numel() == 0 or (not need_input and not need_theta):
        gin = torch.zeros_like(input) if need_input else None
        gtheta = torch.zeros(theta_shape, dtype=theta.dtype) if need_theta_out else None
        return gin, gtheta
    work = compute_dtype(input, theta)  # float16 / bfloat16: accumulated in float32
    # grad_input is zeroed by the kernel itself (torch.zeros_like would run an OpenMP fill
    # right before the Numba launch, whose spinning threads then compete for the cores)
    gin = torch.empty(input.shape, dtype=work) if need_input else None
    dtype = input.dtype
    x = _widened(input, work)
    input = torch.from_numpy(x)
    g = _widened(grad_out, work)
    cf = cf64.astype(x.dtype)
    P = math.prod(in_size)
    threads = _threads()
    wants_band = need_input and (deterministic or 1 < threads and B < 4 * threads)
    band = _band_rows(cf64, nd, in_size, size, pad, projective) if wants_band else None
    row_mult = 1 if nd == 2 else size[1]
    tasks, phases, n_priv, groups = _plan(B, C, size[0], row_mult, need_input,
                                          deterministic, band, threads)
    gin_np = gin.numpy().reshape(B, C, P) if need_input else np.zeros((B, C, 1), x.dtype)
    priv = np.zeros((n_priv, C, P if need_input else 1), x.dtype)
    nrows = size[0] * row_mult
    ncols = 6 if projective else 2 * nd
    rows = np.zeros((B, groups, nrows if need_theta else 0, ncols))
    dt = "float32" if x.dtype == np.float32 else "float64"
    if nd == 2:
        launch(_numba_2d.backward, f"2-D backward {dt}", x.reshape(B, C, P), in_size[0],
               in_size[1], cf, g.reshape(B, C, -1), size[0], size[1], projective, mode,
               pad, align, *_tiles(input, backward=True), axes[0][3], axes[1][3], gin_np,
               priv, rows, tasks, phases, min(threads, len(tasks)), need_input, need_theta)
    else:
        launch(_numba_3d.backward, f"3-D backward {dt}", x.reshape(B, C, P), *in_size, cf,
               g.reshape(B, C, -1), *size, mode, pad, align, *_tiles(input, backward=True),
               gin_np, priv, rows, tasks, phases, min(threads, len(tasks)), need_input,
               need_theta)
    if n_priv:
        for b, buf in tasks[tasks[:, 5] >= 0][:, [0, 5]]:  # fixed order
            gin_np[b] += priv[buf]
    gtheta = None
    if need_theta_out:
        if need_theta:
            gtheta = torch.from_numpy(_theta_grad(rows, axes, projective, size)).to(
                theta.dtype)
        else:
            gtheta = torch.zeros(theta_shape, dtype=theta.dtype)
    return (None if gin is None else _narrowed(gin, dtype)), gtheta


warp_op, warp_backward_op = register("warp", _forward, _backward)
