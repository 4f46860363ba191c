"""numba_cpu: the fused CPU kernels against the torch path (= F.grid_sample semantics).

Forward and both gradients for every transform x mode x padding x align_corners x dtype,
gradcheck, the sub-gradient at exact pixel centres, non-finite and huge coordinates, every
backward work plan, determinism, and the usual kernel properties. Thetas are drawn so that
no sample point lies within ``MARGIN`` pixels of an integer or half-integer (knots, nearest
ties, reflection folds) except in the dedicated sub-gradient test.
"""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stnkit.ops import warp
from stnkit.ops.kernels import numba_cpu
from stnkit.ops.kernels._geometry import axis_coefficients

from ._cases import (F32, F64, KINDS, MODES, PADS, TOL, behind_camera, check_against,
                     check_huge_finite_coordinates, check_infinite_output_gradient,
                     check_partial, close, gen, pixels, raw_theta, theta_away_from_knots,
                     transform_of)

# (input shape, output size) per kind
SHAPES = {"affine": ((2, 3, 9, 11), (7, 13)), "projective": ((2, 3, 9, 11), (7, 13)),
          "affine3d": ((2, 2, 5, 6, 7), (4, 6, 5))}


def _torch_path(x, theta, kind, size, mode, pad, align):
    """The reference: F.affine_grid + F.grid_sample (affine), the torch backend (projective,
    and size-1 axes, where F.affine_grid warns)."""
    if kind == "projective" or 1 in size:
        return warp(x, theta, transform=transform_of(kind), size=size, mode=mode,
                    padding_mode=pad, align_corners=align, backend="torch")
    grid = F.affine_grid(theta, (x.shape[0], x.shape[1], *size), align_corners=align)
    return F.grid_sample(x, grid, mode=mode, padding_mode=pad, align_corners=align)


def _numba(x, theta, kind, size, mode, pad, align, deterministic=False):
    return numba_cpu.warp(x, theta, transform=transform_of(kind), size=size, mode=mode,
                          padding_mode=pad, align_corners=align, deterministic=deterministic)


def _both(kind, mode, pad, align, dtype, *, shape=None, seed=0, need=(True, True)):
    """Forward + backward through numba and the torch path with the same inputs."""
    shape, size = (shape, None) if shape is not None else SHAPES[kind]
    size = size or shape[2:]
    x = torch.randn(shape, dtype=dtype, generator=gen(seed + 100))
    theta = theta_away_from_knots(kind, shape[0], shape[2:], size, align, dtype, seed)
    g = torch.randn(shape[0], shape[1], *size, dtype=dtype, generator=gen(seed + 200))
    res = []
    for fn in (_numba, _torch_path):
        xi = x.clone().requires_grad_(need[0])
        ti = theta.clone().requires_grad_(need[1])
        out = fn(xi, ti, kind, size, mode, pad, align)
        out.backward(g)
        res.append((out.detach(), xi.grad, ti.grad))
    return res


# ---------------------------------------------------------------------------------------------
# against the torch path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch(kind, mode, pad, align, dtype):
    res, ref = _both(kind, mode, pad, align, dtype)
    assert res[0].dtype == dtype
    check_against(res, ref, mode, TOL[dtype])


@pytest.mark.parametrize("kind", KINDS)
def test_output_size_and_batch(kind):
    """Output size different from the input's, a larger batch, and batch == per-sample."""
    nd = 3 if kind == "affine3d" else 2
    shape = (5, 2) + ((4, 9, 6) if nd == 3 else (12, 5))
    size = (3, 4, 7) if nd == 3 else (6, 17)
    x = torch.randn(shape, dtype=F64, generator=gen(1))
    theta = theta_away_from_knots(kind, 5, shape[2:], size, False, F64, seed=3)
    out = _numba(x, theta, kind, size, "bilinear", "zeros", False)
    close(out, _torch_path(x, theta, kind, size, "bilinear", "zeros", False), 1e-10, "batch")
    for b in range(5):
        one = _numba(x[b:b + 1], theta[b:b + 1], kind, size, "bilinear", "zeros", False)
        assert torch.equal(one, out[b:b + 1]), f"sample {b} differs from its batch result"


