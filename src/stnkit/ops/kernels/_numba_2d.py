"""Numba kernels of the fused 2-D warp: affine / projective, bilinear / nearest.

Layout: ``inp`` (B, C, H*W) and ``out`` / ``gout`` (B, C, Ho*Wo), C-contiguous, float32 or
float64. ``cf`` (B, 9) holds, per batch item, the map from output pixel indices (j, i) to input
*pixel* coordinates, with the unnormalisations of both sides folded in:

    affine:      x = cf0 j + cf1 i + cf2,                 y = cf3 j + cf4 i + cf5
    projective:  x = (cf0 j + cf1 i + cf2) / w,           y = (cf3 j + cf4 i + cf5) / w,
                 w = cf6 j + cf7 i + cf8   (w <= 0: outside)

Work is cut into *tiles* of about ``L`` output pixels of one image: whole rows when a row
has at most ``TW`` pixels, else ``TW``-wide tiles (2-D tiles keep the input footprint of a
tile in L1 under rotation, like OpenCV's blocks). For each tile the kernels run a few short
loops over its pixels, each simple enough to vectorise: source coordinates, padding, taps
(one offset + four masked weights per pixel), then a gather per channel. Tiles whose every
pixel has all its taps inside the image (the bulk of a typical warp) take a short path with
no padding and no masks. The taps of a pixel are always the 2 x 2 pixels at ``off, off + sx,
off + sy, off + sx + sy`` (``sx = 1``, ``sy = W``; 0 for a size-1 axis): a tap outside the
image is moved onto a neighbour inside it with weight 0, so the gather needs no branch.

Non-finite values follow the rule of :mod:`stnkit.ops.sample` ("Non-finite values"): a
point reads its own taps inside the image, each weight times value even where the weight is
0. A moved slot is no tap of the point, yet 0 * NaN/Inf there is NaN: so where a border tile's
gather (or its dL/dx, dL/dy) comes out non-finite, ``refine_tile`` / ``refine_grads``
recompute it from the point's own taps (``own_taps``); a finite neighbour times 0 adds 0, so
only images that hold a NaN/Inf (one vectorised pass over each image with border tiles,
``image_finite``) take this
path. The backward writes a zero-weight tap only for an image whose upstream gradient holds
NaN/Inf (``scatter_own4``), and then only the point's own taps, so a pixel still touches
only its own footprint.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from stnkit.ops.kernels._numba_common import (
    BILINEAR,
    BORDER,
    REFLECTION,
    ZEROS,
    pad_coord,
)
from stnkit.ops.kernels._numba_runtime import jit

U = np.uint64  # hot loops index with unsigned ints: Numba adds a negative-index fix-up to
# every access through a signed index, which costs registers and blocks vectorisation


@jit()
def tile_tables(tw, th, t):
    """Row and column of each pixel k of a tile of tw x th pixels (raster order), as floats."""
    ti = np.empty(tw * th, t)
    tj = np.empty(tw * th, t)
    for k in range(tw * th):
        ti[k] = t(k // tw)
        tj[k] = t(k % tw)
    return ti, tj


@jit()
def tiling(Wo, Ho, TW, L):
    """(tw, th, ntx, nty, w_last): tiles of tw x th output pixels (tw = Wo when Wo <= TW),
    ntx x nty of them per image, the last column of tiles w_last wide."""
    tw = min(Wo, TW)
    th = max(1, L // tw)
    ntx = (Wo + tw - 1) // tw
    nty = (Ho + th - 1) // th
    return tw, th, ntx, nty, Wo - (ntx - 1) * tw


@jit()
def source_coords(cf, b, fi0, fj0, ti, tj, ka, kb, projective, xs, ys, qs, t):
    """Raw input pixel coordinates of tile pixels ka .. kb into xs, ys (NaN where w <= 0);
    qs = 1 / w (projective)."""
    c0, c1, c2 = cf[b, 0], cf[b, 1], cf[b, 2]
    c3, c4, c5 = cf[b, 3], cf[b, 4], cf[b, 5]
    if projective:
        c6, c7, c8 = cf[b, 6], cf[b, 7], cf[b, 8]
        nan = t(np.nan)
        for k in range(U(ka), U(kb)):
            fi = ti[k] + fi0
            fj = tj[k] + fj0
            w = c6 * fj + c7 * fi + c8
            ok = w > t(0.0)
            xs[k] = (c0 * fj + c1 * fi + c2) / w if ok else nan
            ys[k] = (c3 * fj + c4 * fi + c5) / w if ok else nan
            qs[k] = t(1.0) / w if ok else t(0.0)
    else:
        for k in range(U(ka), U(kb)):
            fi = ti[k] + fi0
            fj = tj[k] + fj0
            xs[k] = c0 * fj + c1 * fi + c2
            ys[k] = c3 * fj + c4 * fi + c5


@jit()
def pad_block(xs, ys, mx, my, ka, kb, H, W, pad, align, t):
    """Padding of coordinates ka .. kb in place; mx, my receive d padded / d raw."""
    if pad == ZEROS:
        for k in range(U(ka), U(kb)):
            xs[k], mx[k] = pad_coord(xs[k], W, ZEROS, align, t)
            ys[k], my[k] = pad_coord(ys[k], H, ZEROS, align, t)
    elif pad == BORDER:
        for k in range(U(ka), U(kb)):
            xs[k], mx[k] = pad_coord(xs[k], W, BORDER, align, t)
            ys[k], my[k] = pad_coord(ys[k], H, BORDER, align, t)
    else:
        for k in range(U(ka), U(kb)):
            xs[k], mx[k] = pad_coord(xs[k], W, REFLECTION, align, t)
            ys[k], my[k] = pad_coord(ys[k], H, REFLECTION, align, t)


@jit()
def axis_taps(x, size, t):
    """Bilinear taps of padded coordinate x in [-2, size + 1] along an axis of ``size``.

    Returns (c, a0, a1, d0, d1): the taps sit at c and c + 1 (c in [0, max(size - 2, 0)]) with
    weights a0, a1 and d a / d x = d0, d1. Taps outside the image have weight 0; a tap at
    floor(x) or floor(x) + 1 that is inside but is not c or c + 1 cannot occur.
    """
    zero = t(0.0)
    one = t(1.0)
    f = np.floor(x)
    u = x - f
    x0 = np.int32(f)
    n = np.int32(size)
    c = min(max(x0, np.int32(0)), max(n - np.int32(2), np.int32(0)))
    m0 = (x0 >= np.int32(0)) & (x0 < n)  # tap floor(x) inside
    m1 = (x0 >= np.int32(-1)) & (x0 < n - np.int32(1))  # tap floor(x) + 1 inside
    w0 = (one - u) if m0 else zero
    w1 = u if m1 else zero
    g0 = -one if m0 else zero
    g1 = one if m1 else zero
    at_c = x0 == c  # floor(x) -> c, floor(x) + 1 -> c + 1
    below = x0 + np.int32(1) == c  # floor(x) + 1 -> c (x0 = -1)
    above = x0 == c + np.int32(1)  # floor(x) -> c + 1 (x0 = size - 1)
    a0 = w0 if at_c else (w1 if below else zero)
    a1 = w1 if at_c else (w0 if above else zero)
    d0 = g0 if at_c else (g1 if below else zero)
    d1 = g1 if at_c else (g0 if above else zero)
    return c, a0, a1, d0, d1


@jit()
def nearest_tap(x, size, t):
    """(index, inside) of the nearest pixel (round half to even, like PyTorch)."""
    r = np.int32(np.rint(x))
    inside = (r >= np.int32(0)) & (r < np.int32(size))
    return min(max(r, np.int32(0)), np.int32(size - 1)), inside


@jit()
def bilinear_taps(xs, ys, ka, kb, H, W, off, w00, w01, w10, w11, t):
    """One offset and four weights per pixel (taps off, off + sx, off + sy, off + sx + sy)."""
    for k in range(U(ka), U(kb)):
        cx, ax0, ax1, _, _ = axis_taps(xs[k], W, t)
        cy, ay0, ay1, _, _ = axis_taps(ys[k], H, t)
        off[k] = np.uint32(cy * np.int32(W) + cx)
        w00[k] = ay0 * ax0
        w01[k] = ay0 * ax1
        w10[k] = ay1 * ax0
        w11[k] = ay1 * ax1


@jit()
def interior(a, d, lo, hi, ma, mb):
    """Narrow [ma, mb) to the m with lo <= a * m + d <= hi (float64 arithmetic)."""
    if a > 0.0:
        ma = max(ma, np.ceil((lo - d) / a))
        mb = min(mb, np.floor((hi - d) / a) + 1.0)
    elif a < 0.0:
        ma = max(ma, np.ceil((hi - d) / a))
        mb = min(mb, np.floor((lo - d) / a) + 1.0)
    elif not (lo <= d <= hi):
        mb = ma
    return ma, max(ma, mb)


@jit()
def interior_2d(cf, b, i, j0, w, H, W):
    """[ma, mb): the pixels j0 + m (0 <= m < w) of affine output row i whose 2 x 2 taps all
    lie inside the image with no clipping (so every padding mode is the identity there),
    with a margin for the rounding of the kernels' own coordinate arithmetic."""
    if H < 2 or W < 2:
        return 0, 0
    m64 = np.float64
    tol = 1e-4 * (1.0 + H + W)
    c0, c1, c2 = m64(cf[b, 0]), m64(cf[b, 1]), m64(cf[b, 2])
    c3, c4, c5 = m64(cf[b, 3]), m64(cf[b, 4]), m64(cf[b, 5])
    if not np.isfinite(c0 + c1 + c2 + c3 + c4 + c5) or max(abs(c0), abs(c1), abs(c2), abs(c3),
                                                           abs(c4), abs(c5)) > 1e15:
        return 0, 0
    ma, mb = interior(c0, c0 * j0 + c1 * i + c2, tol, W - 1.0 - tol, 0.0, m64(w))
    ma, mb = interior(c3, c3 * j0 + c4 * i + c5, tol, H - 1.0 - tol, ma, mb)
    if not (mb > ma):
        return 0, 0
    return int(ma), int(mb)


