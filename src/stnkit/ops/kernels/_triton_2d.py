"""Triton kernels of the fused 2-D warp: affine / projective / TPS, bilinear / nearest.

Layout: ``inp`` (B, C, H*W), ``out`` / ``gout`` (B, C, Ho*Wo), contiguous, any floating dtype.
One program handles ``BLOCK`` consecutive output pixels of one image (grid ``(cdiv(Ho*Wo,
BLOCK), B)``) and loops over the channels, so a pixel's coordinate and taps are computed once.

The kernels are three parts, as PyTorch's CPU grid sampler is:

- geometry, one function per transform family (``FAMILY``): output pixel (i, j) of image b
  -> raw input *pixel* coordinates (x, y), and the sums of dL/d theta-coefficients that its
  backward needs. ``cf`` (B, NCF) in the compute dtype holds each image's coefficients with
  both unnormalisations folded in (``triton_gpu._coefficients``):

    affine (NCF 6):      x = cf0 j + cf1 i + cf2,                 y = cf3 j + cf4 i + cf5
    projective (NCF 9):  x = (cf0 j + cf1 i + cf2) / w,           y = (cf3 j + cf4 i + cf5) / w,
                         w = cf6 j + cf7 i + cf8   (w <= 0: outside)
    tps (NCF 2 K + 6):   (x, y) = sum_k cf[k] U(|p - c_k|^2) + cf[K] + cf[K + 1] px
                                  + cf[K + 2] py,   U(d2) = d2 log d2, U(0) = 0
                         (cf[k] = (cf[2k], cf[2k + 1]): the spline weights in pixel units;
                         p = (px, py) = (ax j + bx, ay i + by) the normalised output point;
                         ``ctl`` (4 + 2 K) = (ax, bx, ay, by, c_0x, c_0y, c_1x, ...) holds the
                         output axes and the K control points, K a constexpr)

  A new family is one source function, one sums function and their two dispatch lines.
- coordinates: snapping (``_snap``) and padding (``_pad``), shared by every family.
- sampling per mode: bilinear taps (``_bilinear``) or the nearest pixel (``_nearest``).

Padding codes: 0 zeros, 1 border, 2 reflection; modes: 0 bilinear, 1 nearest. A coordinate
outside in every padding mode (NaN, +-Inf, w <= 0) becomes -2: all its taps lie outside.
Spatial indices are int32 (``supports`` requires H*W < 2**31); batch / channel offsets int64.

Precision: every pixel and upstream gradient is loaded in its own dtype (16-bit included) and
converted to cf's dtype at once, so coordinates, weights and sums are in the compute dtype;
the output is stored in the output's dtype; grad_input (``gin``) is a buffer in the compute
dtype (``triton_gpu`` casts it to the input's dtype).
"""

from __future__ import annotations

import triton
import triton.language as tl

BILINEAR, NEAREST = 0, 1
ZEROS, BORDER, REFLECTION = 0, 1, 2
# transform families (constexpr globals: the jit functions below compare FAMILY with them)
AFFINE = tl.constexpr(0)
PROJECTIVE = tl.constexpr(1)
TPS = tl.constexpr(2)


# ---------------------------------------------------------------------------------------------
# Geometry: output pixel (i, j) -> raw input pixel coordinates (x, y), one function per family;
# fi, fj are the indices in the compute dtype. The *_sums functions store one program's
# sums of dL/dcf into pb[0 : NCF] (float64), in cf's layout, from e = (ex, ey) = dL/d raw (x, y)
# (zero on dead lanes).
# ---------------------------------------------------------------------------------------------


@triton.jit
def _affine(cf, b, fi, fj):
    c = cf + b * 6
    x = tl.load(c + 0) * fj + tl.load(c + 1) * fi + tl.load(c + 2)
    y = tl.load(c + 3) * fj + tl.load(c + 4) * fi + tl.load(c + 5)
    return x, y


@triton.jit
def _affine_sums(pb, ex, ey, fi, fj):
    """d x / d cf[0:3] = (j, i, 1), d y / d cf[3:6] = (j, i, 1)."""
    tl.store(pb + 0, tl.sum(ex * fj, axis=0).to(tl.float64))
    tl.store(pb + 1, tl.sum(ex * fi, axis=0).to(tl.float64))
    tl.store(pb + 2, tl.sum(ex, axis=0).to(tl.float64))
    tl.store(pb + 3, tl.sum(ey * fj, axis=0).to(tl.float64))
    tl.store(pb + 4, tl.sum(ey * fi, axis=0).to(tl.float64))
    tl.store(pb + 5, tl.sum(ey, axis=0).to(tl.float64))


