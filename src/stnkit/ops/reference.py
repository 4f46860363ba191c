"""Slow, literal NumPy float64 transcription of the paper's sampler: the oracle of the tests.

Jaderberg et al. (2015), eq. 3-7. For an input U (C, H, W) and a sampling point (x, y) in
pixel coordinates, every channel of the output is

    V = sum_n sum_m U_nm k(x - m) k(y - n)                                   (3)

with the kernels

- bilinear (eq. 5):  ``k(d) = max(0, 1 - |d|)``;
- nearest (eq. 4):   ``k(d) = delta(floor(d + 0.5))``, 1 where ``floor(x + 0.5) = m``;
- bicubic (beyond the paper; PyTorch's): Keys' cubic convolution with a = -0.75,
  ``k(d) = (a+2)|d|^3 - (a+3)|d|^2 + 1`` for ``|d| <= 1``,
  ``a|d|^3 - 5a|d|^2 + 8a|d| - 4a`` for ``1 < |d| < 2`` and 0 beyond.

In 3-D a third factor ``k(z - l)`` and a sum over l. The gradients are eq. 6 and 7:

    dV/dU_nm = k(x - m) k(y - n)                                             (6)
    dV/dx    = sum_n sum_m U_nm k(y - n) k'(x - m)                           (7)

where, for bilinear, the paper's ``k'(x - m)`` is 0 if ``|m - x| >= 1``, 1 if ``m >= x`` and -1
if ``m < x`` (``subgradient="paper"``). Away from integer x this is the derivative; at an integer
knot x = j it gives ``dV/dx = sum_n U_nj k(y - n)``, which is neither one-sided derivative.
``subgradient="floor"`` instead differentiates the interpolant on [floor(x), floor(x) + 1]
(the right derivative, ``U_n,j+1 - U_nj`` weighted by k(y - n)), which is what
:func:`stnkit.ops.sample` and PyTorch's ``grid_sample`` use. The nearest kernel's derivative is
taken as 0 and the cubic kernel is C^1, so both choices agree for those modes.

Terms outside the kernel's support vanish, so every sum runs over the lattice points within
two pixels of the sampling point instead of over the whole image (identical for zero padding,
and it lets the padded image extend without bounds).

Padding is applied to the image, literally: the sum runs over the infinite integer lattice
and a lattice point q outside the image reads ``U[pad_index(q)]``: nothing (zeros), the nearest
border pixel (border) or the mirrored pixel (reflection; mirrors at the corner pixel centres
when ``align_corners`` else at the outer edges). For bilinear and nearest this gives the same
values as PyTorch's clipping / reflecting of the coordinate, and the same gradients except at
the clip points themselves, where PyTorch (and ``sample``) set dV/dx to 0; for bicubic it is
exactly what PyTorch does. Two ties differ by design: nearest at an exact half-pixel rounds
half up here (the paper) and half to even in PyTorch.

A grid point with a NaN/Inf coordinate samples 0 and gets 0 gradient (outside, the project's
contract). Tiny sizes only: this is slow on purpose.
"""

from __future__ import annotations

import math

import numpy as np

from stnkit._checks import check_choice

__all__ = [
    "KERNELS",
    "SUBGRADIENTS",
    "bilinear_kernel",
    "bilinear_kernel_grad",
    "cubic_kernel",
    "cubic_kernel_grad",
    "interpolate_2d",
    "interpolate_2d_grad",
    "interpolate_3d",
    "interpolate_3d_grad",
    "nearest_kernel",
    "nearest_kernel_grad",
    "normalize",
    "pad_index",
    "sample",
    "sample_grad",
    "unnormalize",
    "unnormalize_scale",
]

CUBIC_A = -0.75
SUBGRADIENTS = ("paper", "floor")
"""The sub-gradient choices at integer knots: ``"paper"`` (the paper's formula as written) or
``"floor"`` (the right derivative, as ``F.grid_sample``)."""
_MAX = float(np.finfo(np.float64).max)


# ---------------------------------------------------------------------------------------------
# Kernels k(d), d = x - m, and their derivatives d k(x - m) / dx
# ---------------------------------------------------------------------------------------------


def bilinear_kernel(d: float) -> float:
    """k(d) = max(0, 1 - |d|)   (eq. 5)."""
    return max(0.0, 1.0 - abs(d))