@jit()
def tile_inside(cf, b, i0, h, j0, w, H, W):
    """Whether every pixel of an affine tile has its 2 x 2 taps inside the image with no
    clipping (its first and last rows are; the tile's source region is convex)."""
    ma, mb = interior_2d(cf, b, i0, j0, w, H, W)
    if ma == 0 and mb == w:
        ma, mb = interior_2d(cf, b, i0 + h - 1, j0, w, H, W)
        return ma == 0 and mb == w
    return False


@jit()
def interior_taps(cf, b, fi0, fj0, ti, tj, ka, kb, W, off, w00, w01, w10, w11, t):
    """``bilinear_taps`` of affine pixels ka .. kb known to be interior (see ``interior_2d``):
    no padding, no masks."""
    one = t(1.0)
    c0, c1, c2 = cf[b, 0], cf[b, 1], cf[b, 2]
    c3, c4, c5 = cf[b, 3], cf[b, 4], cf[b, 5]
    for k in range(U(ka), U(kb)):
        fi = ti[k] + fi0
        fj = tj[k] + fj0
        x = c0 * fj + c1 * fi + c2
        y = c3 * fj + c4 * fi + c5
        fx = np.floor(x)
        fy = np.floor(y)
        u = x - fx
        v = y - fy
        off[k] = np.uint32(np.int32(fy) * np.int32(W) + np.int32(fx))
        w00[k] = (one - v) * (one - u)
        w01[k] = (one - v) * u
        w10[k] = v * (one - u)
        w11[k] = v * u