@triton.jit
def _projective_q(cf, b, fi, fj):
    """(q, ok): q = 1 / w where w > 0 (ok), else 0."""
    c = cf + b * 9
    w = tl.load(c + 6) * fj + tl.load(c + 7) * fi + tl.load(c + 8)
    ok = w > 0.0
    return tl.where(ok, 1.0 / tl.where(ok, w, 1.0), 0.0), ok


@triton.jit
def _projective(cf, b, fi, fj):
    """NaN where w <= 0 (outside in every padding mode)."""
    c = cf + b * 9
    x = tl.load(c + 0) * fj + tl.load(c + 1) * fi + tl.load(c + 2)
    y = tl.load(c + 3) * fj + tl.load(c + 4) * fi + tl.load(c + 5)
    q, ok = _projective_q(cf, b, fi, fj)
    nan = float("nan")
    return tl.where(ok, x * q, nan), tl.where(ok, y * q, nan)


@triton.jit
def _projective_sums(pb, cf, b, ex, ey, xr, yr, fi, fj):
    """With q = 1 / w and raw (x, y): q ex (j, i, 1), q ey (j, i, 1), s (j, i, 1) for the w row,
    s = -q (ex x + ey y)."""
    q, _ok = _projective_q(cf, b, fi, fj)
    ex = ex * q
    ey = ey * q
    _affine_sums(pb, ex, ey, fi, fj)
    # 0 * inf guarded: a point with zero gradient (w <= 0 included: x NaN) adds nothing
    s = -(tl.where(ex != 0.0, ex * xr, 0.0) + tl.where(ey != 0.0, ey * yr, 0.0))
    tl.store(pb + 6, tl.sum(s * fj, axis=0).to(tl.float64))
    tl.store(pb + 7, tl.sum(s * fi, axis=0).to(tl.float64))
    tl.store(pb + 8, tl.sum(s, axis=0).to(tl.float64))


@triton.jit
def _tps_point(ctl, fi, fj):
    """The normalised output point p = (ax j + bx, ay i + by)."""
    return tl.load(ctl + 0) * fj + tl.load(ctl + 1), tl.load(ctl + 2) * fi + tl.load(ctl + 3)


@triton.jit
def _tps_radial(ctl, px, py, k: tl.constexpr):
    """U(|p - c_k|^2) = d2 log d2, 0 at d2 = 0 (the limit)."""
    dx = px - tl.load(ctl + 4 + 2 * k)
    dy = py - tl.load(ctl + 5 + 2 * k)
    d2 = dx * dx + dy * dy
    return tl.where(d2 > 0.0, d2 * tl.log(tl.where(d2 > 0.0, d2, 1.0)), 0.0)


@triton.jit
def _tps(cf, ctl, b, fi, fj, K: tl.constexpr):
    """The spline (module docstring). K is a constexpr and the loop unrolled: K is fixed per
    model (16 in the paper), the 4 K scalar loads can be issued up front and the K
    logarithms are independent; the price is one compilation per K, growing with K."""
    w = cf + b * (2 * K + 6)
    px, py = _tps_point(ctl, fi, fj)
    x = tl.load(w + 2 * K) + tl.load(w + 2 * K + 2) * px + tl.load(w + 2 * K + 4) * py
    y = tl.load(w + 2 * K + 1) + tl.load(w + 2 * K + 3) * px + tl.load(w + 2 * K + 5) * py
    for k in tl.static_range(K):
        u = _tps_radial(ctl, px, py, k)
        x += tl.load(w + 2 * k) * u
        y += tl.load(w + 2 * k + 1) * u
    return x, y


