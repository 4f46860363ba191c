"""Numba kernels of the fused 3-D affine warp (trilinear / nearest).

Layout: ``inp`` (B, C, D*H*W), ``out`` / ``gout`` (B, C, Do*Ho*Wo), C-contiguous. ``cf``
(B, 12) maps output indices (j, i, k) (along W, H, D) to input pixel coordinates:

    x = cf0 j + cf1 i + cf2 k + cf3,  y = cf4 j + ... + cf7,  z = cf8 j + ... + cf11

Output "rows" are (k, i) pairs, r = k * Ho + i. Tiles, padding and taps work as in
``_numba_2d`` (tiles within one depth slice); the 2 x 2 x 2 taps sit at
``off + {0, sx} + {0, sy} + {0, sz}`` (sz = H * W). Non-finite values as there (the rule of
:mod:`stnkit.ops.sample`): border tiles recompute a non-finite sample or dL/dx.. from the
point's own taps (``refine_tile_3d`` / ``refine_grads_3d``); a NaN/Inf upstream gradient
reaches every own tap, zero weights included (``scatter_any8``).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from stnkit.ops.kernels._numba_2d import (
    U,
    all_finite,
    axis_taps,
    image_finite,
    interior,
    nearest_row_grads,
    nearest_tap,
    own,
    scatter4,
    scatter_own4,
    tile_tables,
    tiling,
)
from stnkit.ops.kernels._numba_common import (
    BILINEAR,
    BORDER,
    REFLECTION,
    ZEROS,
    pad_coord,
)
from stnkit.ops.kernels._numba_runtime import jit


@jit()
def coords_3d(cf, b, fk, fi0, fj0, ti, tj, n, xs, ys, zs):
    """Raw input pixel coordinates of the block's pixels (depth index fk)."""
    for k in range(U(n)):
        fi = ti[k] + fi0
        fj = tj[k] + fj0
        xs[k] = cf[b, 0] * fj + cf[b, 1] * fi + (cf[b, 2] * fk + cf[b, 3])
        ys[k] = cf[b, 4] * fj + cf[b, 5] * fi + (cf[b, 6] * fk + cf[b, 7])
        zs[k] = cf[b, 8] * fj + cf[b, 9] * fi + (cf[b, 10] * fk + cf[b, 11])


@jit()
def pad_block_3d(xs, ys, zs, mx, my, mz, n, D, H, W, pad, align, t):
    if pad == ZEROS:
        for k in range(U(n)):
            xs[k], mx[k] = pad_coord(xs[k], W, ZEROS, align, t)
            ys[k], my[k] = pad_coord(ys[k], H, ZEROS, align, t)
            zs[k], mz[k] = pad_coord(zs[k], D, ZEROS, align, t)
    elif pad == BORDER:
        for k in range(U(n)):
            xs[k], mx[k] = pad_coord(xs[k], W, BORDER, align, t)
            ys[k], my[k] = pad_coord(ys[k], H, BORDER, align, t)
            zs[k], mz[k] = pad_coord(zs[k], D, BORDER, align, t)
    else:
        for k in range(U(n)):
            xs[k], mx[k] = pad_coord(xs[k], W, REFLECTION, align, t)
            ys[k], my[k] = pad_coord(ys[k], H, REFLECTION, align, t)
            zs[k], mz[k] = pad_coord(zs[k], D, REFLECTION, align, t)


@jit()
def trilinear_taps(xs, ys, zs, n, D, H, W, off, ax0, ax1, ay0, ay1, az0, az1, t):
    for k in range(U(n)):
        cx, ax0[k], ax1[k], _, _ = axis_taps(xs[k], W, t)
        cy, ay0[k], ay1[k], _, _ = axis_taps(ys[k], H, t)
        cz, az0[k], az1[k], _, _ = axis_taps(zs[k], D, t)
        off[k] = np.uint32((cz * np.int32(H) + cy) * np.int32(W) + cx)