@jit()
def grad_taps(xs, ys, ka, kb, H, W, off, ax0, ax1, ay0, ay1, dx0, dx1, dy0, dy1, t):
    """Taps, weights and weight derivatives per pixel for the backward."""
    for k in range(U(ka), U(kb)):
        cx, ax0[k], ax1[k], dx0[k], dx1[k] = axis_taps(xs[k], W, t)
        cy, ay0[k], ay1[k], dy0[k], dy1[k] = axis_taps(ys[k], H, t)
        off[k] = np.uint32(cy * np.int32(W) + cx)


@jit()
def interior_grad_taps(cf, b, fi0, fj0, ti, tj, ka, kb, W, off, ax0, ax1, ay0, ay1, t):
    """``grad_taps`` for interior affine pixels ka .. kb, less the weight derivatives and
    padding multipliers: those are constants there (``interior_grad_consts``)."""
    one = t(1.0)
    c0, c1, c2 = cf[b, 0], cf[b, 1], cf[b, 2]
    c3, c4, c5 = cf[b, 3], cf[b, 4], cf[b, 5]
    for k in range(U(ka), U(kb)):
        fi = ti[k] + fi0
        fj = tj[k] + fj0
        x = c0 * fj + c1 * fi + c2
        y = c3 * fj + c4 * fi + c5
        fx = np.floor(x)
        fy = np.floor(y)
        u = x - fx
        v = y - fy
        off[k] = np.uint32(np.int32(fy) * np.int32(W) + np.int32(fx))
        ax0[k] = one - u
        ax1[k] = u
        ay0[k] = one - v
        ay1[k] = v


@jit()
def interior_grad_consts(dx0, dx1, dy0, dy1, mx, my, t):
    """Weight derivatives (-1, 1) and padding multipliers (1) of interior pixels, into the
    whole of these tile arrays: the backward writes them once per run of interior tiles."""
    one = t(1.0)
    for k in range(U(dx0.size)):
        dx0[k], dx1[k], dy0[k], dy1[k] = -one, one, -one, one
        mx[k], my[k] = one, one


@jit()
def scatter4(S, o, sx, sy, f0, f1, a0, a1, b0, b1):
    """S[tap] += weight * g for the four taps of one plane, skipping zero weights: a tap
    that clamping moved onto a neighbour (weight 0) is never written, so a pixel only ever
    touches its own footprint -- which the race-free band plan relies on."""
    zero = S.dtype.type(0.0)
    if b0 != zero:
        if a0 != zero:
            S[o] += f0 * a0
        if a1 != zero:
            S[o + sx] += f0 * a1
    if b1 != zero:
        if a0 != zero:
            S[o + sy] += f1 * a0
        if a1 != zero:
            S[o + sy + sx] += f1 * a1


@jit()
def own(a, d):
    """Whether a tap slot of ``axis_taps`` (weight a, d a / d x = d) is one of the point's own
    taps inside the image: a moved slot has both 0, an own tap d = +-1 even at weight 0."""
    return (a != 0.0) | (d != 0.0)


@jit()
def scatter_own4(S, o, sx, sy, f0, f1, a0, a1, rx0, rx1, ry0, ry1):
    """``scatter4`` for a NaN/Inf upstream gradient: every own tap (flags r..) gets weight *
    g, also where the weight is 0 (0 * Inf = NaN reaches it, as in ``grid_sample``); moved
    slots get nothing."""
    if ry0:
        if rx0:
            S[o] += f0 * a0
        if rx1:
            S[o + sx] += f0 * a1
    if ry1:
        if rx0:
            S[o + sy] += f1 * a0
        if rx1:
            S[o + sy + sx] += f1 * a1