@triton.jit
def _tps_sums(pb, ctl, ex, ey, fi, fj, K: tl.constexpr):
    """d (x, y) / d cf[k] = U_k(p) (k < K), then 1, px, py: no grid is materialised. U is
    evaluated again rather than kept from ``_tps`` (K more values a pixel in registers)."""
    px, py = _tps_point(ctl, fi, fj)
    for k in tl.static_range(K):
        u = _tps_radial(ctl, px, py, k)
        tl.store(pb + 2 * k, tl.sum(ex * u, axis=0).to(tl.float64))
        tl.store(pb + 2 * k + 1, tl.sum(ey * u, axis=0).to(tl.float64))
    tl.store(pb + 2 * K, tl.sum(ex, axis=0).to(tl.float64))
    tl.store(pb + 2 * K + 1, tl.sum(ey, axis=0).to(tl.float64))
    tl.store(pb + 2 * K + 2, tl.sum(ex * px, axis=0).to(tl.float64))
    tl.store(pb + 2 * K + 3, tl.sum(ey * px, axis=0).to(tl.float64))
    tl.store(pb + 2 * K + 4, tl.sum(ex * py, axis=0).to(tl.float64))
    tl.store(pb + 2 * K + 5, tl.sum(ey * py, axis=0).to(tl.float64))


@triton.jit
def _source(cf, ctl, b, i, j, FAMILY: tl.constexpr, K: tl.constexpr):
    """Raw input pixel coordinates (x, y) of output pixels (i, j) of image b."""
    fj = j.to(cf.dtype.element_ty)
    fi = i.to(cf.dtype.element_ty)
    if FAMILY == AFFINE:
        x, y = _affine(cf, b, fi, fj)
    elif FAMILY == PROJECTIVE:
        x, y = _projective(cf, b, fi, fj)
    else:
        x, y = _tps(cf, ctl, b, fi, fj, K)
    return x, y


@triton.jit
def _theta_sums(pb, cf, ctl, b, i, j, ex, ey, xr, yr, FAMILY: tl.constexpr,
                K: tl.constexpr):
    """This program's sums of dL/dcf into pb (float64, cf's layout)."""
    fj = j.to(cf.dtype.element_ty)
    fi = i.to(cf.dtype.element_ty)
    if FAMILY == AFFINE:
        _affine_sums(pb, ex, ey, fi, fj)
    elif FAMILY == PROJECTIVE:
        _projective_sums(pb, cf, b, ex, ey, xr, yr, fi, fj)
    else:
        _tps_sums(pb, ctl, ex, ey, fi, fj, K)


# ---------------------------------------------------------------------------------------------
# Coordinates: snapping and padding (every family)
# ---------------------------------------------------------------------------------------------
@triton.jit
def _snap(x, tol):
    """Pixel coordinates within ``tol`` (2 eps size) of an integer onto it, as
    ``stnkit.ops.sample`` does (identity is exact; knots get the stated sub-gradient)."""
    r = tl.floor(x + 0.5)
    return tl.where(tl.abs(x - r) <= tol, r, x)


@triton.jit
def _pad(x, size, PAD: tl.constexpr, ALIGN: tl.constexpr):
    """Padding of pixel coordinate x on an axis of ``size`` pixels: (x', m), x' finite in
    [-2, size + 1] ([0, size - 1] for border / reflection unless outside), m = d x' / d x."""
    zero = tl.zeros(x.shape, x.dtype)
    one = zero + 1.0
    fsize = zero + size  # the axis length as a tensor of x's dtype
    if PAD == 0:
        # beyond [-2, size + 1] every tap is outside: clamp there (keeps int casts safe)
        lo = x > -2.0  # False for NaN / -Inf
        hi = x < fsize + 1.0
        xs = tl.where(lo, tl.where(hi, x, fsize + 1.0), zero - 2.0)
        m = tl.where(lo & hi, one, zero)
    else:
        finite = tl.abs(x) < float("inf")  # NaN / +-Inf: outside in every padding mode
        xs = tl.where(finite, x, zero)
        m = one
        if PAD == 2:
            if ALIGN:
                low = zero
                span = fsize - 1.0
            else:
                low = zero - 0.5
                span = fsize
            span2 = tl.maximum(span + span, one)  # span 0 (one pixel, align_corners): below
            u = xs % span2 - low  # xs - low modulo the period, reduced first: not rounded
            extra = tl.abs(u) % span2  # fmod (huge coordinates: see triton_gpu's docstring)
            flip = extra > span
            extra = tl.where(flip, span + span - extra, extra)
            xs = tl.where(span > 0.0, extra + low, zero)
            m = tl.where(flip != (u < 0.0), -one, one)
        hi = fsize - 1.0
        inner = (xs > 0.0) & (xs < hi)
        xs = tl.minimum(tl.maximum(xs, zero), hi)
        m = tl.where(inner, m, zero)
        xs = tl.where(finite, xs, zero - 2.0)
        m = tl.where(finite, m, zero)
    return xs, m