@jit()
def grad_taps_3d(xs, ys, zs, n, D, H, W, off, ax0, ax1, ay0, ay1, az0, az1, dx0, dx1, dy0, dy1,
                 dz0, dz1, t):
    """``trilinear_taps`` with the weight derivatives, for the backward."""
    for k in range(U(n)):
        cx, ax0[k], ax1[k], dx0[k], dx1[k] = axis_taps(xs[k], W, t)
        cy, ay0[k], ay1[k], dy0[k], dy1[k] = axis_taps(ys[k], H, t)
        cz, az0[k], az1[k], dz0[k], dz1[k] = axis_taps(zs[k], D, t)
        off[k] = np.uint32((cz * np.int32(H) + cy) * np.int32(W) + cx)


@jit()
def tile_inside_3d(cf, b, kk, i0, h, j0, w, D, H, W):
    """Whether all 2 x 2 x 2 taps of every voxel of the tile (slice kk, rows i0 .. i0 + h,
    columns j0 .. j0 + w) lie inside the input with no clipping (checked on the first and last
    rows: the tile's source region is convex); see ``_numba_2d.interior_2d``."""
    if D < 2 or H < 2 or W < 2:
        return False
    m64 = np.float64
    tol = 1e-4 * (1.0 + D + H + W)
    c = np.empty(12)
    for q in range(12):
        c[q] = m64(cf[b, q])
    if not np.isfinite(c.sum()) or np.abs(c).max() > 1e15:
        return False
    for i in (i0, i0 + h - 1):
        ma, mb = 0.0, m64(w)
        for a, size in ((0, W), (4, H), (8, D)):
            ma, mb = interior(c[a], c[a] * j0 + c[a + 1] * i + c[a + 2] * kk + c[a + 3], tol,
                              size - 1.0 - tol, ma, mb)
        if not (ma == 0.0 and mb == w):
            return False
    return True


@jit()
def interior_taps_3d(cf, b, fk, fi0, fj0, ti, tj, n, W, HW, off, ax0, ax1, ay0, ay1, az0, az1,
                     t):
    """Taps and weights of a tile known to be inside (no padding, no masks)."""
    one = t(1.0)
    for k in range(U(n)):
        fi = ti[k] + fi0
        fj = tj[k] + fj0
        x = cf[b, 0] * fj + cf[b, 1] * fi + (cf[b, 2] * fk + cf[b, 3])
        y = cf[b, 4] * fj + cf[b, 5] * fi + (cf[b, 6] * fk + cf[b, 7])
        z = cf[b, 8] * fj + cf[b, 9] * fi + (cf[b, 10] * fk + cf[b, 11])
        fx, fy, fz = np.floor(x), np.floor(y), np.floor(z)
        u, v, s = x - fx, y - fy, z - fz
        off[k] = np.uint32(np.int32(fz) * np.int32(HW) + np.int32(fy) * np.int32(W)
                           + np.int32(fx))
        ax0[k], ax1[k] = one - u, u
        ay0[k], ay1[k] = one - v, v
        az0[k], az1[k] = one - s, s


@jit(reassoc=True)
def row_sums_3d(gx, gy, gz, mx, my, mz, k0, n, j0):
    """[sum ex j, sum ex, sum ey j, sum ey, sum ez j, sum ez] over pixels k0 .. k0 + n of a tile
    row (column j0 + m), ex = gx * mx etc., float64 (see ``_numba_2d.row_sums``)."""
    s0 = s1 = s2 = s3 = s4 = s5 = 0.0
    for m in range(U(n)):
        k = U(k0) + m
        fj = np.float64(m) + j0
        ex = np.float64(gx[k] * mx[k])
        ey = np.float64(gy[k] * my[k])
        ez = np.float64(gz[k] * mz[k])
        s0 += ex * fj
        s1 += ex
        s2 += ey * fj
        s3 += ey
        s4 += ez * fj
        s5 += ez
    return (s0, s1, s2, s3, s4, s5)