@jit()
def scatter_any4(S, o, sx, sy, e, a0, a1, b0, b1, d0, d1, e0, e1):
    """grad_input of one bilinear sample, upstream gradient e: ``scatter4`` when e is finite
    (a zero weight adds nothing), else ``scatter_own4``."""
    if np.isfinite(e):
        scatter4(S, o, sx, sy, b0 * e, b1 * e, a0, a1, b0, b1)
    else:
        scatter_own4(S, o, sx, sy, b0 * e, b1 * e, a0, a1, own(a0, d0), own(a1, d1),
                     own(b0, e0), own(b1, e1))


@jit()
def own_taps(pa, o, sx, sy, a0, a1, b0, b1, d0, d1, e0, e1):
    """The four slot values of plane pa with the slots that are not own taps (``own``) read
    as 0."""
    zero = pa.dtype.type(0.0)
    rx0, rx1, ry0, ry1 = own(a0, d0), own(a1, d1), own(b0, e0), own(b1, e1)
    return (pa[o] if rx0 & ry0 else zero, pa[o + sx] if rx1 & ry0 else zero,
            pa[o + sy] if rx0 & ry1 else zero, pa[o + sy + sx] if rx1 & ry1 else zero)


@jit(reassoc=True)
def all_finite(a, k0, n, inf):
    """Whether a[k0 .. k0 + n] holds no NaN/Inf: the sum of a * 0 is 0, or NaN if one is
    (a reduction that vectorises; reassociation cannot fold x * 0 away, that needs nnan)."""
    s = a.dtype.type(0.0)
    for k in range(U(n)):
        s += a[k0 + k] * a.dtype.type(0.0)
    return s == a.dtype.type(0.0)


@jit()
def image_finite(a, b):
    """Whether image b of a (B, C, P) holds no NaN/Inf: the kernels take their exact
    non-finite paths only for images that do."""
    inf = a.dtype.type(np.inf)
    for c in range(a.shape[1]):
        if not all_finite(a[b, c], U(0), a.shape[2], inf):
            return False
    return True


@jit()
def refine_tile(ib, ob, xs, ys, off, sx, sy, H, W, i0, h, w, j0, Wo, t):
    """Forward of a border tile (padded coordinates xs, ys): where the gather into the (C, P)
    planes ob gave NaN/Inf, recompute the sample from the point's own taps only."""
    inf = t(np.inf)
    for c in range(ib.shape[0]):
        pa = ib[c]
        oa = ob[c]
        for r in range(h):
            p0 = U((i0 + r) * Wo + j0 - r * w)  # oa[p0 + k]: tile pixel k
            if all_finite(oa, p0 + U(r * w), w, inf):  # the common case: one vector pass
                continue
            for k in range(U(r * w), U(r * w + w)):
                if not (abs(oa[p0 + k]) < inf):
                    _, a0, a1, d0, d1 = axis_taps(xs[k], W, t)
                    _, b0, b1, e0, e1 = axis_taps(ys[k], H, t)
                    v00, v01, v10, v11 = own_taps(pa, off[k], sx, sy, a0, a1, b0, b1, d0, d1,
                                                  e0, e1)
                    oa[p0 + k] = ((b0 * a0) * v00 + (b0 * a1) * v01 + (b1 * a0) * v10
                                  + (b1 * a1) * v11)


@jit()
def refine_grads(ib, gb, c0, c1, off, ax0, ax1, ay0, ay1, dx0, dx1, dy0, dy1, gx, gy, i0, h,
                 w, j0, Wo, sx, sy):
    """Backward of a border tile: where dL/dx or dL/dy came out NaN/Inf, recompute both over
    channels c0 .. c1 from the point's own taps only (same order of the sums)."""
    zero = ib.dtype.type(0.0)
    inf = ib.dtype.type(np.inf)
    if all_finite(gx, U(0), h * w, inf) and all_finite(gy, U(0), h * w, inf):
        return  # the common case: two vector passes
    for r in range(h):
        base = (i0 + r) * Wo + j0 - r * w
        for k in range(r * w, r * w + w):
            if not (abs(gx[k]) < inf and abs(gy[k]) < inf):
                a0, a1, b0, b1 = ax0[k], ax1[k], ay0[k], ay1[k]
                d0, d1, e0, e1 = dx0[k], dx1[k], dy0[k], dy1[k]
                sgx = zero
                sgy = zero
                for c in range(c0, c1):
                    v00, v01, v10, v11 = own_taps(ib[c], off[k], sx, sy, a0, a1, b0, b1, d0,
                                                  d1, e0, e1)
                    qx, qy = tap_grads(v00, v01, v10, v11, gb[c, base + k], a0, a1, b0, b1,
                                       d0, d1, e0, e1)
                    sgx += qx
                    sgy += qy
                gx[k] = sgx
                gy[k] = sgy


@jit()
def tap_grads(v00, v01, v10, v11, e, a0, a1, b0, b1, d0, d1, e0, e1):
    """(dL/dx, dL/dy) of one bilinear sample of taps v.. (v01: x + 1, v10: y + 1), upstream
    gradient e: the weights (a0, a1) along x, (b0, b1) along y, each replaced in turn by its
    derivative (d.., e..)."""
    return (e * (b0 * (d0 * v00 + d1 * v01) + b1 * (d0 * v10 + d1 * v11)),
            e * (e0 * (a0 * v00 + a1 * v01) + e1 * (a0 * v10 + a1 * v11)))