def bilinear_kernel_grad(d: float, subgradient: str = "paper") -> float:
    """d k(x - m) / dx at d = x - m.

    "paper" (eq. 7): 0 if |m - x| >= 1, 1 if m >= x, -1 if m < x.
    "floor": the derivative on [floor(x), floor(x) + 1]: 1 for -1 <= d < 0, -1 for 0 <= d < 1.
    """
    check_choice(subgradient, SUBGRADIENTS, name="subgradient", fn="bilinear_kernel_grad")
    if subgradient == "paper":
        if abs(d) >= 1:
            return 0.0
        return 1.0 if d <= 0 else -1.0  # m >= x  <=>  d <= 0
    if subgradient == "floor":
        if -1 <= d < 0:
            return 1.0
        if 0 <= d < 1:
            return -1.0
    return 0.0


def nearest_kernel(d: float) -> float:
    """k(d) = delta(floor(d + 0.5))   (eq. 4: 1 where floor(x + 0.5) = m)."""
    return 1.0 if math.floor(d + 0.5) == 0 else 0.0


def nearest_kernel_grad(d: float, subgradient: str = "paper") -> float:
    """Piecewise constant: derivative 0 (taken as 0 at the jumps too)."""
    return 0.0


def cubic_kernel(d: float, a: float = CUBIC_A) -> float:
    """Keys' cubic convolution kernel (PyTorch's bicubic uses a = -0.75)."""
    s = abs(d)
    if s <= 1:
        return (a + 2) * s**3 - (a + 3) * s**2 + 1
    if s < 2:
        return a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
    return 0.0


def cubic_kernel_grad(d: float, subgradient: str = "paper", a: float = CUBIC_A) -> float:
    """d k(x - m) / dx = k'(d); the kernel is C^1, so there is no sub-gradient choice."""
    s = abs(d)
    sign = 1.0 if d >= 0 else -1.0
    if s <= 1:
        return sign * (3 * (a + 2) * s**2 - 2 * (a + 3) * s)
    if s < 2:
        return sign * (3 * a * s**2 - 10 * a * s + 8 * a)
    return 0.0


KERNELS = {
    "bilinear": (bilinear_kernel, bilinear_kernel_grad),
    "nearest": (nearest_kernel, nearest_kernel_grad),
    "bicubic": (cubic_kernel, cubic_kernel_grad),
}
"""The sampling kernels k(d) of the paper's sampler by ``mode`` name (bilinear, nearest, bicubic),
as the reference sampler evaluates them."""


# ---------------------------------------------------------------------------------------------
# Coordinates and padding
# ---------------------------------------------------------------------------------------------


def unnormalize(coord: float, size: int, align_corners: bool) -> float:
    """Normalised [-1, 1] -> pixel: [0, size - 1] (align_corners) or [-0.5, size - 0.5].

    Results beyond the float range are clamped to +-max (a finite coordinate stays finite).
    """
    coord = float(coord)  # Python floats overflow to inf quietly (numpy scalars warn)
    if align_corners:
        pix = (coord + 1) / 2 * (size - 1)
    else:
        pix = ((coord + 1) * size - 1) / 2
    return min(max(pix, -_MAX), _MAX) if math.isfinite(coord) else pix


def unnormalize_scale(size: int, align_corners: bool) -> float:
    """d pixel / d normalised coordinate."""
    return (size - 1) / 2 if align_corners else size / 2


def normalize(pix: float, size: int, align_corners: bool) -> float:
    """Pixel -> normalised; the inverse of :func:`unnormalize` (size > 1 with align_corners)."""
    if align_corners:
        return 2 * pix / (size - 1) - 1
    return (2 * pix + 1) / size - 1


def pad_index(i: int, size: int, padding_mode: str, align_corners: bool) -> int | None:
    """The pixel that lattice point ``i`` of the padded image reads, or None (reads 0).

    zeros: ``i`` inside the image, else None. border: the nearest border pixel.
    reflection: mirrored at the corner pixel centres 0 and size - 1 (align_corners; period
    2 (size - 1)) or at the outer edges -0.5 and size - 0.5 (period 2 size).
    """
    check_choice(padding_mode, ("zeros", "border", "reflection"), name="padding_mode",
                 fn="pad_index")
    if padding_mode == "zeros":
        return i if 0 <= i < size else None
    if padding_mode == "border":
        return min(max(i, 0), size - 1)
    # reflection
    if align_corners:
        if size == 1:
            return 0
        j = i % (2 * (size - 1))
        return j if j <= size - 1 else 2 * (size - 1) - j
    j = i % (2 * size)
    return j if j < size else 2 * size - 1 - j