@jit(parallel=True)
def forward(inp, D, H, W, cf, out, Do, Ho, Wo, mode, pad, align, TW, L, nchunk):
    """out[b, c, (k*Ho + i)*Wo + j] = sampled input at the source of output voxel (k, i, j)."""
    B, C = inp.shape[0], inp.shape[1]
    t = inp.dtype.type
    zero = t(0.0)
    tw, th, ntx, nty, wl = tiling(Wo, Ho, TW, L)
    ti, tj = tile_tables(tw, th, t)
    ti2, tj2 = tile_tables(wl, th, t)
    per_slice = ntx * nty
    per_img = Do * per_slice
    nblk = B * per_img
    nchunk = min(nblk, nchunk)
    sx = np.uint32(1 if W > 1 else 0)
    sy = np.uint32(W if H > 1 else 0)
    sz = np.uint32(H * W if D > 1 else 0)
    Lb = tw * th
    for ch in prange(nchunk):
        fb = -1  # the image whose NaN/Inf check ``finite`` holds (blocks come image by image)
        finite = True
        xs = np.empty(Lb, t)
        ys = np.empty(Lb, t)
        zs = np.empty(Lb, t)
        mx = np.empty(Lb, t)
        my = np.empty(Lb, t)
        mz = np.empty(Lb, t)
        off = np.empty(Lb, np.uint32)
        ax0 = np.empty(Lb, t)
        ax1 = np.empty(Lb, t)
        ay0 = np.empty(Lb, t)
        ay1 = np.empty(Lb, t)
        az0 = np.empty(Lb, t)
        az1 = np.empty(Lb, t)
        for blk in range(ch * nblk // nchunk, (ch + 1) * nblk // nchunk):
            b = blk // per_img
            q = blk - b * per_img
            kk = q // per_slice
            q -= kk * per_slice
            ty = q // ntx
            tx = q - ty * ntx
            i0 = ty * th
            j0 = tx * tw
            w = tw if tx < ntx - 1 else wl
            h = min(th, Ho - i0)
            n = w * h
            tt_i, tt_j = (ti, tj) if w == tw else (ti2, tj2)
            inside = mode == BILINEAR and tile_inside_3d(cf, b, kk, i0, h, j0, w, D, H, W)
            if inside:  # the short path
                interior_taps_3d(cf, b, t(kk), t(i0), t(j0), tt_i, tt_j, n, W, H * W, off, ax0,
                                 ax1, ay0, ay1, az0, az1, t)
            else:
                coords_3d(cf, b, t(kk), t(i0), t(j0), tt_i, tt_j, n, xs, ys, zs)
                pad_block_3d(xs, ys, zs, mx, my, mz, n, D, H, W, pad, align, t)
            if mode == BILINEAR:
                if not inside:
                    trilinear_taps(xs, ys, zs, n, D, H, W, off, ax0, ax1, ay0, ay1, az0, az1,
                                   t)
                for c in range(C):
                    pa = inp[b, c]
                    for r in range(h):
                        p0 = (kk * Ho + i0 + r) * Wo + j0
                        oa = out[b, c, p0:p0 + w]
                        for m in range(U(w)):
                            k = U(r * w) + m
                            o = off[k]
                            e, f = o + sz, o + sy
                            hh = e + sy
                            lo = (ay0[k] * (ax0[k] * pa[o] + ax1[k] * pa[o + sx])
                                  + ay1[k] * (ax0[k] * pa[f] + ax1[k] * pa[f + sx]))
                            hi = (ay0[k] * (ax0[k] * pa[e] + ax1[k] * pa[e + sx])
                                  + ay1[k] * (ax0[k] * pa[hh] + ax1[k] * pa[hh + sx]))
                            oa[m] = az0[k] * lo + az1[k] * hi
                if not inside and fb != b:  # images without NaN/Inf need no refine_tile_3d
                    fb = b
                    finite = image_finite(inp, b)
                if not inside and not finite:
                    refine_tile_3d(inp[b], out[b], xs, ys, zs, off, sx, sy, sz, D, H, W,
                                   (kk * Ho + i0) * Wo + j0, h, w, Wo, t)
            else:
                for k in range(U(n)):
                    cx, inx = nearest_tap(xs[k], W, t)
                    cy, iny = nearest_tap(ys[k], H, t)
                    cz, inz = nearest_tap(zs[k], D, t)
                    off[k] = np.uint32((cz * np.int32(H) + cy) * np.int32(W) + cx)
                    ax0[k] = t(1.0) if inx & iny & inz else zero
                for c in range(C):
                    pa = inp[b, c]
                    for r in range(h):
                        p0 = (kk * Ho + i0 + r) * Wo + j0
                        oa = out[b, c, p0:p0 + w]
                        for m in range(U(w)):
                            k = U(r * w) + m
                            oa[m] = pa[off[k]] if ax0[k] != zero else zero


@jit()
def tap_grads_3d(pa, o, sx, sy, sz, gk, a0, a1, b0, b1, z0, z1, d0, d1, e0, e1, f0, f1):
    """(dL/dx, dL/dy, dL/dz) of one trilinear sample at taps o + {0, sx} + {0, sy} + {0, sz}
    of plane pa, upstream gradient gk: weights (a.. x, b.. y, z.. z), derivatives
    (d.. x, e.. y, f.. z)."""
    e, f = o + sz, o + sy
    hh = e + sy
    return tap_grads_3d_values(pa[o], pa[o + sx], pa[f], pa[f + sx], pa[e], pa[e + sx], pa[hh],
                               pa[hh + sx], gk, a0, a1, b0, b1, z0, z1, d0, d1, e0, e1, f0, f1)


@jit()
def own_taps_3d(pa, o, sx, sy, sz, a0, a1, b0, b1, z0, z1, d0, d1, e0, e1, f0, f1):
    """The eight slot values (order of ``tap_grads_3d_values``) with the slots that are not
    own taps of the point (``_numba_2d.own``) read as 0."""
    zero = pa.dtype.type(0.0)
    rx0, rx1, ry0, ry1 = own(a0, d0), own(a1, d1), own(b0, e0), own(b1, e1)
    rz0, rz1 = own(z0, f0), own(z1, f1)
    e, f = o + sz, o + sy
    hh = e + sy
    return (pa[o] if rz0 & ry0 & rx0 else zero, pa[o + sx] if rz0 & ry0 & rx1 else zero,
            pa[f] if rz0 & ry1 & rx0 else zero, pa[f + sx] if rz0 & ry1 & rx1 else zero,
            pa[e] if rz1 & ry0 & rx0 else zero, pa[e + sx] if rz1 & ry0 & rx1 else zero,
            pa[hh] if rz1 & ry1 & rx0 else zero, pa[hh + sx] if rz1 & ry1 & rx1 else zero)


@jit()
def trilinear_value(v000, v001, v010, v011, v100, v101, v110, v111, a0, a1, b0, b1, z0, z1):
    """One trilinear sample from its slot values (the forward's order of operations)."""
    lo = b0 * (a0 * v000 + a1 * v001) + b1 * (a0 * v010 + a1 * v011)
    hi = b0 * (a0 * v100 + a1 * v101) + b1 * (a0 * v110 + a1 * v111)
    return z0 * lo + z1 * hi


@jit()
def refine_tile_3d(ib, ob, xs, ys, zs, off, sx, sy, sz, D, H, W, p00, h, w, Wo, t):
    """Forward of a border tile: where the gather into the (C, P) planes ob gave NaN/Inf,
    recompute the sample from the point's own taps only (``_numba_2d.refine_tile``); the
    tile's row r starts at output index p00 + r * Wo."""
    inf = t(np.inf)
    for c in range(ib.shape[0]):
        pa = ib[c]
        oa = ob[c]
        for r in range(h):
            if all_finite(oa, U(p00 + r * Wo), w, inf):  # the common case: one vector pass
                continue
            for m in range(w):
                k = r * w + m
                p = p00 + r * Wo + m
                if not (abs(oa[p]) < inf):
                    _, a0, a1, d0, d1 = axis_taps(xs[k], W, t)
                    _, b0, b1, e0, e1 = axis_taps(ys[k], H, t)
                    _, z0, z1, f0, f1 = axis_taps(zs[k], D, t)
                    v = own_taps_3d(pa, off[k], sx, sy, sz, a0, a1, b0, b1, z0, z1, d0, d1, e0,
                                    e1, f0, f1)
                    oa[p] = trilinear_value(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], a0,
                                            a1, b0, b1, z0, z1)


