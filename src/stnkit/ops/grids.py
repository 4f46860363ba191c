"""Sampling-grid generators: affine (2-D and 3-D), projective and thin-plate spline.

Convention (the one of ``torch.nn.functional.affine_grid``): a grid holds, for every *output*
location, the *input* location to sample, in normalised coordinates (x, y[, z]) in [-1, 1].
The output locations themselves are the pixel centres of an (H, W) (or (D, H, W)) image:

- ``align_corners=False``: centre of pixel i is ``(2 i + 1) / N - 1`` (-1 and 1 are the outer
  edges of the image);
- ``align_corners=True``: centre of pixel i is ``2 i / (N - 1) - 1`` (-1 and 1 are the centres
  of the corner pixels); a size-1 axis sits at 0 in both cases, as in PyTorch.

Every generator is a ``torch.autograd.Function`` with a hand-derived backward (formula in a
comment beside it). Precision (``stnkit.ops``, "Mixed precision"): computed in float32 for
float16 / bfloat16 parameters (float32 and float64 in theirs), also under ``torch.autocast``;
the grid and the parameters' gradient come back in the parameters' dtype, as from
``F.affine_grid`` (``warp`` never rounds its grid: it computes it in the compute dtype).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stnkit._checks import (
    check_floating,
    check_same_device,
    check_shape,
    check_size,
    check_tensor,
    fail,
    format_shape,
)
from stnkit.ops._precision import compute_dtype, full_precision

__all__ = [
    "affine_grid",
    "base_coordinates",
    "check_tps_points",
    "projective_grid",
    "tps_basis",
    "tps_grid",
    "tps_lattice",
    "tps_matrix",
    "tps_weights",
]

MAX_PIXELS = 2**31 - 1
"""The most output pixels per image (or volume) a grid or warp may have: the fused kernels
index the pixels of one image with 32-bit ints, and anything larger would need terabytes."""


def check_grid_size(size, ndim: int, *, fn: str, name: str = "size") -> tuple[int, ...]:
    """``check_size`` plus the index limit :data:`MAX_PIXELS` on the pixels per image."""
    size = check_size(size, ndim, name=name, fn=fn)
    n = math.prod(size)
    if n > MAX_PIXELS:
        fail(fn, name, f"to have at most {MAX_PIXELS} (2**31 - 1) pixels per image, the index "
             "limit", f"{size!r} ({n} pixels)")
    return size


def _linspace(n: int, align_corners: bool, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised centres of n pixels along one axis (0 when n == 1, like PyTorch)."""
    if n == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    x = torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device)
    return x if align_corners else x * ((n - 1) / n)


def base_coordinates(size: tuple[int, ...], align_corners: bool, *, dtype: torch.dtype,
                     device: torch.device | str | None = None) -> Tensor:
    """Homogeneous output coordinates of every pixel centre, flattened in raster order.

    Args:
        size: (H, W) or (D, H, W).
    Returns:
        (H*W, 3) rows ``[x, y, 1]``, or (D*H*W, 4) rows ``[x, y, z, 1]``; x varies fastest.
    """
    axes = [_linspace(n, align_corners, dtype=dtype, device=device) for n in size]
    # size is (H, W) or (D, H, W); coordinates are ordered (x, y[, z]), i.e. reversed.
    mesh = torch.meshgrid(*axes, indexing="ij")  # each (H, W) or (D, H, W)
    coords = [m.reshape(-1) for m in reversed(mesh)]  # x, y[, z]; each (P,)
    coords.append(torch.ones_like(coords[0]))
    return torch.stack(coords, dim=-1)  # (P, n + 1)


# ---------------------------------------------------------------------------------------------
# Affine
# ---------------------------------------------------------------------------------------------


