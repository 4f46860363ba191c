"""Triton kernels of the fused 3-D affine warp: trilinear / nearest.

Layout: ``inp`` (B, C, D*H*W), ``out`` / ``gout`` (B, C, Do*Ho*Wo), contiguous, any floating
dtype. ``cf`` (B, 12), in the compute dtype (precision as in ``_triton_2d``), maps output
pixel indices (j, i, k) (along W, H, D) to input pixel coordinates:

    x = cf0 j + cf1 i + cf2 k + cf3,   y = cf4 j + ... + cf7,   z = cf8 j + ... + cf11

Same structure and conventions as ``_triton_2d`` (whose per-coordinate helpers it uses): one
program per ``BLOCK`` output pixels of one image, channels looped inside; the 8 taps are
unrolled at compile time (tap t sits at offset (t // 4, t // 2 % 2, t % 2) in (z, y, x)).
"""

from __future__ import annotations

import triton
import triton.language as tl

from stnkit.ops.kernels._triton_2d import _nearest, _pad, _snap, _taps


@triton.jit
def _coords3(cf, b, k, i, j, D, H, W, tolx, toly, tolz, MODE: tl.constexpr,
             PAD: tl.constexpr, ALIGN: tl.constexpr):
    """(x, y, z, mx, my, mz): padded coordinates and d padded / d raw."""
    base = cf + b * 12
    fj = j.to(cf.dtype.element_ty)
    fi = i.to(cf.dtype.element_ty)
    fk = k.to(cf.dtype.element_ty)
    x = tl.load(base + 0) * fj + tl.load(base + 1) * fi + tl.load(base + 2) * fk \
        + tl.load(base + 3)
    y = tl.load(base + 4) * fj + tl.load(base + 5) * fi + tl.load(base + 6) * fk \
        + tl.load(base + 7)
    z = tl.load(base + 8) * fj + tl.load(base + 9) * fi + tl.load(base + 10) * fk \
        + tl.load(base + 11)
    if MODE == 0:
        x = _snap(x, tolx)
        y = _snap(y, toly)
        z = _snap(z, tolz)
    x, mx = _pad(x, W, PAD, ALIGN)
    y, my = _pad(y, H, PAD, ALIGN)
    z, mz = _pad(z, D, PAD, ALIGN)
    return x, y, z, mx, my, mz


@triton.jit
def _pick(u, in0, in1, S: tl.constexpr):
    """Weight and inside-mask of tap floor + S (S = 0, 1) of one axis."""
    if S == 1:
        w = u
        m = in1
    else:
        w = 1.0 - u
        m = in0
    return w, m