@jit()
def tap_grads_3d_values(v000, v001, v010, v011, v100, v101, v110, v111, gk, a0, a1, b0, b1, z0,
                        z1, d0, d1, e0, e1, f0, f1):
    """``tap_grads_3d`` from the eight slot values (x fastest, then y, then z)."""
    # d/dx: the x weights replaced by derivatives
    lo = b0 * (d0 * v000 + d1 * v001) + b1 * (d0 * v010 + d1 * v011)
    hi = b0 * (d0 * v100 + d1 * v101) + b1 * (d0 * v110 + d1 * v111)
    x00 = a0 * v000 + a1 * v001
    x01 = a0 * v010 + a1 * v011
    x10 = a0 * v100 + a1 * v101
    x11 = a0 * v110 + a1 * v111
    return (gk * (z0 * lo + z1 * hi),
            gk * (z0 * (e0 * x00 + e1 * x01) + z1 * (e0 * x10 + e1 * x11)),
            gk * (f0 * (b0 * x00 + b1 * x01) + f1 * (b0 * x10 + b1 * x11)))


@jit()
def scatter_any8(sa, o, sx, sy, sz, gk, a0, a1, b0, b1, z0, z1, d0, d1, e0, e1, f0, f1):
    """``scatter8`` when gk is finite, else every own tap gets weight * gk, zero weights
    included (``_numba_2d.scatter_own4``)."""
    if np.isfinite(gk):
        scatter8(sa, o, sx, sy, sz, gk, a0, a1, b0, b1, z0, z1)
    else:
        rx0, rx1, ry0, ry1 = own(a0, d0), own(a1, d1), own(b0, e0), own(b1, e1)
        wz0 = z0 * gk
        wz1 = z1 * gk
        if own(z0, f0):
            scatter_own4(sa, o, sx, sy, wz0 * b0, wz0 * b1, a0, a1, rx0, rx1, ry0, ry1)
        if own(z1, f1):
            scatter_own4(sa, o + sz, sx, sy, wz1 * b0, wz1 * b1, a0, a1, rx0, rx1, ry0, ry1)