@triton.jit
def _coords(cf, ctl, b, i, j, H, W, tolx, toly, FAMILY: tl.constexpr, K: tl.constexpr,
            MODE: tl.constexpr, PAD: tl.constexpr, ALIGN: tl.constexpr):
    """(x, y, mx, my, xr, yr): padded coordinates, their multipliers d padded / d raw, and the
    raw coordinates."""
    xr, yr = _source(cf, ctl, b, i, j, FAMILY, K)
    x = xr
    y = yr
    if MODE == 0:
        x = _snap(x, tolx)
        y = _snap(y, toly)
    x, mx = _pad(x, W, PAD, ALIGN)
    y, my = _pad(y, H, PAD, ALIGN)
    return x, y, mx, my, xr, yr


# ---------------------------------------------------------------------------------------------
# Sampling: bilinear taps, nearest pixel
# ---------------------------------------------------------------------------------------------


@triton.jit
def _taps(x, size):
    """Bilinear taps floor(x), floor(x) + 1 of a padded coordinate: (x0, u, in0, in1) with
    weights (1 - u, u) and d weight / d x = (-1, +1): the right derivative at knots."""
    f = tl.floor(x)
    u = x - f
    x0 = f.to(tl.int32)
    in0 = (x0 >= 0) & (x0 < size)
    in1 = (x0 >= -1) & (x0 < size - 1)
    return x0, u, in0, in1


@triton.jit
def _nearest(x, size):
    """(index, inside) of the nearest pixel, ties to even (like torch.round / PyTorch)."""
    f = tl.floor(x)
    d = x - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
    r = tl.where((d > 0.5) | ((d == 0.5) & odd), f + 1.0, f)
    ri = r.to(tl.int32)
    return ri, (ri >= 0) & (ri < size)


@triton.jit
def _bilinear(x, y, H, W):
    """The 2 x 2 taps of padded (x, y): flat offset o of tap 00 (taps 01, 10, 11 at o + 1,
    o + W, o + W + 1: row, column), their inside-masks, and the fractions (u, v): the weights
    are (1 - v)(1 - u), (1 - v) u, v (1 - u), v u."""
    x0, u, inx0, inx1 = _taps(x, W)
    y0, v, iny0, iny1 = _taps(y, H)
    return y0 * W + x0, iny0 & inx0, iny0 & inx1, iny1 & inx0, iny1 & inx1, u, v


# ---------------------------------------------------------------------------------------------
# Kernels: walk the pixels, call the parts above
# ---------------------------------------------------------------------------------------------


@triton.jit
def forward_kernel(inp, cf, ctl, out, C, H, W, Ho, Wo, tolx, toly, FAMILY: tl.constexpr,
                   K: tl.constexpr, MODE: tl.constexpr, PAD: tl.constexpr,
                   ALIGN: tl.constexpr, BLOCK: tl.constexpr):
    """out[b, c, i*Wo + j] = input sampled at the source of output pixel (i, j)."""
    T = cf.dtype.element_ty  # the compute dtype
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    Pl = b * 0 + H * W  # int64 copies: c * P can pass 2**31
    Nl = b * 0 + Ho * Wo
    N = Ho * Wo
    P = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    live = offs < N
    i = offs // Wo
    j = offs % Wo
    x, y, _mx, _my, _xr, _yr = _coords(cf, ctl, b, i, j, H, W, tolx, toly, FAMILY, K, MODE,
                                       PAD, ALIGN)
    in_base = inp + b * C * P
    out_base = out + b * C * N
    if MODE == 0:
        o, m00, m01, m10, m11, u, v = _bilinear(x, y, H, W)
        m00 = live & m00
        m01 = live & m01
        m10 = live & m10
        m11 = live & m11
        w00 = (1.0 - v) * (1.0 - u)
        w01 = (1.0 - v) * u
        w10 = v * (1.0 - u)
        w11 = v * u
        for c in range(C):
            src = in_base + c * Pl
            v00 = tl.load(src + o, mask=m00, other=0.0).to(T)
            v01 = tl.load(src + o + 1, mask=m01, other=0.0).to(T)
            v10 = tl.load(src + o + W, mask=m10, other=0.0).to(T)
            v11 = tl.load(src + o + W + 1, mask=m11, other=0.0).to(T)
            val = w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11
            tl.store(out_base + c * Nl + offs, val.to(out.dtype.element_ty), mask=live)
    else:
        xi, inx = _nearest(x, W)
        yi, iny = _nearest(y, H)
        o = yi * W + xi
        mk = live & inx & iny
        for c in range(C):  # a copy: no arithmetic
            val = tl.load(in_base + c * Pl + o, mask=mk, other=0.0)
            tl.store(out_base + c * Nl + offs, val.to(out.dtype.element_ty), mask=live)