class _AffineGrid(torch.autograd.Function):
    """grid[b, p] = theta[b] @ base[p]   (base[p] = [x_p, y_p(, z_p), 1])."""

    @staticmethod
    @full_precision
    def forward(ctx, theta: Tensor, size: tuple[int, ...], align_corners: bool) -> Tensor:
        ctx.size, ctx.align_corners = size, align_corners
        base = base_coordinates(size, align_corners, dtype=theta.dtype, device=theta.device)
        grid = torch.matmul(base, theta.transpose(1, 2))  # (B, P, n)
        return grid.reshape(theta.shape[0], *size, theta.shape[1])  # (B, [D,] H, W, n)

    @staticmethod
    @full_precision
    def backward(ctx, grad_grid: Tensor):
        # The grid is linear in theta:  d grid[p]_i / d theta_ij = base[p]_j, so
        #   grad_theta = sum_p grad_grid[p] (x) base[p] = grad_grid^T @ base.
        n = grad_grid.shape[-1]
        base = base_coordinates(ctx.size, ctx.align_corners, dtype=grad_grid.dtype,
                                device=grad_grid.device)
        g = grad_grid.reshape(grad_grid.shape[0], base.shape[0], n)  # (B, P, n); B may be 0
        return torch.matmul(g.transpose(1, 2), base), None, None  # (B, n, n + 1)


def affine_grid(theta: Tensor, size, *, align_corners: bool = False) -> Tensor:
    """Sampling grid for a batch of affine transforms (2-D or 3-D).

    Same values and gradients as ``torch.nn.functional.affine_grid`` (which takes the full
    (B, C, H, W) size; we take only the spatial size).

    Args:
        theta: (B, 2, 3) or (B, 3, 4); maps output coordinates to input coordinates,
            normalised [-1, 1].
        size: (H_out, W_out) for (B, 2, 3); (D_out, H_out, W_out) for (B, 3, 4).
        align_corners: see the module docstring.
    Returns:
        (B, H_out, W_out, 2) (x, y) or (B, D_out, H_out, W_out, 3) (x, y, z) input coordinates,
        theta's dtype (computed in float32 for a float16 / bfloat16 theta).

    >>> import torch
    >>> from stnkit.ops import affine_grid
    >>> affine_grid(torch.eye(2, 3)[None], (4, 4)).shape
    torch.Size([1, 4, 4, 2])
    """
    fn = "affine_grid"
    check_tensor(theta, name="theta", fn=fn)
    if theta.dim() != 3 or tuple(theta.shape[1:]) not in ((2, 3), (3, 4)):
        fail(fn, "theta", "of shape (B, 2, 3) or (B, 3, 4)", format_shape(theta.shape))
    check_floating(theta, name="theta", fn=fn)
    ndim = theta.shape[1]
    size = check_grid_size(size, ndim, fn=fn)
    _check_bool(align_corners, "align_corners", fn)
    return _AffineGrid.apply(theta.to(compute_dtype(theta)), size, align_corners).to(theta.dtype)


# ---------------------------------------------------------------------------------------------
# Projective
# ---------------------------------------------------------------------------------------------