@jit()
def refine_grads_3d(ib, gb, c0, c1, taps, row0, h, w, j0, Wo, sx, sy, sz):
    """Backward of a border tile: where dL/dx, dL/dy or dL/dz came out NaN/Inf, recompute
    them over channels c0 .. c1 from the point's own taps only (same order of the sums)."""
    off, ax0, ax1, ay0, ay1, az0, az1, dx0, dx1, dy0, dy1, dz0, dz1, gx, gy, gz = taps
    zero = ib.dtype.type(0.0)
    inf = ib.dtype.type(np.inf)
    n = h * w
    if (all_finite(gx, U(0), n, inf) and all_finite(gy, U(0), n, inf)
            and all_finite(gz, U(0), n, inf)):
        return  # the common case: three vector passes
    for r in range(h):
        base = (row0 + r) * Wo + j0 - r * w
        for k in range(r * w, r * w + w):
            if not (abs(gx[k]) < inf and abs(gy[k]) < inf and abs(gz[k]) < inf):
                a0, a1, b0, b1, z0, z1 = ax0[k], ax1[k], ay0[k], ay1[k], az0[k], az1[k]
                d0, d1, e0, e1, f0, f1 = dx0[k], dx1[k], dy0[k], dy1[k], dz0[k], dz1[k]
                sgx = zero
                sgy = zero
                sgz = zero
                for c in range(c0, c1):
                    v = own_taps_3d(ib[c], off[k], sx, sy, sz, a0, a1, b0, b1, z0, z1, d0, d1,
                                    e0, e1, f0, f1)
                    qx, qy, qz = tap_grads_3d_values(v[0], v[1], v[2], v[3], v[4], v[5], v[6],
                                                     v[7], gb[c, base + k], a0, a1, b0, b1, z0,
                                                     z1, d0, d1, e0, e1, f0, f1)
                    sgx += qx
                    sgy += qy
                    sgz += qz
                gx[k] = sgx
                gy[k] = sgy
                gz[k] = sgz