@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, pad):
    nd = 3 if kind == "affine3d" else 2
    shape = (1, 2) + ((3, 4, 3) if nd == 3 else (4, 5))
    size = (2, 3, 3) if nd == 3 else (3, 4)
    x = torch.randn(shape, dtype=F64, generator=gen(0), requires_grad=True)
    theta = theta_away_from_knots(kind, 1, shape[2:], size, False, F64, seed=5).requires_grad_()
    fn = lambda a, t: _numba(a, t, kind, size, "bilinear", pad, False)
    assert torch.autograd.gradcheck(fn, (x, theta), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("size", [(5, 5), (3, 9)])
@pytest.mark.parametrize("pad", PADS)
def test_subgradient_at_pixel_centres(pad, size):
    """Identity theta with align_corners puts every point exactly on a pixel centre (sizes
    chosen so the coordinates are exact): the right derivative at integer knots, 0 at the clip
    points, as stnkit.ops.sample and F.grid_sample choose."""
    align = True
    x = torch.randn(2, 2, *size, dtype=F64, generator=gen(2))
    theta = torch.eye(2, 3, dtype=F64).repeat(2, 1, 1)
    pix = pixels("affine", theta, size, size, align)
    assert torch.equal(pix, pix.round()), "the test needs exact pixel centres"
    g = torch.randn(x.shape, dtype=F64, generator=gen(3))
    grads = []
    for fn in (_numba, _torch_path):
        t = theta.clone().requires_grad_()
        out = fn(x, t, "affine", size, "bilinear", pad, align)
        assert torch.equal(out, x), "identity is not identity"
        out.backward(g)
        grads.append(t.grad)
    close(grads[0], grads[1], 1e-12, "grad theta at pixel centres")
    # right derivative: d out / d x_pix = x[..., j + 1] - x[..., j] (0 at the last column,
    # and 0 everywhere on the border for border / reflection clips)
    d = torch.zeros_like(x)
    d[..., :-1] = x[..., 1:] - x[..., :-1]
    if pad != "zeros":
        d[..., 0] = 0
    else:
        d[..., -1] = -x[..., -1]
    sx = (size[1] - 1) / 2 if align else size[1] / 2
    xs = torch.linspace(-1, 1, size[1], dtype=F64) if align else (
        (2 * torch.arange(size[1], dtype=F64) + 1) / size[1] - 1)
    expect = sx * (g * d * xs).sum(dim=(1, 2, 3))  # d L / d theta[0, 0]
    close(grads[0][:, 0, 0], expect, 1e-12, "right derivative")


@pytest.mark.parametrize("kind", KINDS)
def test_float32_gradients_small(kind):
    (_, gx, gt), (_, rgx, rgt) = _both(kind, "bilinear", "zeros", False, F32, seed=7)
    close(gt, rgt, 1e-4, "grad theta (float32)")
    close(gx, rgx, 1e-4, "grad input (float32)")


@pytest.mark.parametrize("need", [(True, False), (False, True)])
@pytest.mark.parametrize("kind", KINDS)
def test_partial_gradients(kind, need):
    """Only one of input / theta requires grad (an STN's first layer: only theta)."""
    (_, gx, gt), (_, rgx, rgt) = _both(kind, "bilinear", "reflection", True, F64, need=need)
    check_partial((gx, gt), (rgx, rgt), need)


def test_no_grad_and_inference():
    x = torch.randn(2, 3, 6, 7, dtype=F64)
    theta = theta_away_from_knots("affine", 2, (6, 7), (6, 7), False, F64)
    with torch.no_grad():
        a = _numba(x, theta, "affine", (6, 7), "bilinear", "zeros", False)
    with torch.inference_mode():
        b = _numba(x, theta, "affine", (6, 7), "bilinear", "zeros", False)
    assert torch.equal(a, b) and not a.requires_grad


# ---------------------------------------------------------------------------------------------
# non-finite and huge coordinates (contracts.md "Non-finite coordinates")
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("kind", KINDS)
def test_nan_theta_is_outside(kind, pad):
    shape, size = SHAPES[kind]
    x = torch.randn(shape, dtype=F64, requires_grad=True)
    theta = raw_theta(kind, shape[0], 0, 0.2)
    theta[0] = float("nan")
    theta[1, 0, 0] = float("inf")
    theta.requires_grad_()
    out = _numba(x, theta, kind, size, "bilinear", pad, False)
    assert (out == 0).all(), "NaN / Inf coordinates must sample 0"
    out.sum().backward()
    assert (x.grad == 0).all() and torch.isfinite(theta.grad).all()
    assert (theta.grad == 0).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pad", PADS)
def test_projective_behind_camera(pad, mode):
    """w <= 0 on part of the output: those points are outside in every padding mode."""
    x, h, size = behind_camera()
    res = []
    for fn in (_numba, _torch_path):
        xi, hi = x.clone().requires_grad_(), h.clone().requires_grad_()
        out = fn(xi, hi, "projective", size, mode, pad, False)
        out.backward(torch.ones_like(out))
        res.append((out.detach(), xi.grad, hi.grad))
    for a, b, what in zip(res[0], res[1], ("output", "grad input", "grad theta")):
        close(a, b, 1e-9, what)


def test_huge_finite_coordinates():
    check_huge_finite_coordinates(_numba)


@pytest.mark.parametrize("kind", KINDS)
def test_infinite_output_gradient_stays_in_its_footprint(kind):
    check_infinite_output_gradient(_numba, _torch_path, kind, *SHAPES[kind])


# ---------------------------------------------------------------------------------------------
# backward work plans, determinism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [
    # (kind, shape, pad, deterministic, threads, the plan it must exercise)
    ("affine", (1, 1, 40, 33), "zeros", True, 4, "bands"),
    ("affine", (1, 1, 40, 33), "border", False, 4, "private"),  # border clips: no bands
    ("affine", (1, 1, 40, 33), "border", True, 4, "images"),
    ("projective", (1, 4, 20, 21), "zeros", False, 2, "channels"),
    ("affine3d", (1, 1, 12, 7, 9), "zeros", True, 4, "bands"),  # bands of depth slices
    ("affine3d", (1, 2, 12, 7, 9), "reflection", False, 4, "private"),
    ("affine", (9, 2, 8, 9), "zeros", False, 2, "images"),
])
def test_backward_plans(case, monkeypatch):
    kind, shape, pad, det, threads, plan = case
    monkeypatch.setattr(numba_cpu, "_threads", lambda: threads)
    seen = []
    real_plan = numba_cpu._plan

    def spy(*args):
        tasks, phases, n_priv, groups = real_plan(*args)
        seen.append("private" if n_priv else "channels" if groups > 1 else
                    "bands" if len(phases) == 3 else "images")
        return tasks, phases, n_priv, groups

    monkeypatch.setattr(numba_cpu, "_plan", spy)
    size = shape[2:]
    x = torch.randn(shape, dtype=F64, generator=gen(6))
    theta = theta_away_from_knots(kind, shape[0], size, size, False, F64, seed=11, strength=0.15)
    g = torch.randn(shape, dtype=F64, generator=gen(7))
    res = []
    real_empty = torch.empty

    def nan_empty(*args, **kw):  # the kernels must write (or zero) every element themselves
        return real_empty(*args, **kw).fill_(float("nan"))

    for numba_path in (True, False):
        xi, ti = x.clone().requires_grad_(), theta.clone().requires_grad_()
        with monkeypatch.context() as m:
            if numba_path:
                m.setattr(numba_cpu.torch, "empty", nan_empty)
                out = _numba(xi, ti, kind, size, "bilinear", pad, False, deterministic=det)
            else:
                out = _torch_path(xi, ti, kind, size, "bilinear", pad, False)
            out.backward(g)
        res.append((xi.grad, ti.grad))
    assert seen == [plan], f"planned {seen}, expected {plan}"
    close(res[0][0], res[1][0], 1e-10, "grad input")
    close(res[0][1], res[1][1], 1e-10, "grad theta")