def _homogeneous(theta: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
    base = base_coordinates(size, align_corners, dtype=theta.dtype, device=theta.device)
    return torch.matmul(base, theta.transpose(1, 2))  # (B, P, 3): (u, v, w)


class _ProjectiveGrid(torch.autograd.Function):
    """grid[b, p] = (u / w, v / w) with (u, v, w) = H[b] @ [x_p, y_p, 1]; NaN where w <= 0."""

    @staticmethod
    @full_precision
    def forward(ctx, theta: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
        ctx.size, ctx.align_corners = size, align_corners
        ctx.save_for_backward(theta)
        uvw = _homogeneous(theta, size, align_corners)
        w = uvw[..., 2:]  # (B, P, 1)
        # w = +inf (an infinite entry of theta's last row) would give u / w = 0, a point
        # inside: non-finite w is outside, as in the fused kernels
        grid = torch.where((w > 0) & torch.isfinite(w), uvw[..., :2] / w, torch.nan)  # (B, P, 2)
        return grid.reshape(theta.shape[0], *size, 2)  # (B, H, W, 2)

    @staticmethod
    @full_precision
    def backward(ctx, grad_grid: Tensor):
        # Quotient rule, with X = u / w, Y = v / w and base b = [x, y, 1]:
        #   dX/dh0 = b / w,   dY/dh1 = b / w,   d(X, Y)/dh2 = -(X, Y) b / w
        # so with q = g / w (g = grad_grid[p]):
        #   grad_h0 = sum_p q_x b,  grad_h1 = sum_p q_y b,  grad_h2 = -sum_p (q . (X, Y)) b.
        # Points with w <= 0 are outside the image (NaN in the grid) and get 0 gradient.
        # Recomputed from theta (a cheap matmul) so the backward is itself differentiable.
        (theta,) = ctx.saved_tensors
        base = base_coordinates(ctx.size, ctx.align_corners, dtype=theta.dtype,
                                device=theta.device)
        uvw = torch.matmul(base, theta.transpose(1, 2))  # (B, P, 3)
        w = uvw[..., 2:]
        valid = (w > 0) & torch.isfinite(w)
        safe_w = torch.where(valid, w, torch.ones_like(w))
        xy = uvw[..., :2] / safe_w  # (B, P, 2), finite
        g = grad_grid.reshape(theta.shape[0], base.shape[0], 2)  # no -1: B may be 0
        q = torch.where(valid, g, torch.zeros_like(g)) / safe_w  # (B, P, 2)
        r = -(q * xy).sum(-1, keepdim=True)  # (B, P, 1)
        grad = torch.matmul(torch.cat([q, r], dim=-1).transpose(1, 2), base)  # (B, 3, 3)
        return grad, None, None


def projective_grid(theta: Tensor, size, *, align_corners: bool = False) -> Tensor:
    """Sampling grid for a batch of homographies.

    An output point (x, y) samples the input at (u / w, v / w), (u, v, w) = theta @ (x, y, 1).
    Points with w <= 0 (at or behind the camera) or a non-finite w are set to NaN, which every
    stnkit sampler treats as outside the image (contributes 0, gets 0 gradient); their
    gradient w.r.t. theta is 0. Large finite coordinates (w close to 0+) are kept as they are.

    Args:
        theta: (B, 3, 3), maps output coordinates to input coordinates, normalised [-1, 1].
        size: (H_out, W_out).
    Returns:
        (B, H_out, W_out, 2) input coordinates (x, y), theta's dtype (computed in float32
        for a float16 / bfloat16 theta).
    """
    fn = "projective_grid"
    check_shape(theta, ("B", 3, 3), name="theta", fn=fn)
    check_floating(theta, name="theta", fn=fn)
    size = check_grid_size(size, 2, fn=fn)
    _check_bool(align_corners, "align_corners", fn)
    work = compute_dtype(theta)
    return _ProjectiveGrid.apply(theta.to(work), size, align_corners).to(theta.dtype)


# ---------------------------------------------------------------------------------------------
# Thin-plate spline
# ---------------------------------------------------------------------------------------------


def _radial(d2: Tensor) -> Tensor:
    """TPS kernel U as a function of the squared distance: U = r^2 log r^2, U(0) = 0."""
    return torch.where(d2 > 0, d2 * torch.log(torch.where(d2 > 0, d2, 1.0)), 0.0)


def tps_lattice(k: int, *, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> Tensor:
    """The default TPS control points: a regular n x n lattice over [-1, 1]^2, K = n * n.

    Point ``k = row * n + col`` sits at ``(x, y) = (linspace(-1, 1, n)[col],
    linspace(-1, 1, n)[row])`` (raster order, x fastest), whatever ``align_corners``.
    ``tps_grid(tps_lattice(K)[None], size)`` is the identity grid.

    Returns:
        (K, 2).
    """
    fn = "tps_lattice"
    if isinstance(k, bool) or not isinstance(k, int):
        fail(fn, "k", "an int", repr(k), error=TypeError)
    n = math.isqrt(k) if k >= 0 else 0
    if n < 2 or n * n != k:
        fail(fn, "k", "a perfect square >= 4", k)
    axis = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")  # each (n, n)
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)  # (K, 2)
    return pts.to(dtype=dtype or torch.get_default_dtype(), device=device)


def _tps_coefficients(dst: Tensor, fn: str = "tps_grid") -> Tensor:
    """L^{-1}[:, :K], (K + 3, K) float64 CPU, for control points ``dst`` (K, 2).

    With L = [[U(|c_i - c_j|), P], [P^T, 0]] ((K+3) x (K+3), P rows [1, x_k, y_k]) the spline
    coefficients of source points ``src`` (K, 2) are [w; a] = L^{-1} [src; 0], and
    f(p) = sum_k w_k U(|p - c_k|) + a . [1, x, y].
    """
    c = dst.detach().to(device="cpu", dtype=torch.float64)  # (K, 2)
    k = c.shape[0]
    d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # (K, K)
    dup = torch.nonzero(torch.triu(d2 == 0, diagonal=1))
    if dup.numel():
        i, j = dup[0].tolist()
        fail(fn, "dst_points", "to be distinct points (the TPS system is singular)",
             f"dst_points[{i}] == dst_points[{j}] == {tuple(c[i].tolist())}")
    centred = c - c.mean(0)
    if k < 3 or torch.linalg.matrix_rank(centred) < 2:
        fail(fn, "dst_points", "not all on one line (the TPS system is singular)",
             f"{k} collinear points")
    system = _tps_system(c, d2)
    cond = torch.linalg.cond(system).item()
    if not math.isfinite(cond) or cond > 1e13:
        fail(fn, "dst_points", "in general position (the TPS system is singular)",
             f"a system with condition number {cond:.3g}")
    return _tps_solve(system, k)


def _tps_system(c: Tensor, d2: Tensor) -> Tensor:
    """L = [[U(|c_i - c_j|), P], [P^T, 0]], (K + 3, K + 3), from float64 control points ``c``
    (K, 2) and their squared distances ``d2`` (K, K); P rows [1, x_k, y_k]."""
    p = torch.cat([torch.ones(c.shape[0], 1, dtype=torch.float64), c], dim=1)  # (K, 3)
    top = torch.cat([_radial(d2), p], dim=1)  # (K, K + 3)
    bottom = torch.cat([p.T, torch.zeros(3, 3, dtype=torch.float64)], dim=1)  # (3, K + 3)
    return torch.cat([top, bottom], dim=0)


def _tps_solve(system: Tensor, k: int) -> Tensor:
    """L^{-1}[:, :K], (K + 3, K), of the float64 system L."""
    rhs = torch.cat([torch.eye(k, dtype=torch.float64), torch.zeros(3, k, dtype=torch.float64)])
    return torch.linalg.solve(system, rhs)


def _tps_basis(dst: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
    """(H*W, K + 3) float64 CPU: the rows [U(|p - c_1|), ..., U(|p - c_K|), 1, x, y] of every
    output pixel p (raster order) for control points ``dst`` (K, 2)."""
    c = dst.detach().to(device="cpu", dtype=torch.float64)
    base = base_coordinates(size, align_corners, dtype=torch.float64)  # (P, 3): x, y, 1
    xy = base[:, :2]
    d2p = ((xy[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # (P, K)
    return torch.cat([_radial(d2p), base[:, 2:], xy], dim=1)  # (P, K + 3): U..., 1, x, y


def _tps_matrix(dst: Tensor, size: tuple[int, int], align_corners: bool,
                fn: str = "tps_grid") -> Tensor:
    """A (H*W, K) float64 CPU matrix with grid = A @ src for control points ``dst`` (K, 2):
    A = basis @ L^{-1}[:, :K] (``_tps_basis``, ``_tps_coefficients``)."""
    coef = _tps_coefficients(dst, fn)
    return _tps_basis(dst, size, align_corners) @ coef  # (P, K)


def _lattice_coefficients(k: int, dtype: torch.dtype, device) -> Tensor:
    """L^{-1}[:, :K] of the default lattice (``_tps_coefficients`` without its checks: the
    lattice is always well posed), built from tensor ops only, so that compiled graphs and
    exported programs hold it as a few constant-foldable nodes; float64, then cast."""
    c = tps_lattice(k, dtype=torch.float64)
    d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    return _tps_solve(_tps_system(c, d2), k).to(dtype=dtype, device=device)


def tps_weights(src_points: Tensor) -> Tensor:
    """The spline weights of TPS source points over the default lattice (``tps_lattice``).

    ``tps_weights(src)[b]`` is [w; a] = L^{-1} [src[b]; 0], (K + 3, 2): the spline through
    the lattice is f(p) = sum_k w_k U(|p - c_k|) + a_0 + a_1 x + a_2 y (rows K, K+1, K+2 of
    the result hold a_0, a_1, a_2), so that ``tps_grid(src, size)`` equals
    ``basis @ tps_weights(src)`` with the rows of ``tps_basis``. The fused kernels take
    these weights: they evaluate the spline per pixel, so no size-dependent matrix exists.
    L^{-1} depends on K only (not on the output size); it is solved in float64 on every call
    (a (K+3) x (K+3) system: tens of microseconds; nothing is cached). Differentiable (a
    matmul), computed in float64 and returned in ``compute_dtype(src_points)``.

    Args:
        src_points: (B, K, 2), K a perfect square >= 4.
    Returns:
        (B, K + 3, 2) in float32 (float64 for float64 points).
    """
    k = check_tps_points(src_points, None, fn="tps_weights")
    work = compute_dtype(src_points)
    # in float64, rounded once: a float32 product is ~1e-6 off, enough to move the identity
    # spline's points off the pixel centres (identity must give the input back exactly)
    coef = _lattice_coefficients(k, torch.float64, src_points.device)
    return torch.matmul(coef, src_points.to(torch.float64)).to(work)


def tps_basis(size, k: int, *, align_corners: bool = False, dtype: torch.dtype | None = None,
              device: torch.device | str | None = None) -> Tensor:
    """(H_out * W_out, K + 3): per output pixel (raster order) the rows
    [U(|p - c_1|), ..., U(|p - c_K|), 1, x, y] over the default lattice ``tps_lattice(k)``,
    so that ``tps_grid(src, size) == (tps_basis(size, K) @ tps_weights(src)).view(B, H, W, 2)``.
    Computed in float64, returned in ``dtype`` (default: the default dtype)."""
    size = check_grid_size(size, 2, fn="tps_basis")
    _check_bool(align_corners, "align_corners", "tps_basis")
    basis = _tps_basis(tps_lattice(k, dtype=torch.float64), size, align_corners)
    return basis.to(dtype=dtype or torch.get_default_dtype(), device=device)


def tps_matrix(size, *, dst_points: Tensor | None = None, k: int | None = None,
               align_corners: bool = False, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> Tensor:
    """The constant matrix A of a TPS grid: ``tps_grid(src, size) == A @ src`` (per image).

    Solving the spline's linear system costs far more than the grid itself (tens of ms at
    28 x 28 with K = 16), so a caller that warps many batches with the same ``dst_points``
    and ``size`` computes A once and passes it to ``tps_grid(..., matrix=A)``;
    :class:`stnkit.nn.SpatialTransformer` keeps its own. stnkit keeps no global cache.

    Args:
        size: (H_out, W_out).
        dst_points: (K, 2) control points in the output (as ``tps_grid``), or None for
            ``tps_lattice(k)``.
        k: K, when ``dst_points`` is None (a perfect square >= 4).
    Returns:
        (H_out * W_out, K) in ``dtype`` (default: that of ``dst_points``, else the default
        dtype) on ``device`` (default: that of ``dst_points``, else CPU).
    """
    fn = "tps_matrix"
    size = check_grid_size(size, 2, fn=fn)
    _check_bool(align_corners, "align_corners", fn)
    if dst_points is None:
        if isinstance(k, bool) or not isinstance(k, int):
            fail(fn, "k", "an int when dst_points is None", repr(k), error=TypeError)
        points = tps_lattice(k, dtype=torch.float64)
    else:
        check_shape(dst_points, ("K", 2), name="dst_points", fn=fn)
        check_floating(dst_points, name="dst_points", fn=fn)
        if k is not None and k != dst_points.shape[0]:
            fail(fn, "k", f"None or K = {dst_points.shape[0]} of dst_points", repr(k))
        if not bool(torch.isfinite(dst_points).all()):
            fail(fn, "dst_points", "to be finite", "NaN or Inf")
        points = dst_points
        dtype = dtype or dst_points.dtype
        device = device if device is not None else dst_points.device
    dtype = compute_dtype(dtype or torch.get_default_dtype())
    return _tps_matrix(points, size, align_corners, fn).to(dtype=dtype, device=device)


class _TPSGrid(torch.autograd.Function):
    """grid[b] = A @ src[b]; A (H*W, K) is constant for given dst/size/align_corners."""

    @staticmethod
    @full_precision
    def forward(ctx, src: Tensor, a: Tensor, size: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(a)
        grid = torch.matmul(a, src)  # (B, P, 2)
        return grid.reshape(src.shape[0], *size, 2)  # (B, H, W, 2)

    @staticmethod
    @full_precision
    def backward(ctx, grad_grid: Tensor):
        # Linear map: grad_src = A^T @ grad_grid.
        (a,) = ctx.saved_tensors
        g = grad_grid.reshape(grad_grid.shape[0], a.shape[0], 2)  # (B, P, 2); B may be 0
        return torch.matmul(a.T, g), None, None  # (B, K, 2)


def check_tps_points(src_points: Tensor, dst_points: Tensor | None, *, fn: str,
                     name: str = "src_points") -> int:
    """Validate TPS control points (see ``tps_grid``) at the public boundary ``fn``; returns K.

    ``name`` is what the caller calls ``src_points`` (``warp`` calls them ``theta``).
    """
    bound = check_shape(src_points, ("B", "K", 2), name=name, fn=fn)
    check_floating(src_points, name=name, fn=fn)
    k = bound["K"]
    if dst_points is None:
        n = math.isqrt(k)
        if n < 2 or n * n != k:
            fail(fn, name, "with a perfect square K >= 4 of points when dst_points is None "
                 "(default lattice)", f"K = {k}")
    else:
        check_shape(dst_points, (k, 2), name="dst_points", fn=fn)
        check_floating(dst_points, name="dst_points", fn=fn)  # any: solved in float64
        check_same_device(src_points, dst_points, names=(name, "dst_points"), fn=fn)
        if not bool(torch.isfinite(dst_points).all()):
            fail(fn, "dst_points", "to be finite", "NaN or Inf")
    return k


def tps_grid(src_points: Tensor, size, *, dst_points: Tensor | None = None,
             align_corners: bool = False, matrix: Tensor | None = None) -> Tensor:
    """Sampling grid of a thin-plate spline through K control points.

    The spline f maps output coordinates to input coordinates with f(dst_k) = src_k exactly,
    reproduces affine maps exactly (src == dst gives the identity grid) and minimises the
    bending energy otherwise. Radial basis U(r) = r^2 log r^2 (U(0) = 0). The grid is
    ``A @ src_points`` with A = ``tps_matrix(size, dst_points=..., align_corners=...)``
    (the linear system solved in float64), so grad = A^T @ grad_grid. Without ``matrix``, A
    is solved on every call (nothing is cached): pass ``matrix`` to reuse it.
    ``dst_points`` are constants: no gradient flows to them.

    Args:
        src_points: (B, K, 2) where the control points map to in the input, normalised (x, y).
        size: (H_out, W_out).
        dst_points: (K, 2) where the control points sit in the output; default
            ``tps_lattice(K)``, a regular sqrt(K) x sqrt(K) lattice over [-1, 1] (K must then
            be a perfect square >= 4; 16 in the paper). Must be distinct and not all collinear.
            Any floating dtype (the spline is solved in float64).
        matrix: (H_out * W_out, K), a precomputed ``tps_matrix`` for this size, dst_points
            and align_corners (not checked against them), dtype and device of src_points
            (float32 for float16/bfloat16 src_points).
    Returns:
        (B, H_out, W_out, 2) input coordinates (x, y), src_points' dtype (computed in
        float32 for float16 / bfloat16 src_points).
    """
    fn = "tps_grid"
    k = check_tps_points(src_points, dst_points, fn=fn)
    size = check_grid_size(size, 2, fn=fn)
    _check_bool(align_corners, "align_corners", fn)
    work = compute_dtype(src_points)
    if matrix is None:
        points = tps_lattice(k, dtype=torch.float64) if dst_points is None else dst_points
        a = _tps_matrix(points, size, align_corners).to(dtype=work, device=src_points.device)
    else:
        check_shape(matrix, (size[0] * size[1], k), name="matrix", fn=fn)
        if matrix.dtype != work:
            fail(fn, "matrix", f"to have dtype {work}", matrix.dtype, error=TypeError)
        check_same_device(src_points, matrix, names=("src_points", "matrix"), fn=fn)
        a = matrix
    return _TPSGrid.apply(src_points.to(work), a, size).to(src_points.dtype)


def _check_bool(value, name: str, fn: str) -> None:
    if not isinstance(value, bool):
        fail(fn, name, "a bool", repr(value), error=TypeError)