@jit()
def scatter8(sa, o, sx, sy, sz, gk, a0, a1, b0, b1, z0, z1):
    """grad_input of one trilinear sample: two ``scatter4`` (slices z and z + 1)."""
    zero = sa.dtype.type(0.0)
    wz0 = z0 * gk
    wz1 = z1 * gk
    if z0 != zero:
        scatter4(sa, o, sx, sy, wz0 * b0, wz0 * b1, a0, a1, b0, b1)
    if z1 != zero:
        scatter4(sa, o + sz, sx, sy, wz1 * b0, wz1 * b1, a0, a1, b0, b1)


@jit()
def interior_grad_consts_3d(dx0, dx1, dy0, dy1, dz0, dz1, mx, my, mz, t):
    """Weight derivatives (-1, 1) and padding multipliers (1) of interior voxels, into the
    whole of these tile arrays: the backward writes them once per run of interior tiles."""
    one = t(1.0)
    for k in range(U(dx0.size)):
        dx0[k], dx1[k], dy0[k], dy1[k], dz0[k], dz1[k] = -one, one, -one, one, -one, one
        mx[k], my[k], mz[k] = one, one, one


@jit()
def tile_grads_3d(pa, ga, sa, taps, row0, h, w, j0, Wo, sx, sy, sz, bilinear, theta_grad,
                  need_input, exact):
    """``_numba_2d.tile_grads`` for trilinear samples: tile rows row0 .. row0 + h (row =
    k * Ho + i). ``taps`` holds the tile arrays (off, ax0, ax1, ay0, ay1, az0, az1, dx0, dx1,
    dy0, dy1, dz0, dz1, gx, gy, gz)."""
    off, ax0, ax1, ay0, ay1, az0, az1, dx0, dx1, dy0, dy1, dz0, dz1, gx, gy, gz = taps
    for r in range(h):
        base = U((row0 + r) * Wo + j0 - r * w)  # ga[base + k]: tile pixel k
        ks = r * w
        if not bilinear:
            nearest_row_grads(sa, ga, off, ax0, ks, w, base)
        elif not need_input:
            for k in range(U(ks), U(ks + w)):
                qx, qy, qz = tap_grads_3d(pa, off[k], sx, sy, sz, ga[base + k], ax0[k], ax1[k],
                                          ay0[k], ay1[k], az0[k], az1[k], dx0[k], dx1[k],
                                          dy0[k], dy1[k], dz0[k], dz1[k])
                gx[k] = qx
                gy[k] = qy
                gz[k] = qz
        else:
            for par in range(2):
                for k in range(U(ks + par), U(ks + w), U(2)):
                    o = off[k]
                    gk = ga[base + k]
                    a0, a1, b0, b1, z0, z1 = ax0[k], ax1[k], ay0[k], ay1[k], az0[k], az1[k]
                    if theta_grad:
                        qx, qy, qz = tap_grads_3d(pa, o, sx, sy, sz, gk, a0, a1, b0, b1, z0, z1,
                                                  dx0[k], dx1[k], dy0[k], dy1[k], dz0[k],
                                                  dz1[k])
                        gx[k] = qx
                        gy[k] = qy
                        gz[k] = qz
                    if exact:  # the upstream gradient holds NaN/Inf
                        scatter_any8(sa, o, sx, sy, sz, gk, a0, a1, b0, b1, z0, z1, dx0[k],
                                     dx1[k], dy0[k], dy1[k], dz0[k], dz1[k])
                    else:
                        scatter8(sa, o, sx, sy, sz, gk, a0, a1, b0, b1, z0, z1)