def test_plan_kinds():
    """The planner picks the intended cut (guards the cases above against planner drift)."""
    plan = numba_cpu._plan
    tasks, phases, n_priv, groups = plan(1, 1, 40, 1, True, True, 5, 4)
    assert len(phases) == 3 and n_priv == 0  # bands, two phases
    assert (np.diff(tasks[:, 3]) != 0).all()
    tasks, phases, n_priv, groups = plan(1, 1, 40, 1, True, False, None, 4)
    assert n_priv == 3 and len(tasks) == 4  # private buffers
    tasks, phases, n_priv, groups = plan(1, 1, 40, 1, True, True, None, 4)
    assert len(tasks) == 1 and n_priv == 0  # deterministic: no thread-count dependence
    tasks, phases, n_priv, groups = plan(1, 4, 40, 1, True, False, None, 2)
    assert groups == 4 and len(tasks) == 4  # one task per channel
    tasks, phases, n_priv, groups = plan(64, 1, 40, 1, True, True, 5, 2)
    assert len(phases) == 3  # deterministic: bands whatever the batch and thread count
    tasks, phases, n_priv, groups = plan(2, 3, 40, 1, False, True, None, 4)
    assert n_priv == 0 and len(phases) == 2 and len(tasks) == 16  # rows only (no scatter)