@jit()
def nearest_row_grads(sa, ga, off, hit, ks, w, base):
    """grad_input of nearest samples: tile pixels ks .. ks + w (one row, upstream gradient at
    ga[base + k]) add to their one tap sa[off[k]] where hit[k] (1 inside, 0 outside); even
    pixels first, then the odd ones."""
    zero = sa.dtype.type(0.0)
    for par in range(2):
        for k in range(U(ks + par), U(ks + w), U(2)):
            if hit[k] != zero:
                sa[off[k]] += ga[base + k]


@jit()
def tile_grads(pa, ga, sa, off, ax0, ax1, ay0, ay1, dx0, dx1, dy0, dy1, gx, gy, i0, h, w, j0,
               Wo, sx, sy, bilinear, theta_grad, need_input, exact):
    """Backward of one tile (output rows i0 .. i0 + h, columns j0 .. j0 + w; tile pixel k in
    raster order) for one channel: plane pa of the input, ga of the output gradient, sa of
    grad_input.

    gx[k], gy[k] = dL/dx, dL/dy (bilinear, ``theta_grad``: the backward takes this path with
    theta only for one-channel tasks); sa += the scatter (``need_input``). Where sa is
    written, the even pixels of a row go first, then the odd ones, so that consecutive
    read-modify-writes rarely hit the same element. The order of every sum is fixed.
    """
    for r in range(h):
        base = U((i0 + r) * Wo + j0 - r * w)  # ga[base + k]: tile pixel k
        ks = r * w
        if not bilinear:
            nearest_row_grads(sa, ga, off, ax0, ks, w, base)
        elif not need_input:
            for k in range(U(ks), U(ks + w)):
                o = off[k]
                qx, qy = tap_grads(pa[o], pa[o + sx], pa[o + sy], pa[o + sy + sx], ga[base + k],
                                   ax0[k], ax1[k], ay0[k], ay1[k], dx0[k], dx1[k], dy0[k],
                                   dy1[k])
                gx[k] = qx
                gy[k] = qy
        else:
            for par in range(2):
                for k in range(U(ks + par), U(ks + w), U(2)):
                    o = off[k]
                    e = ga[base + k]
                    a0, a1, b0, b1 = ax0[k], ax1[k], ay0[k], ay1[k]
                    if theta_grad:
                        qx, qy = tap_grads(pa[o], pa[o + sx], pa[o + sy], pa[o + sy + sx], e,
                                           a0, a1, b0, b1, dx0[k], dx1[k], dy0[k], dy1[k])
                        gx[k] = qx
                        gy[k] = qy
                    if exact:  # the upstream gradient holds NaN/Inf
                        scatter_any4(sa, o, sx, sy, e, a0, a1, b0, b1, dx0[k], dx1[k], dy0[k],
                                     dy1[k])
                    else:
                        scatter4(sa, o, sx, sy, b0 * e, b1 * e, a0, a1, b0, b1)


@jit()
def tile_grads_channels(ib, gb, Gb, c0, c1, off, ax0, ax1, ay0, ay1, dx0, dx1, dy0, dy1, gx,
                        gy, i0, h, w, j0, Wo, sx, sy, need_input, exact):
    """``tile_grads`` (bilinear, theta) for channels c0 .. c1 at once, pixel-outer: the sums
    over channels stay in registers (faster than channel-outer for C > 1). ib, gb, Gb: the
    (C, P) planes of one image. Same order of every sum."""
    zero = ib.dtype.type(0.0)
    step = 2 if need_input else 1
    for r in range(h):
        base = U((i0 + r) * Wo + j0 - r * w)
        ks = r * w
        for par in range(step):
            for k in range(U(ks + par), U(ks + w), U(step)):
                o = off[k]
                a0, a1, b0, b1 = ax0[k], ax1[k], ay0[k], ay1[k]
                d0, d1, e0, e1 = dx0[k], dx1[k], dy0[k], dy1[k]
                sgx = zero
                sgy = zero
                for c in range(U(c0), U(c1)):
                    e = gb[c, base + k]
                    qx, qy = tap_grads(ib[c, o], ib[c, o + sx], ib[c, o + sy],
                                       ib[c, o + sy + sx], e, a0, a1, b0, b1, d0, d1, e0, e1)
                    sgx += qx
                    sgy += qy
                    if need_input and exact:  # the upstream gradient holds NaN/Inf
                        scatter_any4(Gb[c], o, sx, sy, e, a0, a1, b0, b1, d0, d1, e0, e1)
                    elif need_input:
                        scatter4(Gb[c], o, sx, sy, b0 * e, b1 * e, a0, a1, b0, b1)
                gx[k] = sgx
                gy[k] = sgy