def _check(mode: str, padding_mode: str, subgradient: str = "paper") -> None:
    for name, value, choices in (("mode", mode, tuple(KERNELS)),
                                 ("padding_mode", padding_mode, ("zeros", "border", "reflection")),
                                 ("subgradient", subgradient, SUBGRADIENTS)):
        check_choice(value, choices, name=name, fn="reference")


def _window(x: float) -> list[tuple[int, float]]:
    """``(m, x - m)`` for the lattice points m with |x - m| < 2 (the only ones any kernel
    weighs). ``x - m`` is formed as ``(x - floor(x)) - j``, exact even for huge x."""
    f = math.floor(x)  # a Python int: exact for any finite x
    t = x - f
    return [(f + j, t - j) for j in (-1, 0, 1, 2)]


# ---------------------------------------------------------------------------------------------
# One sampling point, pixel coordinates
# ---------------------------------------------------------------------------------------------


def interpolate_2d(U, x: float, y: float, *, mode: str = "bilinear",
                   padding_mode: str = "zeros", align_corners: bool = False) -> np.ndarray:
    """V (C,) at pixel coordinates (x, y) of U (C, H, W): eq. 3."""
    _check(mode, padding_mode)
    U = np.asarray(U, dtype=np.float64)
    C, H, W = U.shape
    k, _ = KERNELS[mode]
    V = np.zeros(C)
    if not (math.isfinite(x) and math.isfinite(y)):
        return V
    for n, dy in _window(y):  # dy = y - n
        for m, dx in _window(x):  # dx = x - m
            sn = pad_index(n, H, padding_mode, align_corners)
            sm = pad_index(m, W, padding_mode, align_corners)
            if sn is None or sm is None:
                continue  # zero padding: U_nm = 0 outside
            V += U[:, sn, sm] * k(dx) * k(dy)
    return V


def interpolate_2d_grad(U, x: float, y: float, grad_v, *, mode: str = "bilinear",
                        padding_mode: str = "zeros", align_corners: bool = False,
                        subgradient: str = "paper") -> tuple[np.ndarray, float, float]:
    """(dL/dU (C, H, W), dL/dx, dL/dy) given dL/dV = ``grad_v`` (C,): eq. 6 and 7."""
    _check(mode, padding_mode, subgradient)
    U = np.asarray(U, dtype=np.float64)
    grad_v = np.asarray(grad_v, dtype=np.float64)
    C, H, W = U.shape
    k, dk = KERNELS[mode]
    grad_U = np.zeros_like(U)
    gx = gy = 0.0
    if not (math.isfinite(x) and math.isfinite(y)):
        return grad_U, gx, gy
    for n, dy in _window(y):
        for m, dx in _window(x):
            sn = pad_index(n, H, padding_mode, align_corners)
            sm = pad_index(m, W, padding_mode, align_corners)
            if sn is None or sm is None:
                continue
            # (6) dV/dU_nm = k(x - m) k(y - n), summed onto the pixel this lattice point reads
            grad_U[:, sn, sm] += grad_v * k(dx) * k(dy)
            # (7) dV/dx = sum U_nm k(y - n) k'(x - m); dV/dy likewise
            u = float(grad_v @ U[:, sn, sm])
            gx += u * k(dy) * dk(dx, subgradient)
            gy += u * k(dx) * dk(dy, subgradient)
    return grad_U, gx, gy


def interpolate_3d(U, x: float, y: float, z: float, *, mode: str = "bilinear",
                   padding_mode: str = "zeros", align_corners: bool = False) -> np.ndarray:
    """V (C,) at pixel coordinates (x, y, z) of U (C, D, H, W):
    V = sum_l sum_n sum_m U_lnm k(x - m) k(y - n) k(z - l)."""
    _check(mode, padding_mode)
    U = np.asarray(U, dtype=np.float64)
    C, D, H, W = U.shape
    k, _ = KERNELS[mode]
    V = np.zeros(C)
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
        return V
    for l, dz in _window(z):  # noqa: E741 (the paper's letter)
        for n, dy in _window(y):
            for m, dx in _window(x):
                sl = pad_index(l, D, padding_mode, align_corners)
                sn = pad_index(n, H, padding_mode, align_corners)
                sm = pad_index(m, W, padding_mode, align_corners)
                if sl is None or sn is None or sm is None:
                    continue
                V += U[:, sl, sn, sm] * k(dx) * k(dy) * k(dz)
    return V