@pytest.mark.parametrize("seed", range(0, 600, 100))
def test_band_rows_keep_bands_apart(seed):
    """Bands two apart never touch the same input pixel (checked on the actual taps)."""
    H, W, Ho, Wo = 30, 26, 41, 37
    axes = [axis_coefficients(Wo, W, False), axis_coefficients(Ho, H, False)]
    for s in range(seed, seed + 100):  # a theta that leaves at least three bands
        theta = torch.eye(2, 3, dtype=F64)[None] + 0.6 * torch.randn(1, 2, 3, generator=gen(s),
                                                                      dtype=F64)
        cf = numba_cpu._coefficients(theta.numpy(), False, axes)
        band = numba_cpu._band_rows(cf, 2, (H, W), (Ho, Wo), 0, False)
        if band is not None and 3 * band <= Ho:
            break
    else:
        raise AssertionError("no theta with three bands")
    pix = pixels("affine", theta, (H, W), (Ho, Wo), False)[0].reshape(Ho, Wo, 2)
    x0, y0 = pix[..., 0].floor().long(), pix[..., 1].floor().long()
    touched = []
    for k in range(0, Ho, band):
        s = set()
        for dx, dy in itertools.product((0, 1), (0, 1)):
            xs, ys = x0[k:k + band] + dx, y0[k:k + band] + dy
            inside = (xs >= 0) & (xs < W) & (ys >= 0) & (ys < H)
            s |= set((ys[inside] * W + xs[inside]).tolist())
        touched.append(s)
    for k in range(len(touched) - 2):
        assert not touched[k] & touched[k + 2], f"bands {k} and {k + 2} overlap"


def _grads(kind, shape, pad, det):
    size = shape[2:]
    x = torch.randn(shape, dtype=F32, generator=gen(8), requires_grad=True)
    theta = raw_theta(kind, shape[0], 2, 0.25).float().requires_grad_()
    out = _numba(x, theta, kind, size, "bilinear", pad, False, deterministic=det)
    out.backward(torch.randn(out.shape, dtype=F32, generator=gen(9)))
    return x.grad, theta.grad


@pytest.mark.parametrize("kind,shape,pad", [("affine", (1, 1, 64, 48), "zeros"),
                                            ("affine", (1, 1, 64, 48), "border"),
                                            ("projective", (2, 1, 30, 40), "zeros"),
                                            ("affine3d", (1, 1, 10, 12, 14), "reflection")])