@jit()
def tile_grads_3d_channels(ib, gb, Gb, c0, c1, taps, row0, h, w, j0, Wo, sx, sy, sz,
                           need_input, exact):
    """``tile_grads_3d`` (trilinear, theta) for channels c0 .. c1 at once, pixel-outer (the
    sums over channels stay in registers); ib, gb, Gb: the (C, P) planes of one image."""
    off, ax0, ax1, ay0, ay1, az0, az1, dx0, dx1, dy0, dy1, dz0, dz1, gx, gy, gz = taps
    zero = ib.dtype.type(0.0)
    step = 2 if need_input else 1
    for r in range(h):
        base = U((row0 + r) * Wo + j0 - r * w)
        ks = r * w
        for par in range(step):
            for k in range(U(ks + par), U(ks + w), U(step)):
                o = off[k]
                a0, a1, b0, b1, z0, z1 = ax0[k], ax1[k], ay0[k], ay1[k], az0[k], az1[k]
                sgx = zero
                sgy = zero
                sgz = zero
                for c in range(U(c0), U(c1)):
                    gk = gb[c, base + k]
                    qx, qy, qz = tap_grads_3d(ib[c], o, sx, sy, sz, gk, a0, a1, b0, b1, z0, z1,
                                              dx0[k], dx1[k], dy0[k], dy1[k], dz0[k], dz1[k])
                    sgx += qx
                    sgy += qy
                    sgz += qz
                    if need_input and exact:  # the upstream gradient holds NaN/Inf
                        scatter_any8(Gb[c], o, sx, sy, sz, gk, a0, a1, b0, b1, z0, z1, dx0[k],
                                     dx1[k], dy0[k], dy1[k], dz0[k], dz1[k])
                    elif need_input:
                        scatter8(Gb[c], o, sx, sy, sz, gk, a0, a1, b0, b1, z0, z1)
                gx[k] = sgx
                gy[k] = sgy
                gz[k] = sgz