def interpolate_3d_grad(U, x: float, y: float, z: float, grad_v, *, mode: str = "bilinear",
                        padding_mode: str = "zeros", align_corners: bool = False,
                        subgradient: str = "paper") -> tuple[np.ndarray, float, float, float]:
    """(dL/dU (C, D, H, W), dL/dx, dL/dy, dL/dz) given dL/dV = ``grad_v`` (C,)."""
    _check(mode, padding_mode, subgradient)
    U = np.asarray(U, dtype=np.float64)
    grad_v = np.asarray(grad_v, dtype=np.float64)
    C, D, H, W = U.shape
    k, dk = KERNELS[mode]
    grad_U = np.zeros_like(U)
    gx = gy = gz = 0.0
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
        return grad_U, gx, gy, gz
    for l, dz in _window(z):  # noqa: E741
        for n, dy in _window(y):
            for m, dx in _window(x):
                sl = pad_index(l, D, padding_mode, align_corners)
                sn = pad_index(n, H, padding_mode, align_corners)
                sm = pad_index(m, W, padding_mode, align_corners)
                if sl is None or sn is None or sm is None:
                    continue
                kx, ky, kz = k(dx), k(dy), k(dz)
                grad_U[:, sl, sn, sm] += grad_v * kx * ky * kz
                u = float(grad_v @ U[:, sl, sn, sm])
                gx += u * dk(dx, subgradient) * ky * kz
                gy += u * kx * dk(dy, subgradient) * kz
                gz += u * kx * ky * dk(dz, subgradient)
    return grad_U, gx, gy, gz


# ---------------------------------------------------------------------------------------------
# Batches, normalised grids (the layout of stnkit.ops.sample)
# ---------------------------------------------------------------------------------------------


def sample(input, grid, *, mode: str = "bilinear", padding_mode: str = "zeros",
           align_corners: bool = False) -> np.ndarray:
    """``stnkit.ops.sample`` in loops: input (B, C, H_in, W_in) with grid (B, H, W, 2), or
    input (B, C, D_in, H_in, W_in) with grid (B, D, H, W, 3); returns (B, C, H, W) /
    (B, C, D, H, W) float64."""
    _check(mode, padding_mode)
    U = np.asarray(input, dtype=np.float64)
    G = np.asarray(grid, dtype=np.float64)
    B, C = U.shape[:2]
    in_size = U.shape[2:]  # (H_in, W_in) or (D_in, H_in, W_in)
    out = np.zeros((B, C) + G.shape[1:-1])
    for b in range(B):
        for p in np.ndindex(*G.shape[1:-1]):
            # pixel coordinates (x, y[, z]); x runs along the last input axis
            pix = [unnormalize(G[b][p][d], in_size[-1 - d], align_corners)
                   for d in range(len(in_size))]
            if len(in_size) == 2:
                out[(b, slice(None)) + p] = interpolate_2d(
                    U[b], *pix, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
            else:
                out[(b, slice(None)) + p] = interpolate_3d(
                    U[b], *pix, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    return out


def sample_grad(input, grid, grad_output, *, mode: str = "bilinear", padding_mode: str = "zeros",
                align_corners: bool = False,
                subgradient: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """(dL/dinput, dL/dgrid) of :func:`sample` for dL/doutput = ``grad_output``.

    dL/dgrid = dL/dpixel * d pixel / d coord (:func:`unnormalize_scale`).
    """
    _check(mode, padding_mode, subgradient)
    U = np.asarray(input, dtype=np.float64)
    G = np.asarray(grid, dtype=np.float64)
    gO = np.asarray(grad_output, dtype=np.float64)
    B = U.shape[0]
    in_size = U.shape[2:]
    nd = len(in_size)
    grad_input = np.zeros_like(U)
    grad_grid = np.zeros_like(G)
    options = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners,
                   subgradient=subgradient)
    for b in range(B):
        for p in np.ndindex(*G.shape[1:-1]):
            sizes = [in_size[-1 - d] for d in range(nd)]  # (W, H[, D]) for (x, y[, z])
            pix = [unnormalize(G[b][p][d], sizes[d], align_corners) for d in range(nd)]
            g_v = gO[(b, slice(None)) + p]  # (C,)
            if nd == 2:
                g_u, *g_pix = interpolate_2d_grad(U[b], *pix, g_v, **options)
            else:
                g_u, *g_pix = interpolate_3d_grad(U[b], *pix, g_v, **options)
            grad_input[b] += g_u
            for d in range(nd):
                grad_grid[b][p][d] = g_pix[d] * unnormalize_scale(sizes[d], align_corners)
    return grad_input, grad_grid