def test_deterministic_bits(kind, shape, pad):
    """deterministic=True: the same bits on every run and for every thread count."""
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 2, 1):
            torch.set_num_threads(n)
            runs.append(_grads(kind, shape, pad, True))
    finally:
        torch.set_num_threads(threads)
    for gx, gt in runs[1:]:
        assert torch.equal(gx, runs[0][0]) and torch.equal(gt, runs[0][1])
    # the default mode repeats its bits too at a fixed thread count
    a, b = _grads(kind, shape, pad, False), _grads(kind, shape, pad, False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bands_have_no_races():
    """Two-phase bands where band 0 samples the input's top-left corner and the bands after
    it lie above the image (zeros padding): every multi-threaded run must give the
    single-thread bits. (A write to a tap outside a pixel's own footprint, even of 0 --
    e.g. onto the clamped border row -- would race with band 0's writes there; whether a
    race shows is up to timing, so this test can only catch it sometimes.)"""
    theta = torch.tensor([[[0.05, 0.0, -0.926], [0.0, -0.3, -1.264]]], dtype=F32)
    pix = pixels("affine", theta, (64, 56), (64, 56), False)[0].reshape(64, 56, 2)
    assert 0 < pix[0, :, 1].min() < 1 and (pix[18:, :, 1] < -2).all()  # the geometry above
    axes = [axis_coefficients(56, 56, False), axis_coefficients(64, 64, False)]
    band = numba_cpu._band_rows(numba_cpu._coefficients(theta.double().numpy(), False, axes),
                                2, (64, 56), (64, 56), 0, False)
    assert band is not None and 64 > 4 * band
    x = torch.randn(1, 2, 64, 56, dtype=F32, generator=gen(15))
    g = torch.randn(1, 2, 64, 56, dtype=F32, generator=gen(16))

    def grads():
        xi, ti = x.clone().requires_grad_(), theta.clone().requires_grad_()
        _numba(xi, ti, "affine", (64, 56), "bilinear", "zeros", False, True).backward(g)
        return xi.grad, ti.grad

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ref = grads()
        torch.set_num_threads(2)
        for _ in range(50):
            gx, gt = grads()
            assert torch.equal(gx, ref[0]) and torch.equal(gt, ref[1])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["affine", "affine3d"])
def test_tiles(kind, monkeypatch):
    """Images wider than the tile width: 2-D tiles with a narrower last column."""
    monkeypatch.setattr(numba_cpu, "_tiles", lambda input, backward=False: (8, 24))
    for mode, pad in [("bilinear", "zeros"), ("bilinear", "border"), ("nearest", "reflection")]:
        shape = (2, 2, 4, 9, 21) if kind == "affine3d" else (2, 3, 11, 29)
        (out, gx, gt), (ref, rgx, rgt) = _both(kind, mode, pad, False, F64, shape=shape)
        close(out, ref, 1e-10, "output")
        close(gx, rgx, 1e-10, "grad input")
        close(gt, rgt, 1e-10, "grad theta")


@pytest.mark.parametrize("tiles", [None, (8, 24)])
@pytest.mark.parametrize("kind", KINDS)
def test_interior_short_path(kind, tiles, monkeypatch):
    """A zoom-in keeps every tap inside the image, so whole tiles take the kernels' short
    path (no padding, no masks); results must not change."""
    if tiles is not None:
        monkeypatch.setattr(numba_cpu, "_tiles", lambda input, backward=False: tiles)
    nd = 3 if kind == "affine3d" else 2
    shape = (2, 2) + ((5, 9, 21) if nd == 3 else (13, 29))
    theta = raw_theta(kind, 2, 21, 0.02)
    theta[:, :nd, :nd] *= 0.5  # sample the central half of the input
    x = torch.randn(shape, dtype=F64, generator=gen(13))
    g = torch.randn(shape, dtype=F64, generator=gen(14))
    for pad in PADS:
        res = []
        for fn in (_numba, _torch_path):
            xi, ti = x.clone().requires_grad_(), theta.clone().requires_grad_()
            out = fn(xi, ti, kind, shape[2:], "bilinear", pad, False)
            out.backward(g)
            res.append((out.detach(), xi.grad, ti.grad))
        for a, b, what in zip(res[0], res[1], ("output", "grad input", "grad theta")):
            close(a, b, 1e-10, f"{what} ({pad})")