@triton.jit
def backward_kernel(inp, cf, ctl, gout, gin, part, C, H, W, Ho, Wo, tolx, toly, NBLK,
                    FAMILY: tl.constexpr, K: tl.constexpr, MODE: tl.constexpr,
                    PAD: tl.constexpr, ALIGN: tl.constexpr, SCATTER: tl.constexpr,
                    THETA: tl.constexpr, NCF: tl.constexpr, BLOCK: tl.constexpr):
    """Gradients of ``forward_kernel``.

    SCATTER: grad_input by atomic adds (the fast, non-deterministic mode). THETA: this
    program's sums of dL/dcf into ``part[b, pid, :NCF]`` (float64, cf's layout), by the
    family's sums function from e = dL/d raw pixel coordinate = dL/d padded * d padded / d raw.
    Bilinear only (nearest: zero).
    dV/dx = sum_taps v * wy * d wx / dx with d wx / dx = (-1, +1) (right derivative at knots).
    """
    T = cf.dtype.element_ty  # the compute dtype, also gin's
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    Pl = b * 0 + H * W  # int64 copies: c * P can pass 2**31
    Nl = b * 0 + Ho * Wo
    N = Ho * Wo
    P = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    live = offs < N
    i = offs // Wo
    j = offs % Wo
    x, y, mx, my, xr, yr = _coords(cf, ctl, b, i, j, H, W, tolx, toly, FAMILY, K, MODE, PAD,
                                   ALIGN)
    in_base = inp + b * C * P
    g_base = gout + b * C * N
    gi_base = gin + b * C * P
    if MODE == 0:
        o, m00, m01, m10, m11, u, v = _bilinear(x, y, H, W)
        m00 = live & m00
        m01 = live & m01
        m10 = live & m10
        m11 = live & m11
        w00 = (1.0 - v) * (1.0 - u)
        w01 = (1.0 - v) * u
        w10 = v * (1.0 - u)
        w11 = v * u
        gx = tl.zeros(x.shape, x.dtype)
        gy = tl.zeros(x.shape, x.dtype)
        for c in range(C):
            g = tl.load(g_base + c * Nl + offs, mask=live, other=0.0).to(T)
            if THETA:
                src = in_base + c * Pl
                v00 = tl.load(src + o, mask=m00, other=0.0).to(T)
                v01 = tl.load(src + o + 1, mask=m01, other=0.0).to(T)
                v10 = tl.load(src + o + W, mask=m10, other=0.0).to(T)
                v11 = tl.load(src + o + W + 1, mask=m11, other=0.0).to(T)
                gx += g * ((1.0 - v) * (v01 - v00) + v * (v11 - v10))
                gy += g * ((1.0 - u) * (v10 - v00) + u * (v11 - v01))
            if SCATTER:  # in-image taps; zero weights only for a NaN/Inf g (0 * Inf = NaN)
                nf = ~(tl.abs(g) < float("inf"))
                dst = gi_base + c * Pl + o
                tl.atomic_add(dst, g * w00, mask=m00 & ((w00 != 0.0) | nf), sem="relaxed")
                tl.atomic_add(dst + 1, g * w01, mask=m01 & ((w01 != 0.0) | nf), sem="relaxed")
                tl.atomic_add(dst + W, g * w10, mask=m10 & ((w10 != 0.0) | nf), sem="relaxed")
                tl.atomic_add(dst + W + 1, g * w11, mask=m11 & ((w11 != 0.0) | nf),
                              sem="relaxed")
        if THETA:
            ex = tl.where(live, gx * mx, 0.0)
            ey = tl.where(live, gy * my, 0.0)
            _theta_sums(part + (b * NBLK + pid) * NCF, cf, ctl, b, i, j, ex, ey, xr, yr,
                        FAMILY, K)
    else:
        if SCATTER:
            xi, inx = _nearest(x, W)
            yi, iny = _nearest(y, H)
            o = yi * W + xi
            mk = live & inx & iny
            for c in range(C):
                g = tl.load(g_base + c * Nl + offs, mask=live, other=0.0).to(T)
                tl.atomic_add(gi_base + c * Pl + o, g, mask=mk, sem="relaxed")