@jit(parallel=True)
def forward(inp, H, W, cf, out, Ho, Wo, projective, mode, pad, align, TW, L, nchunk):
    """out[b, c, i*Wo + j] = sampled input at the source of output pixel (i, j).

    Output tiles of tw x th pixels (see ``tiling``), ``nchunk`` contiguous runs of tiles
    shared among the threads.
    """
    B, C = inp.shape[0], inp.shape[1]
    t = inp.dtype.type
    zero = t(0.0)
    tw, th, ntx, nty, wl = tiling(Wo, Ho, TW, L)
    ti, tj = tile_tables(tw, th, t)
    ti2, tj2 = tile_tables(wl, th, t)
    per_img = ntx * nty
    nblk = B * per_img
    nchunk = min(nblk, nchunk)
    sx = np.uint32(1 if W > 1 else 0)
    sy = np.uint32(W if H > 1 else 0)
    Lb = tw * th
    for ch in prange(nchunk):
        fb = -1  # the image whose NaN/Inf check ``finite`` holds (blocks come image by image)
        finite = True
        xs = np.empty(Lb, t)
        ys = np.empty(Lb, t)
        mx = np.empty(Lb, t)
        my = np.empty(Lb, t)
        off = np.empty(Lb, np.uint32)
        w00 = np.empty(Lb, t)
        w01 = np.empty(Lb, t)
        w10 = np.empty(Lb, t)
        w11 = np.empty(Lb, t)
        for blk in range(ch * nblk // nchunk, (ch + 1) * nblk // nchunk):
            b = blk // per_img
            q = blk - b * per_img
            ty = q // ntx
            tx = q - ty * ntx
            i0 = ty * th
            j0 = tx * tw
            w = tw if tx < ntx - 1 else wl
            h = min(th, Ho - i0)
            n = w * h
            tt_i, tt_j = (ti, tj) if w == tw else (ti2, tj2)
            inside = mode == BILINEAR and not projective and tile_inside(cf, b, i0, h, j0, w, H,
                                                                          W)
            if inside:
                # the short path: no padding, no masks
                interior_taps(cf, b, t(i0), t(j0), tt_i, tt_j, 0, n, W, off, w00, w01, w10, w11,
                              t)
            else:
                source_coords(cf, b, t(i0), t(j0), tt_i, tt_j, 0, n, projective, xs, ys, mx, t)
                pad_block(xs, ys, mx, my, 0, n, H, W, pad, align, t)
                if mode == BILINEAR:
                    bilinear_taps(xs, ys, 0, n, H, W, off, w00, w01, w10, w11, t)
            if mode == BILINEAR:
                c = 0
                while c < C:  # channels in groups of up to 4: one pass over the taps each
                    if C - c >= 4:
                        pa, pb, pc, pd = inp[b, c], inp[b, c + 1], inp[b, c + 2], inp[b, c + 3]
                        oa, ob, oc, od = out[b, c], out[b, c + 1], out[b, c + 2], out[b, c + 3]
                        for r in range(h):
                            p0 = U((i0 + r) * Wo + j0 - r * w)  # out[.., p0 + k]: pixel k
                            for k in range(U(r * w), U(r * w + w)):
                                o = off[k]
                                e, f, hh = o + sx, o + sy, o + sy + sx
                                oa[p0 + k] = (w00[k] * pa[o] + w01[k] * pa[e] + w10[k] * pa[f]
                                              + w11[k] * pa[hh])
                                ob[p0 + k] = (w00[k] * pb[o] + w01[k] * pb[e] + w10[k] * pb[f]
                                              + w11[k] * pb[hh])
                                oc[p0 + k] = (w00[k] * pc[o] + w01[k] * pc[e] + w10[k] * pc[f]
                                              + w11[k] * pc[hh])
                                od[p0 + k] = (w00[k] * pd[o] + w01[k] * pd[e] + w10[k] * pd[f]
                                              + w11[k] * pd[hh])
                        c += 4
                    elif C - c == 3:
                        pa, pb, pc = inp[b, c], inp[b, c + 1], inp[b, c + 2]
                        oa, ob, oc = out[b, c], out[b, c + 1], out[b, c + 2]
                        for r in range(h):
                            p0 = U((i0 + r) * Wo + j0 - r * w)  # out[.., p0 + k]: pixel k
                            for k in range(U(r * w), U(r * w + w)):
                                o = off[k]
                                e, f, hh = o + sx, o + sy, o + sy + sx
                                oa[p0 + k] = (w00[k] * pa[o] + w01[k] * pa[e] + w10[k] * pa[f]
                                              + w11[k] * pa[hh])
                                ob[p0 + k] = (w00[k] * pb[o] + w01[k] * pb[e] + w10[k] * pb[f]
                                              + w11[k] * pb[hh])
                                oc[p0 + k] = (w00[k] * pc[o] + w01[k] * pc[e] + w10[k] * pc[f]
                                              + w11[k] * pc[hh])
                        c += 3
                    else:
                        pa, oa = inp[b, c], out[b, c]
                        for r in range(h):
                            p0 = U((i0 + r) * Wo + j0 - r * w)  # out[.., p0 + k]: pixel k
                            for k in range(U(r * w), U(r * w + w)):
                                o = off[k]
                                oa[p0 + k] = (w00[k] * pa[o] + w01[k] * pa[o + sx]
                                              + w10[k] * pa[o + sy] + w11[k] * pa[o + sy + sx])
                        c += 1
                if not inside and fb != b:  # images without NaN/Inf need no refine_tile
                    fb = b
                    finite = image_finite(inp, b)
                if not inside and not finite:
                    refine_tile(inp[b], out[b], xs, ys, off, sx, sy, H, W, i0, h, w, j0, Wo, t)
            else:  # nearest: one tap, read only when inside (NaN pixels stay where they are)
                for k in range(U(n)):
                    cx, inx = nearest_tap(xs[k], W, t)
                    cy, iny = nearest_tap(ys[k], H, t)
                    off[k] = np.uint32(cy * np.int32(W) + cx)
                    w00[k] = t(1.0) if inx & iny else zero
                for c in range(C):
                    pa = inp[b, c]
                    for r in range(h):
                        oa = out[b, c, (i0 + r) * Wo + j0:(i0 + r) * Wo + j0 + w]
                        for m in range(U(w)):
                            k = U(r * w) + m
                            oa[m] = pa[off[k]] if w00[k] != zero else zero


@jit(reassoc=True)
def row_sums(gx, gy, mx, my, k0, n, j0):
    """sum ex j, sum ex, sum ey j, sum ey over pixels k0 .. k0 + n of a tile row (column j0 +
    m), ex = gx * mx etc., in float64. Reassociation lets the sums vectorise: the order is
    fixed at compile time, so the bits still repeat from run to run."""
    s0 = s1 = s2 = s3 = 0.0
    for m in range(U(n)):
        k = U(k0) + m
        ex = np.float64(gx[k] * mx[k])
        ey = np.float64(gy[k] * my[k])
        fj = np.float64(m) + j0
        s0 += ex * fj
        s1 += ex
        s2 += ey * fj
        s3 += ey
    return s0, s1, s2, s3


@jit(reassoc=True)
def row_sums_projective(gx, gy, mx, my, qs, rx, ry, k0, n, j0, ox, oy):
    """``row_sums`` with ex, ey scaled by q = 1/w, and sum s j, sum s for
    s = ex (x - ox) + ey (y - oy) (raw coordinates; guarded so that 0 * inf stays out)."""
    s0 = s1 = s2 = s3 = s4 = s5 = 0.0
    for m in range(U(n)):
        k = U(k0) + m
        q = np.float64(qs[k])
        ex = np.float64(gx[k] * mx[k]) * q
        ey = np.float64(gy[k] * my[k]) * q
        fj = np.float64(m) + j0
        s = ex * (np.float64(rx[k]) - ox) if ex != 0.0 else 0.0
        s += ey * (np.float64(ry[k]) - oy) if ey != 0.0 else 0.0
        s0 += ex * fj
        s1 += ex
        s2 += ey * fj
        s3 += ey
        s4 += s * fj
        s5 += s
    return s0, s1, s2, s3, s4, s5


@jit(parallel=True)
def backward(inp, H, W, cf, gout, Ho, Wo, projective, mode, pad, align, TW, L, ox, oy,
             gin, priv, rows, tasks, phases, nslots, need_input, need_theta):
    """Gradients of ``forward``: input (scatter into ``gin`` / ``priv``) and per-row sums for
    theta.

    ``tasks`` (T, 7) rows ``(b, c0, c1, r0, r1, buf, g)``: output rows [r0, r1) of image b,
    channels [c0, c1); the input gradient goes to ``gin[b]`` (buf < 0) or ``priv[buf]``; the
    row sums to ``rows[b, g]``. Tasks ``phases[p]:phases[p+1]`` run in parallel, phases in
    order (``nslots`` threads, tasks dealt round-robin); the planner guarantees that tasks of
    one phase never write the same element. Within a task the order is fixed (tiles in
    raster order; in a tile, channels one at a time, or, with theta and several channels,
    pixels outer and channels inner; pixels in raster order, or even then odd where
    grad_input is written).

    ``rows[b, g, i]`` (float64) receives, over the pixels (i, j) of output row i, with
    gx = dL/dx, gy = dL/dy (raw pixel coordinates) and q = 1 / w (1 for affine):
    ``[sum gx q j, sum gx q, sum gy q j, sum gy q, sum s j, sum s]`` where
    ``s = q (gx (x - ox) + gy (y - oy))`` (projective only). ``numba_cpu`` turns them into
    d L / d theta. Bilinear: dV/dx = sum_taps v * d weight / dx with the taps of
    ``axis_taps`` (right derivative at integer knots); times d padded / d raw.
    """
    t = inp.dtype.type
    zero = t(0.0)
    tw, th, ntx, _, wl = tiling(Wo, Ho, TW, L)
    ti, tj = tile_tables(tw, th, t)
    ti2, tj2 = tile_tables(wl, th, t)
    Lb = tw * th
    sx = np.uint32(1 if W > 1 else 0)
    sy = np.uint32(W if H > 1 else 0)
    bilinear = mode == BILINEAR
    theta_grad = need_theta and bilinear
    if need_input:  # zero grad_input here, in parallel (no torch / OpenMP call in between)
        flat = gin.reshape(gin.size)
        nz = 8 * nslots
        for q in prange(nz):
            flat[q * flat.size // nz:(q + 1) * flat.size // nz] = zero
    B = inp.shape[0]
    fin_in = np.empty(B, np.bool_)  # no NaN/Inf in image b: no refine_grads
    fin_g = np.empty(B, np.bool_)  # no NaN/Inf in its upstream gradient: plain scatter4
    for b in prange(B):
        fin_in[b] = not theta_grad or image_finite(inp, b)
        fin_g[b] = not need_input or image_finite(gout, b)
    scr = np.empty((nslots, 17, Lb), t)  # per-thread scratch, one row per tile array
    offs = np.empty((nslots, Lb), np.uint32)
    for ph in range(phases.shape[0] - 1):
        for slot in prange(nslots):  # one slot per thread, tasks dealt round-robin
            xs, ys, qs, mx, my, rx, ry = (scr[slot, 0], scr[slot, 1], scr[slot, 2],
                                          scr[slot, 3], scr[slot, 4], scr[slot, 5],
                                          scr[slot, 6])
            ax0, ax1, ay0, ay1 = scr[slot, 7], scr[slot, 8], scr[slot, 9], scr[slot, 10]
            dx0, dx1, dy0, dy1 = scr[slot, 11], scr[slot, 12], scr[slot, 13], scr[slot, 14]
            gx, gy = scr[slot, 15], scr[slot, 16]
            off = offs[slot]
            consts = False  # dx0 .. my hold the interior constants
            for task in range(phases[ph] + slot, phases[ph + 1], nslots):
                b, c0, c1, r0, r1, buf, g = (tasks[task, 0], tasks[task, 1], tasks[task, 2],
                                             tasks[task, 3], tasks[task, 4], tasks[task, 5],
                                             tasks[task, 6])
                for i0 in range(r0, r1, th):
                    h = min(th, r1 - i0)
                    for tx in range(ntx):
                        j0 = tx * tw
                        w = tw if tx < ntx - 1 else wl
                        n = w * h
                        tt_i, tt_j = (ti, tj) if w == tw else (ti2, tj2)
                        inside = bilinear and not projective and tile_inside(cf, b, i0, h, j0,
                                                                             w, H, W)
                        if inside:
                            # the short path: no padding, no masks
                            if not consts:
                                interior_grad_consts(dx0, dx1, dy0, dy1, mx, my, t)
                                consts = True
                            interior_grad_taps(cf, b, t(i0), t(j0), tt_i, tt_j, 0, n, W, off,
                                               ax0, ax1, ay0, ay1, t)
                        else:
                            consts = False
                            source_coords(cf, b, t(i0), t(j0), tt_i, tt_j, 0, n, projective, xs,
                                          ys, qs, t)
                            if projective and theta_grad:  # raw coordinates, for the w row
                                for k in range(U(n)):
                                    rx[k] = xs[k]
                                    ry[k] = ys[k]
                            pad_block(xs, ys, mx, my, 0, n, H, W, pad, align, t)
                            if bilinear:
                                grad_taps(xs, ys, 0, n, H, W, off, ax0, ax1, ay0, ay1, dx0, dx1,
                                          dy0, dy1, t)
                            else:
                                for k in range(U(n)):
                                    cx, inx = nearest_tap(xs[k], W, t)
                                    cy, iny = nearest_tap(ys[k], H, t)
                                    off[k] = np.uint32(cy * np.int32(W) + cx)
                                    ax0[k] = t(1.0) if inx & iny else zero
                        G = priv if buf >= 0 else gin
                        bg = buf if buf >= 0 else b
                        if theta_grad and c1 - c0 > 1:
                            tile_grads_channels(inp[b], gout[b], G[bg], c0, c1, off, ax0, ax1,
                                                ay0, ay1, dx0, dx1, dy0, dy1, gx, gy, i0, h, w,
                                                j0, Wo, sx, sy, need_input, not fin_g[b])
                        else:
                            for c in range(c0, c1):
                                tile_grads(inp[b, c], gout[b, c], G[bg, c], off, ax0, ax1, ay0,
                                           ay1, dx0, dx1, dy0, dy1, gx, gy, i0, h, w, j0, Wo, sx,
                                           sy, bilinear, theta_grad, need_input,
                                           not fin_g[b])
                        if theta_grad and not inside and not fin_in[b]:
                            refine_grads(inp[b], gout[b], c0, c1, off, ax0, ax1, ay0, ay1, dx0,
                                         dx1, dy0, dy1, gx, gy, i0, h, w, j0, Wo, sx, sy)
                        if theta_grad:
                            for r in range(h):  # per-row sums (float64)
                                i = i0 + r
                                k0 = r * w
                                if projective:
                                    s0, s1, s2, s3, s4, s5 = row_sums_projective(
                                        gx, gy, mx, my, qs, rx, ry, k0, w, j0, ox, oy)
                                    rows[b, g, i, 4] += s4
                                    rows[b, g, i, 5] += s5
                                else:
                                    s0, s1, s2, s3 = row_sums(gx, gy, mx, my, k0, w, j0)
                                rows[b, g, i, 0] += s0
                                rows[b, g, i, 1] += s1
                                rows[b, g, i, 2] += s2
                                rows[b, g, i, 3] += s3