@jit(parallel=True)
def backward(inp, D, H, W, cf, gout, Do, Ho, Wo, mode, pad, align, TW, L, gin, priv, rows,
             tasks, phases, nslots, need_input, need_theta):
    """Gradients of ``forward``; tasks, phases, buffers as in ``_numba_2d.backward`` with
    rows r = k * Ho + i (tasks cover whole depth slices). ``rows[b, g, r]`` receives
    ``[sum gx j, sum gx, sum gy j, sum gy, sum gz j, sum gz]`` over the row's voxels
    (gx = dL/dx etc. for the raw pixel coordinates)."""
    t = inp.dtype.type
    zero = t(0.0)
    tw, th, ntx, _, wl = tiling(Wo, Ho, TW, L)
    ti, tj = tile_tables(tw, th, t)
    ti2, tj2 = tile_tables(wl, th, t)
    Lb = tw * th
    sx = np.uint32(1 if W > 1 else 0)
    sy = np.uint32(W if H > 1 else 0)
    sz = np.uint32(H * W if D > 1 else 0)
    bilinear = mode == BILINEAR
    theta_grad = need_theta and bilinear
    if need_input:  # zero grad_input here, in parallel (no torch / OpenMP call in between)
        flat = gin.reshape(gin.size)
        nz = 8 * nslots
        for q in prange(nz):
            flat[q * flat.size // nz:(q + 1) * flat.size // nz] = zero
    B = inp.shape[0]
    fin_in = np.empty(B, np.bool_)  # no NaN/Inf in image b: no refine_grads_3d
    fin_g = np.empty(B, np.bool_)  # no NaN/Inf in its upstream gradient: plain scatter8
    for b in prange(B):
        fin_in[b] = not theta_grad or image_finite(inp, b)
        fin_g[b] = not need_input or image_finite(gout, b)
    scr = np.empty((nslots, 21, Lb), t)
    offs = np.empty((nslots, Lb), np.uint32)
    for ph in range(phases.shape[0] - 1):
        for slot in prange(nslots):  # one slot per thread, tasks dealt round-robin
            xs, ys, zs, mx, my, mz = (scr[slot, 0], scr[slot, 1], scr[slot, 2], scr[slot, 3],
                                      scr[slot, 4], scr[slot, 5])
            ax0, ax1, ay0, ay1, az0, az1 = (scr[slot, 6], scr[slot, 7], scr[slot, 8],
                                            scr[slot, 9], scr[slot, 10], scr[slot, 11])
            dx0, dx1, dy0, dy1, dz0, dz1 = (scr[slot, 12], scr[slot, 13], scr[slot, 14],
                                            scr[slot, 15], scr[slot, 16], scr[slot, 17])
            gx, gy, gz = scr[slot, 18], scr[slot, 19], scr[slot, 20]
            off = offs[slot]
            consts = False  # dx0 .. mz hold the interior constants
            for task in range(phases[ph] + slot, phases[ph + 1], nslots):
                b, c0, c1, r0, r1, buf, g = (tasks[task, 0], tasks[task, 1], tasks[task, 2],
                                             tasks[task, 3], tasks[task, 4], tasks[task, 5],
                                             tasks[task, 6])
                for kk in range(r0 // Ho, r1 // Ho):
                    for i0 in range(0, Ho, th):
                        h = min(th, Ho - i0)
                        for tx in range(ntx):
                            j0 = tx * tw
                            w = tw if tx < ntx - 1 else wl
                            n = w * h
                            tt_i, tt_j = (ti, tj) if w == tw else (ti2, tj2)
                            inside = bilinear and tile_inside_3d(cf, b, kk, i0, h, j0, w, D,
                                                                 H, W)
                            if inside:
                                # the short path: no padding, no masks
                                if not consts:
                                    interior_grad_consts_3d(dx0, dx1, dy0, dy1, dz0, dz1, mx, my,
                                                            mz, t)
                                    consts = True
                                interior_taps_3d(cf, b, t(kk), t(i0), t(j0), tt_i, tt_j, n, W,
                                                 H * W, off, ax0, ax1, ay0, ay1, az0, az1, t)
                            else:
                                consts = False
                                coords_3d(cf, b, t(kk), t(i0), t(j0), tt_i, tt_j, n, xs, ys, zs)
                                pad_block_3d(xs, ys, zs, mx, my, mz, n, D, H, W, pad, align, t)
                                if bilinear:
                                    grad_taps_3d(xs, ys, zs, n, D, H, W, off, ax0, ax1, ay0, ay1,
                                                 az0, az1, dx0, dx1, dy0, dy1, dz0, dz1, t)
                                else:
                                    for k in range(U(n)):
                                        cx, inx = nearest_tap(xs[k], W, t)
                                        cy, iny = nearest_tap(ys[k], H, t)
                                        cz, inz = nearest_tap(zs[k], D, t)
                                        off[k] = np.uint32((cz * np.int32(H) + cy) * np.int32(W)
                                                           + cx)
                                        ax0[k] = t(1.0) if inx & iny & inz else zero
                            G = priv if buf >= 0 else gin
                            bg = buf if buf >= 0 else b
                            taps = (off, ax0, ax1, ay0, ay1, az0, az1, dx0, dx1, dy0, dy1, dz0,
                                    dz1, gx, gy, gz)
                            if theta_grad and c1 - c0 > 1:
                                tile_grads_3d_channels(inp[b], gout[b], G[bg], c0, c1, taps,
                                                       kk * Ho + i0, h, w, j0, Wo, sx, sy, sz,
                                                       need_input, not fin_g[b])
                            else:
                                for c in range(c0, c1):
                                    tile_grads_3d(inp[b, c], gout[b, c], G[bg, c], taps,
                                                  kk * Ho + i0, h, w, j0, Wo, sx, sy, sz,
                                                  bilinear, theta_grad, need_input,
                                                  not fin_g[b])
                            if theta_grad and not inside and not fin_in[b]:
                                refine_grads_3d(inp[b], gout[b], c0, c1, taps, kk * Ho + i0, h,
                                                w, j0, Wo, sx, sy, sz)
                            if theta_grad:
                                for r in range(h):  # per-row sums (float64)
                                    row = kk * Ho + i0 + r
                                    s = row_sums_3d(gx, gy, gz, mx, my, mz, r * w, w, j0)
                                    for q in range(6):
                                        rows[b, g, row, q] += s[q]