@triton.jit
def keys_kernel(cf, ctl, keys, H, W, Ho, Wo, tolx, toly, SENTINEL, FAMILY: tl.constexpr,
                K: tl.constexpr, MODE: tl.constexpr, PAD: tl.constexpr, ALIGN: tl.constexpr,
                NT: tl.constexpr, BLOCK: tl.constexpr):
    """Deterministic backward, step 1: for tap t of output pixel n of image b, the flat
    input pixel it writes, ``keys[(b N + n) NT + t] = b H W + tap`` (``SENTINEL`` for taps
    outside the image; a tap of weight 0 inside is listed, so that a NaN/Inf upstream
    gradient reaches it as 0 * Inf = NaN, the rule of ``stnkit.ops.sample``). NT = 4
    (bilinear) or 1 (nearest)."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    N = Ho * Wo
    P = H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    live = offs < N
    i = offs // Wo
    j = offs % Wo
    x, y, _mx, _my, _xr, _yr = _coords(cf, ctl, b, i, j, H, W, tolx, toly, FAMILY, K, MODE,
                                       PAD, ALIGN)
    dst = keys + (b * N + offs) * NT
    if MODE == 0:
        o, m00, m01, m10, m11, _u, _v = _bilinear(x, y, H, W)
        o = b * P + o
        tl.store(dst + 0, tl.where(m00, o, SENTINEL), mask=live)
        tl.store(dst + 1, tl.where(m01, o + 1, SENTINEL), mask=live)
        tl.store(dst + 2, tl.where(m10, o + W, SENTINEL), mask=live)
        tl.store(dst + 3, tl.where(m11, o + W + 1, SENTINEL), mask=live)
    else:
        xi, inx = _nearest(x, W)
        yi, iny = _nearest(y, H)
        o = b * P + (yi * W + xi)
        tl.store(dst, tl.where(inx & iny, o, SENTINEL), mask=live)


@triton.jit
def gather_kernel(cf, ctl, gout, gin, perm, bounds, C, H, W, Ho, Wo, tolx, toly, TOTAL,
                  FAMILY: tl.constexpr, K: tl.constexpr, MODE: tl.constexpr,
                  PAD: tl.constexpr, ALIGN: tl.constexpr, NT: tl.constexpr,
                  BLOCK: tl.constexpr):
    """Deterministic backward, step 2: input pixel q = b H W + p sums, in ascending order of
    (output pixel, tap), the contributions listed in ``perm[bounds[q]:bounds[q + 1]]`` (the
    stable sort of ``keys``), recomputing each tap's weight. No atomics: same bits every run.
    (The source point is recomputed per channel too: for TPS that is K logarithms a tap and
    channel, which a 1-channel image, the paper's MNIST, does not notice.)"""
    q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = q < TOTAL
    N = Ho * Wo
    P = H * W
    start = tl.load(bounds + q, mask=live, other=0)
    n = tl.load(bounds + q + 1, mask=live, other=0) - start
    longest = tl.max(n, axis=0)
    b = tl.where(live, q // P, 0)  # lanes past the end read image 0's coefficients
    for c in range(C):
        acc = tl.zeros([BLOCK], cf.dtype.element_ty)  # the compute dtype, gin's
        for k in range(longest):
            ok = k < n
            e = tl.load(perm + start + k, mask=ok, other=0)
            bn = e // NT  # b N + output pixel
            tap = (e % NT).to(tl.int32)
            on = tl.where(ok, bn - b * N, 0)
            i = (on // Wo).to(tl.int32)
            j = (on % Wo).to(tl.int32)
            x, y, _mx, _my, _xr, _yr = _coords(cf, ctl, b, i, j, H, W, tolx, toly, FAMILY, K,
                                               MODE, PAD, ALIGN)
            g = tl.load(gout + (b * C + c) * N + on, mask=ok, other=0.0).to(acc.dtype)
            if MODE == 0:
                u = x - tl.floor(x)
                v = y - tl.floor(y)
                wx = tl.where((tap % 2) == 1, u, 1.0 - u)
                wy = tl.where(tap >= 2, v, 1.0 - v)
                acc += tl.where(ok, g * (wy * wx), 0.0)
            else:
                acc += tl.where(ok, g, 0.0)
        tl.store(gin + (b * C + c) * P + (q - b * P), acc, mask=live)