@triton.jit
def forward_kernel(inp, cf, out, C, D, H, W, Do, Ho, Wo, tolx, toly, tolz,
                   MODE: tl.constexpr, PAD: tl.constexpr, ALIGN: tl.constexpr,
                   BLOCK: tl.constexpr):
    T = cf.dtype.element_ty  # the compute dtype
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    Pl = b * 0 + D * H * W  # int64 copies: c * P can pass 2**31
    Nl = b * 0 + Do * Ho * Wo
    HWo = Ho * Wo
    N = Do * HWo
    HW = H * W
    P = D * HW
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    live = offs < N
    k = offs // HWo
    i = (offs % HWo) // Wo
    j = offs % Wo
    x, y, z, _mx, _my, _mz = _coords3(cf, b, k, i, j, D, H, W, tolx, toly, tolz, MODE, PAD,
                                      ALIGN)
    in_base = inp + b * C * P
    out_base = out + b * C * N
    if MODE == 0:
        x0, u, inx0, inx1 = _taps(x, W)
        y0, v, iny0, iny1 = _taps(y, H)
        z0, s, inz0, inz1 = _taps(z, D)
        o = (z0 * H + y0) * W + x0
        for c in range(C):
            src = in_base + c * Pl
            val = tl.zeros([BLOCK], T)
            for t in tl.static_range(8):
                wz, mz = _pick(s, inz0, inz1, t // 4)
                wy, my = _pick(v, iny0, iny1, (t // 2) % 2)
                wx, mx = _pick(u, inx0, inx1, t % 2)
                val += wz * wy * wx * tl.load(src + o + (t // 4) * HW + ((t // 2) % 2) * W
                                              + (t % 2), mask=live & mz & my & mx,
                                              other=0.0).to(T)
            tl.store(out_base + c * Nl + offs, val.to(out.dtype.element_ty), mask=live)
    else:
        xi, inx = _nearest(x, W)
        yi, iny = _nearest(y, H)
        zi, inz = _nearest(z, D)
        o = (zi * H + yi) * W + xi
        mk = live & inx & iny & inz
        for c in range(C):  # a copy: no arithmetic
            val = tl.load(in_base + c * Pl + o, mask=mk, other=0.0)
            tl.store(out_base + c * Nl + offs, val.to(out.dtype.element_ty), mask=live)


@triton.jit
def backward_kernel(inp, cf, gout, gin, part, C, D, H, W, Do, Ho, Wo, tolx, toly, tolz, NBLK,
                    MODE: tl.constexpr, PAD: tl.constexpr, ALIGN: tl.constexpr,
                    SCATTER: tl.constexpr, THETA: tl.constexpr, BLOCK: tl.constexpr):
    """Gradients of ``forward_kernel``; ``part[b, pid, :]`` gets the 12 sums
    e_r (j, i, k, 1) for r = x, y, z (e = dL/d coordinate times d padded / d raw)."""
    T = cf.dtype.element_ty  # the compute dtype, also gin's
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    Pl = b * 0 + D * H * W  # int64 copies: c * P can pass 2**31
    Nl = b * 0 + Do * Ho * Wo
    HWo = Ho * Wo
    N = Do * HWo
    HW = H * W
    P = D * HW
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    live = offs < N
    k = offs // HWo
    i = (offs % HWo) // Wo
    j = offs % Wo
    x, y, z, mx, my, mz = _coords3(cf, b, k, i, j, D, H, W, tolx, toly, tolz, MODE, PAD,
                                   ALIGN)
    in_base = inp + b * C * P
    g_base = gout + b * C * N
    gi_base = gin + b * C * P
    if MODE == 0:
        x0, u, inx0, inx1 = _taps(x, W)
        y0, v, iny0, iny1 = _taps(y, H)
        z0, s, inz0, inz1 = _taps(z, D)
        o = (z0 * H + y0) * W + x0
        gx = tl.zeros([BLOCK], x.dtype)
        gy = tl.zeros([BLOCK], x.dtype)
        gz = tl.zeros([BLOCK], x.dtype)
        for c in range(C):
            g = tl.load(g_base + c * Nl + offs, mask=live, other=0.0).to(T)
            for t in tl.static_range(8):
                wz, tz = _pick(s, inz0, inz1, t // 4)
                wy, ty = _pick(v, iny0, iny1, (t // 2) % 2)
                wx, tx = _pick(u, inx0, inx1, t % 2)
                mk = live & tz & ty & tx
                off = o + (t // 4) * HW + ((t // 2) % 2) * W + (t % 2)
                if THETA:  # d w / d coordinate: -1 for the floor tap, +1 for the next
                    val = g * tl.load(in_base + c * Pl + off, mask=mk, other=0.0).to(T)
                    gx += val * (wz * wy) * (1.0 if t % 2 == 1 else -1.0)
                    gy += val * (wz * wx) * (1.0 if (t // 2) % 2 == 1 else -1.0)
                    gz += val * (wy * wx) * (1.0 if t // 4 == 1 else -1.0)
                if SCATTER:  # zero weights only for a NaN/Inf g (0 * Inf = NaN)
                    w = wz * wy * wx
                    nf = ~(tl.abs(g) < float("inf"))
                    tl.atomic_add(gi_base + c * Pl + off, g * w, mask=mk & ((w != 0.0) | nf),
                                  sem="relaxed")
        if THETA:
            fj = j.to(x.dtype)
            fi = i.to(x.dtype)
            fk = k.to(x.dtype)
            pb = part + (b * NBLK + pid) * 12
            ex = tl.where(live, gx * mx, 0.0)
            ey = tl.where(live, gy * my, 0.0)
            ez = tl.where(live, gz * mz, 0.0)
            tl.store(pb + 0, tl.sum(ex * fj, axis=0).to(tl.float64))
            tl.store(pb + 1, tl.sum(ex * fi, axis=0).to(tl.float64))
            tl.store(pb + 2, tl.sum(ex * fk, axis=0).to(tl.float64))
            tl.store(pb + 3, tl.sum(ex, axis=0).to(tl.float64))
            tl.store(pb + 4, tl.sum(ey * fj, axis=0).to(tl.float64))
            tl.store(pb + 5, tl.sum(ey * fi, axis=0).to(tl.float64))
            tl.store(pb + 6, tl.sum(ey * fk, axis=0).to(tl.float64))
            tl.store(pb + 7, tl.sum(ey, axis=0).to(tl.float64))
            tl.store(pb + 8, tl.sum(ez * fj, axis=0).to(tl.float64))
            tl.store(pb + 9, tl.sum(ez * fi, axis=0).to(tl.float64))
            tl.store(pb + 10, tl.sum(ez * fk, axis=0).to(tl.float64))
            tl.store(pb + 11, tl.sum(ez, axis=0).to(tl.float64))
    else:
        if SCATTER:
            xi, inx = _nearest(x, W)
            yi, iny = _nearest(y, H)
            zi, inz = _nearest(z, D)
            o = (zi * H + yi) * W + xi
            mk = live & inx & iny & inz
            for c in range(C):
                g = tl.load(g_base + c * Nl + offs, mask=live, other=0.0).to(T)
                tl.atomic_add(gi_base + c * Pl + o, g, mask=mk, sem="relaxed")


@triton.jit
def keys_kernel(cf, keys, D, H, W, Do, Ho, Wo, tolx, toly, tolz, SENTINEL,
                MODE: tl.constexpr, PAD: tl.constexpr, ALIGN: tl.constexpr,
                NT: tl.constexpr, BLOCK: tl.constexpr):
    """``_triton_2d.keys_kernel`` in 3-D: NT = 8 (trilinear) or 1 (nearest)."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    HWo = Ho * Wo
    N = Do * HWo
    HW = H * W
    P = D * HW
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    live = offs < N
    k = offs // HWo
    i = (offs % HWo) // Wo
    j = offs % Wo
    x, y, z, _mx, _my, _mz = _coords3(cf, b, k, i, j, D, H, W, tolx, toly, tolz, MODE, PAD,
                                      ALIGN)
    dst = keys + (b * N + offs) * NT
    if MODE == 0:
        x0, u, inx0, inx1 = _taps(x, W)
        y0, v, iny0, iny1 = _taps(y, H)
        z0, s, inz0, inz1 = _taps(z, D)
        o = b * P + ((z0 * H + y0) * W + x0)
        for t in tl.static_range(8):
            wz, tz = _pick(s, inz0, inz1, t // 4)
            wy, ty = _pick(v, iny0, iny1, (t // 2) % 2)
            wx, tx = _pick(u, inx0, inx1, t % 2)
            mk = tz & ty & tx  # zero weights too: a NaN/Inf gradient reaches them
            off = o + (t // 4) * HW + ((t // 2) % 2) * W + (t % 2)
            tl.store(dst + t, tl.where(mk, off, SENTINEL), mask=live)
    else:
        xi, inx = _nearest(x, W)
        yi, iny = _nearest(y, H)
        zi, inz = _nearest(z, D)
        o = b * P + ((zi * H + yi) * W + xi)
        tl.store(dst, tl.where(inx & iny & inz, o, SENTINEL), mask=live)


@triton.jit
def gather_kernel(cf, gout, gin, perm, bounds, C, D, H, W, Do, Ho, Wo, tolx, toly, tolz,
                  TOTAL, MODE: tl.constexpr, PAD: tl.constexpr, ALIGN: tl.constexpr,
                  NT: tl.constexpr, BLOCK: tl.constexpr):
    """``_triton_2d.gather_kernel`` in 3-D."""
    q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = q < TOTAL
    HWo = Ho * Wo
    N = Do * HWo
    P = D * H * W
    start = tl.load(bounds + q, mask=live, other=0)
    n = tl.load(bounds + q + 1, mask=live, other=0) - start
    longest = tl.max(n, axis=0)
    b = tl.where(live, q // P, 0)  # lanes past the end read image 0's coefficients
    for c in range(C):
        acc = tl.zeros([BLOCK], cf.dtype.element_ty)  # the compute dtype, gin's
        for m in range(longest):
            ok = m < n
            e = tl.load(perm + start + m, mask=ok, other=0)
            tap = (e % NT).to(tl.int32)
            on = tl.where(ok, e // NT - b * N, 0)
            k = (on // HWo).to(tl.int32)
            i = ((on % HWo) // Wo).to(tl.int32)
            j = (on % Wo).to(tl.int32)
            x, y, z, _mx, _my, _mz = _coords3(cf, b, k, i, j, D, H, W, tolx, toly, tolz,
                                              MODE, PAD, ALIGN)
            g = tl.load(gout + (b * C + c) * N + on, mask=ok, other=0.0).to(acc.dtype)
            if MODE == 0:
                u = x - tl.floor(x)
                v = y - tl.floor(y)
                s = z - tl.floor(z)
                wx = tl.where((tap % 2) == 1, u, 1.0 - u)
                wy = tl.where(((tap // 2) % 2) == 1, v, 1.0 - v)
                wz = tl.where(tap >= 4, s, 1.0 - s)
                acc += tl.where(ok, g * (wz * wy * wx), 0.0)
            else:
                acc += tl.where(ok, g, 0.0)
        tl.store(gin + (b * C + c) * P + (q - b * P), acc, mask=live)