# ---------------------------------------------------------------------------------------------
# kernel properties and the interface
# ---------------------------------------------------------------------------------------------


def test_properties():
    x = torch.randn(3, 2, 7, 8, dtype=F32, generator=gen(10))
    keep = x.clone()
    theta = theta_away_from_knots("affine", 3, (7, 8), (7, 8), False, F32)
    out = _numba(x, theta, "affine", (7, 8), "bilinear", "zeros", False)
    assert torch.equal(x, keep), "input mutated"
    assert out.dtype == F32 and out.device == x.device and out.is_contiguous()
    nc = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, other strides
    assert torch.equal(_numba(nc, theta, "affine", (7, 8), "bilinear", "zeros", False), out)
    empty = _numba(x[:0], theta[:0], "affine", (7, 8), "bilinear", "zeros", False)
    assert empty.shape == (0, 2, 7, 8)
    t = theta.clone().requires_grad_()
    e = _numba(x[:0].requires_grad_(), t[:0], "affine", (7, 8), "bilinear", "zeros", False)
    e.sum().backward()
    assert t.grad.shape == t.shape and (t.grad == 0).all()


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("in_size,out_size", [((1, 6), (3, 1)), ((5, 1), (1, 4)),
                                              ((1, 1), (2, 3))])
def test_size_one_axes(in_size, out_size, align):
    for pad in PADS:
        (out, gx, gt), (ref, rgx, rgt) = _both("affine", "bilinear", pad, align, F64,
                                               shape=(2, 2, *in_size), seed=1)
        close(out, ref, 1e-10, f"output {pad}")
        close(gx, rgx, 1e-10, f"grad input {pad}")
        close(gt, rgt, 1e-10, f"grad theta {pad}")
    x = torch.randn(2, 2, *in_size, dtype=F64)
    theta = raw_theta("affine", 2, 3, 0.3)
    out = _numba(x, theta, "affine", out_size, "bilinear", "border", align)
    close(out, _torch_path(x, theta, "affine", out_size, "bilinear", "border", align), 1e-10,
           "output size with ones")


def test_supports():
    x = torch.zeros(1, 1, 4, 4)
    t = torch.zeros(1, 2, 3)
    ok = {"transform": "affine", "mode": "bilinear", "padding_mode": "zeros"}
    assert numba_cpu.supports(x, t, **ok) is None
    assert numba_cpu.supports(x.double(), t.double(), **dict(ok, transform="projective")) is None
    assert numba_cpu.supports(x.half(), t, **ok) is None  # 16-bit images: in float32
    assert numba_cpu.supports(x.bfloat16(), t.double(), **ok) is None
    assert "floating" in numba_cpu.supports(x.int(), t, **ok)
    assert "tps" in numba_cpu.supports(x, t, **dict(ok, transform="tps"))
    assert "bicubic" in numba_cpu.supports(x, t, **dict(ok, mode="bicubic"))
    assert "5-D" in numba_cpu.supports(x[..., None], t, **dict(ok, transform="projective"))


def test_dispatch_through_ops_warp():
    x = torch.randn(2, 3, 8, 9, dtype=F64, generator=gen(12))
    theta = theta_away_from_knots("affine", 2, (8, 9), (5, 6), False, F64)
    a = warp(x, theta, size=(5, 6), backend="numba")
    b = warp(x, theta, size=(5, 6), backend="torch")
    close(a, b, 1e-10, "numba")
    assert torch.equal(a, _numba(x, theta, "affine", (5, 6), "bilinear", "zeros", False))
