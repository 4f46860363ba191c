"""cpp_cpu: the fused C++ CPU kernels against the torch path (= F.grid_sample semantics).

Forward and both gradients for every transform (affine, projective, TPS; affine on volumes)
x mode x padding x align_corners, float64 (1e-10) and float32; 16-bit images; gradcheck;
NaN / Inf / outside thetas; long rows (tile segments) and many rows (row groups); the work
plans and their determinism; the shared OpenMP runtime. Thetas keep every sample point
``MARGIN`` pixels away from knots and ties where the dtype's rounding could move it across
one.
"""

import itertools
import os
import subprocess
import sys

import pytest
import torch

from stnkit.ops import grids
from stnkit.ops.kernels import _library, cpp_cpu

from ._cases import (F32, F64, MARGIN, MODES, PADS, TOL, check_against,
                     check_huge_finite_coordinates, check_partial, close, gen, raw_theta,
                     theta_away_from_knots)

pytestmark = pytest.mark.skipif(cpp_cpu._LIB is None, reason=str(cpp_cpu._WHY))

TRANSFORMS = ["affine", "projective", "tps"]
K = 16  # TPS control points (a 4 x 4 lattice)


def _tps_src(batch, seed, strength=0.12, dtype=F64):
    """Source points: the default lattice, jittered."""
    return (grids.tps_lattice(K, dtype=F64)[None]
            + strength * torch.randn(batch, K, 2, dtype=F64, generator=gen(seed))).to(dtype)


def _pixels(transform, theta, in_size, size, align):
    """(B, P, 2) input pixel coordinates of the torch path's grid, float64."""
    theta = theta.double()
    if transform == "tps":
        basis = grids.tps_basis(size, theta.shape[1] - 3, align_corners=align, dtype=F64)
        grid = basis @ theta
    else:
        fn = grids.projective_grid if transform == "projective" else grids.affine_grid
        grid = fn(theta, size, align_corners=align).reshape(theta.shape[0], -1, 2)
    n = torch.tensor([in_size[1], in_size[0]], dtype=F64)
    return (grid + 1) / 2 * (n - 1) if align else ((grid + 1) * n - 1) / 2


def theta_for(transform, batch, in_size, size, align, dtype, seed=0):
    """A kernel theta (TPS: spline weights) whose points stay away from knots and ties."""
    if transform != "tps":
        return theta_away_from_knots(transform, batch, in_size, size, align, dtype, seed)
    for s in range(seed, seed + 500):
        w = grids.tps_weights(_tps_src(batch, s))
        pix = _pixels("tps", w, in_size, size, align)
        dist = ((2 * pix) - (2 * pix).round()).abs().min().item() / 2
        if dist > MARGIN[dtype]:
            return w.to(dtype)
    raise AssertionError("no suitable theta found")


def _cpp(x, theta, transform, size, mode, pad, align, deterministic=False):
    return cpp_cpu.warp(x, theta, transform=transform, size=size, mode=mode, padding_mode=pad,
                        align_corners=align, deterministic=deterministic)


def _torch(x, theta, transform, size, mode, pad, align, deterministic=False):
    return _library.torch_path(x, theta, size, transform, mode, pad, align)


def _grads(fn, x, theta, g, *args, need=(True, True)):
    xi = x.clone().requires_grad_(need[0])
    ti = theta.clone().requires_grad_(need[1])
    out = fn(xi, ti, *args)
    out.backward(g)
    return out.detach(), xi.grad, ti.grad


def _both(transform, mode, pad, align, dtype, *, shape=(2, 3, 9, 11), size=(7, 13), seed=0,
          need=(True, True), theta=None):
    x = torch.randn(shape, dtype=dtype, generator=gen(seed + 100))
    if theta is None:
        theta = theta_for(transform, shape[0], shape[2:], size, align, dtype, seed)
    g = torch.randn(shape[0], shape[1], *size, dtype=dtype, generator=gen(seed + 200))
    return [_grads(fn, x, theta, g, transform, size, mode, pad, align, need=need)
            for fn in (_cpp, _torch)]


# ---------------------------------------------------------------------------------------------
# against the torch path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, channels", [(F64, 1), (F64, 5), (F32, 3)])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_matches_torch(transform, mode, pad, align, dtype, channels):
    res, ref = _both(transform, mode, pad, align, dtype, shape=(2, channels, 9, 11))
    assert res[0].dtype == dtype and res[1].dtype == dtype and res[2].dtype == dtype
    check_against(res, ref, mode, TOL[dtype])


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_mixed_theta_dtypes(transform):
    """float32 image, float64 theta: computed in float64, gradients in each one's dtype."""
    x = torch.randn(2, 2, 8, 9, dtype=F32, generator=gen(1))
    theta = theta_for(transform, 2, (8, 9), (6, 7), False, F64, 1)
    g = torch.randn(2, 2, 6, 7, dtype=F32, generator=gen(2))
    res, ref = [_grads(fn, x, theta, g, transform, (6, 7), "bilinear", "border", False)
                for fn in (_cpp, _torch)]
    assert (res[0].dtype, res[1].dtype, res[2].dtype) == (F32, F32, F64)
    check_against(res, ref, "bilinear", 1e-6)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_long_and_many_rows(transform):
    """Rows longer than a tile (segments) and more tile rows than row groups. Too many points
    to keep them all off the knots; float64 rounding moves a point across one only within
    ~1e-15 pixel of it, never met by these seeded thetas."""
    shape, size = (2, 2, 13, 17), (70, 1100)
    theta = (grids.tps_weights(_tps_src(2, 0)) if transform == "tps" else
             raw_theta(transform, 2, 0, 0.25))
    res, ref = _both(transform, "bilinear", "reflection", False, F64, shape=shape, size=size,
                     theta=theta)
    check_against(res, ref, "bilinear", 1e-10)


def _zoom_theta(transform, batch, zoom, shift):
    """Points at zoom x the output's extent around (shift, shift): zoom < 1 keeps every tap of
    every tile inside the image (the kernels' interior path); a shift moves some tiles out."""
    a = torch.tensor([[zoom, 0.03, shift], [-0.02, zoom, shift]], dtype=F64).repeat(batch, 1, 1)
    a = a + 0.01 * torch.randn(batch, 2, 3, dtype=F64, generator=gen(batch))
    if transform == "affine":
        return a
    if transform == "projective":
        row = torch.tensor([0.02, -0.03, 1.0], dtype=F64).repeat(batch, 1, 1)
        return torch.cat([a, row], dim=1)
    lattice = grids.tps_lattice(K, dtype=F64)
    src = torch.cat([lattice, torch.ones(K, 1, dtype=F64)], dim=1) @ a.transpose(1, 2)
    src = src + 0.01 * torch.randn(batch, K, 2, dtype=F64, generator=gen(batch + 1))
    return grids.tps_weights(src)


@pytest.mark.parametrize("zoom, shift", [(0.6, 0.0), (0.8, 0.35), (1.3, 0.0)])
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_interior_and_edge_tiles(transform, zoom, shift):
    """Tiles of several rows: all inside the image (0.6), some inside and some across the
    border (0.8 shifted), most across it (1.3): the interior path and the masked one agree with
    the torch path, forward and both gradients, and in the backward's per-point branch."""
    shape, size = (3, 2, 50, 45), (64, 60)  # 17 output rows per tile: 4 tiles per image
    theta = _zoom_theta(transform, shape[0], zoom, shift)
    for pad in PADS:
        res, ref = _both(transform, "bilinear", pad, False, F64, shape=shape, size=size,
                         theta=theta)
        check_against(res, ref, "bilinear", 1e-10)


def _run_with(variant, *args):
    """Forward and backward of cpp_cpu's kernels through the build ``variant``."""
    lib, why = cpp_cpu._load(cpp_cpu.LIBRARIES[variant])
    assert lib is not None, why
    loaded = cpp_cpu._LIB
    try:
        cpp_cpu._LIB = lib
        return _grads(_cpp, *args)
    finally:
        cpp_cpu._LIB = loaded


@pytest.mark.skipif(not all(p.exists() for p in cpp_cpu.LIBRARIES.values()),
                    reason="one build only (not x86-64)")
@pytest.mark.parametrize("dtype", [F32, F64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_builds_give_the_same_bits(transform, dtype):
    """The AVX2 build and the baseline one (setup.py) compute the same bits: no fused
    multiply-adds, the same operations in the same order, only wider."""
    shape, size = (3, 2, 50, 45), (64, 60)
    x = torch.randn(shape, dtype=F64, generator=gen(7)).to(dtype)
    g = torch.randn(shape[0], shape[1], *size, dtype=F64, generator=gen(8)).to(dtype)
    for zoom, shift in [(0.6, 0.0), (0.8, 0.35)]:
        theta = _zoom_theta(transform, shape[0], zoom, shift).to(
            F64 if dtype == F64 else F32)
        for mode, pad in [("bilinear", "zeros"), ("bilinear", "reflection"),
                          ("nearest", "border")]:
            args = (x, theta, g, transform, size, mode, pad, False)
            for a, b in zip(_run_with("avx2", *args), _run_with("baseline", *args)):
                assert torch.equal(a, b), (zoom, mode, pad)


@pytest.mark.skipif(not all(p.exists() for p in cpp_cpu.LIBRARIES.values()),
                    reason="one build only (not x86-64)")
@pytest.mark.parametrize("in_size", [(1, 9), (9, 1), (2, 2), (2, 40), (40, 2), (7, 8)])
def test_builds_give_the_same_bits_on_thin_images(in_size):
    """Images one or two pixels wide or high, where no point or only some have all their
    taps inside (the AVX2 float32 gather takes 8 points at a time only where all are inside),
    and rows of 33 points (blocks of 8 plus a tail)."""
    x = torch.randn(2, 3, *in_size, generator=gen(9))
    g = torch.randn(2, 3, 5, 33, generator=gen(10))
    for zoom in (0.5, 1.3):
        theta = torch.tensor([[zoom, 0.1, 0.05], [-0.1, zoom, 0.0]]).expand(2, 2, 3)
        args = (x, theta.contiguous(), g, "affine", (5, 33), "bilinear", "zeros", False)
        for a, b in zip(_run_with("avx2", *args), _run_with("baseline", *args)):
            assert torch.equal(a, b), (in_size, zoom)


@pytest.mark.skipif(not all(p.exists() for p in cpp_cpu.LIBRARIES.values()),
                    reason="one build only (not x86-64)")
@pytest.mark.parametrize("dtype", [F32, torch.bfloat16, torch.float16])
def test_builds_give_the_same_bits_on_large_planes(dtype):
    """Planes of 16384 pixels or more, whose taps the AVX2 build prefetches (a separate
    instance of its gather), rotated so that blocks of 8 points cross the border, and shifted
    so that whole blocks lie beyond it (no tap inside: the AVX2 build stores zeros and skips
    their scatter), with a NaN and an Inf in dL/dV there, which reach grad theta; 16-bit
    images take the same blocks (their taps widened to float32)."""
    x = torch.randn(2, 3, 130, 131, generator=gen(13)).to(dtype)
    g = torch.randn(2, 3, 120, 140, generator=gen(14)).to(dtype)
    g[0, 1, 5, 120], g[1, 2, 7, 100] = float("nan"), float("inf")
    angle = torch.tensor([0.3, -0.2])
    theta = torch.stack([torch.stack([angle.cos(), -angle.sin(), torch.full_like(angle, 0.1)], 1),
                         torch.stack([angle.sin(), angle.cos(), torch.zeros_like(angle)], 1)], 1)
    for shift in (0.0, 1.2):
        t = theta * 0.95 + torch.tensor([[0.0, 0.0, shift], [0.0, 0.0, -shift]])
        args = (x, t, g, "affine", (120, 140), "bilinear", "zeros", False)
        for a, b in zip(_run_with("avx2", *args), _run_with("baseline", *args)):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        if shift:  # the NaN and the Inf lie outside the image and still reach grad theta
            assert _run_with("avx2", *args)[2].isnan().all()


@pytest.mark.parametrize("dtype, step", [(torch.bfloat16, 2.0**-7), (torch.float16, 2.0**-10)])
def test_16bit_outputs_round_ties_to_even(dtype, step):
    """Columns alternate 1 + step and 1 + 2 step (consecutive 16-bit numbers, the first with an
    odd last bit); shifted by half a pixel, every output is their mean, a tie, which rounds to
    even: up, to 1 + 2 step (both builds, the block path included)."""
    x = torch.full((1, 2, 6, 40), 1 + step, dtype=dtype)
    x[..., 1::2] = 1 + 2 * step
    theta = torch.tensor([[[1.0, 0.0, 1 / 40], [0.0, 1.0, 0.0]]])  # half a pixel in x
    g = torch.ones(1, 2, 6, 40, dtype=dtype)
    builds = ["avx2", "baseline"] if all(p.exists() for p in cpp_cpu.LIBRARIES.values()) \
        else [cpp_cpu.VARIANT]
    for build in builds:
        out = _run_with(build, x, theta, g, "affine", (6, 40), "bilinear", "zeros", False)[0]
        assert torch.equal(out[..., :-1], torch.full_like(out[..., :-1], 1 + 2 * step)), build


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_auto_runs_cpp_for_2d(transform):
    """ops.warp's "auto" takes the C++ kernels for 2-D images on the CPU (same bits)."""
    from stnkit.ops import warp

    x = torch.randn(2, 3, 8, 9, dtype=F32, generator=gen(12))
    if transform == "tps":  # ops.warp takes the source points, the kernels the weights
        theta = _tps_src(2, 0, dtype=F32)
        kernel_theta = grids.tps_weights(theta)
    else:
        theta = kernel_theta = theta_for(transform, 2, (8, 9), (5, 6), False, F32)
    a = warp(x, theta, size=(5, 6), transform=transform)
    assert torch.equal(a, _cpp(x, kernel_theta, transform, (5, 6), "bilinear", "zeros", False))


def test_variant_follows_torchs_cpu_capability():
    """ATEN_CPU_CAPABILITY=default (torch's own kernels without AVX) selects the baseline."""
    code = "from stnkit.ops.kernels import cpp_cpu; print(cpp_cpu.VARIANT)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "ATEN_CPU_CAPABILITY": "default"},
                         check=True)
    assert out.stdout.strip() == "baseline"


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_batch_equals_per_sample_and_empty(transform):
    x = torch.randn(5, 2, 12, 5, dtype=F64, generator=gen(1))
    theta = theta_for(transform, 5, (12, 5), (6, 17), False, F64, 3)
    out = _cpp(x, theta, transform, (6, 17), "bilinear", "zeros", False)
    for b in range(5):
        one = _cpp(x[b:b + 1], theta[b:b + 1], transform, (6, 17), "bilinear", "zeros", False)
        assert torch.equal(one, out[b:b + 1]), f"sample {b} differs from its batch result"
    res = _grads(_cpp, x[:0], theta[:0], out[:0], transform, (6, 17), "bilinear", "zeros",
                 False)
    assert res[0].shape == (0, 2, 6, 17) and res[1].shape == x[:0].shape
    assert res[2].shape == theta[:0].shape


@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_gradcheck(transform, pad):
    x = torch.randn(1, 2, 4, 5, dtype=F64, generator=gen(0), requires_grad=True)
    theta = theta_for(transform, 1, (4, 5), (3, 4), False, F64, 5).requires_grad_()
    fn = lambda a, t: _cpp(a, t, transform, (3, 4), "bilinear", pad, False)
    assert torch.autograd.gradcheck(fn, (x, theta), eps=1e-6, atol=1e-7)


def test_tps_against_control_points():
    """warp of TPS source points: weights (grids.tps_weights) + the C++ kernel, against the
    torch backend, forward and the gradient to the points."""
    from stnkit.ops import warp

    x = torch.randn(3, 2, 10, 12, dtype=F64, generator=gen(3))
    g = torch.randn(3, 2, 9, 8, dtype=F64, generator=gen(4))
    src = _tps_src(3, 5)
    res = []
    for backend in ("cpp", "torch"):
        s = src.clone().requires_grad_()
        if backend == "cpp":
            out = _cpp(x, grids.tps_weights(s), "tps", (9, 8), "bilinear", "zeros", True)
        else:
            out = warp(x, s, transform="tps", size=(9, 8), align_corners=True, backend="torch")
        out.backward(g)
        res.append((out.detach(), s.grad))
    close(res[0][0], res[1][0], 1e-10, "output")
    close(res[0][1], res[1][1], 1e-10, "grad of the source points")


@pytest.mark.parametrize("need", [(True, False), (False, True)])
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_partial_gradients(transform, need):
    (_, gx, gt), (_, rgx, rgt) = _both(transform, "bilinear", "reflection", True, F64,
                                       need=need)
    check_partial((gx, gt), (rgx, rgt), need)


@pytest.mark.parametrize("size", [(5, 5), (3, 9)])
@pytest.mark.parametrize("pad", PADS)
def test_identity_at_pixel_centres(pad, size):
    """Identity theta with align_corners: every point on a pixel centre (after snapping):
    identity is identity, and the knots' sub-gradients are those of the torch path."""
    x = torch.randn(2, 2, *size, dtype=F64, generator=gen(2))
    theta = torch.eye(2, 3, dtype=F64).repeat(2, 1, 1)
    g = torch.randn(x.shape, dtype=F64, generator=gen(3))
    res, ref = [_grads(fn, x, theta, g, "affine", size, "bilinear", pad, True)
                for fn in (_cpp, _torch)]
    assert torch.equal(res[0], x), "identity is not identity"
    check_against(res, ref, "bilinear", 1e-12)
    # the TPS identity (weights solved in float64: off by ~1e-15) as the torch path's
    w = grids.tps_weights(grids.tps_lattice(K, dtype=F64)[None].repeat(2, 1, 1))
    res, ref = [_grads(fn, x, w, g, "tps", size, "bilinear", pad, True) for fn in (_cpp, _torch)]
    check_against(res, ref, "bilinear", 1e-12)


# ---------------------------------------------------------------------------------------------
# non-finite, outside and huge coordinates; non-finite values
# ---------------------------------------------------------------------------------------------


def _wild_thetas(transform):
    """Per image: a rotation, all outside, a NaN row, an Inf entry."""
    if transform == "tps":
        w = grids.tps_weights(_tps_src(4, 9, 0.3))
        w[1, K, :] += 5.0  # shifted far outside
        w[2, 3, 0] = float("nan")
        w[3, K + 1, 1] = float("inf")
        return w
    theta = raw_theta(transform, 4, 9, 0.2)
    c, s = 0.6, 0.8
    theta[0, :2, :2] = torch.tensor([[c, -s], [s, c]], dtype=F64)
    theta[1, :2, 2] = torch.tensor([4.0, -3.5], dtype=F64)
    theta[2, 1] = float("nan")
    theta[3, 0, 1] = float("inf")
    return theta


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_wild_thetas(transform, pad, mode):
    x = torch.randn(4, 3, 9, 11, dtype=F64, generator=gen(11))
    g = torch.randn(4, 3, 8, 13, dtype=F64, generator=gen(12))
    theta = _wild_thetas(transform)
    res, ref = [_grads(fn, x, theta, g, transform, (8, 13), mode, pad, False)
                for fn in (_cpp, _torch)]
    for a, b, what in zip(res, ref, ("output", "grad input", "grad theta")):
        close(a, b, 1e-10, what, equal_nan=True)


@pytest.mark.parametrize("pad", PADS)
def test_non_finite_pixels_and_gradients(pad):
    """NaN / Inf pixels and an Inf upstream gradient reach exactly what they reach on the
    torch path."""
    x = torch.randn(2, 2, 9, 11, dtype=F64, generator=gen(13))
    x[0, 0, 4, 5] = float("nan")
    x[1, 1, 0, :] = float("inf")
    g = torch.randn(2, 2, 7, 13, dtype=F64, generator=gen(14))
    g[:, 0, 0, :] = float("inf")
    theta = theta_for("affine", 2, (9, 11), (7, 13), False, F64, 2)
    res, ref = [_grads(fn, x, theta, g, "affine", (7, 13), "bilinear", pad, False)
                for fn in (_cpp, _torch)]
    for a, b, what in zip(res, ref, ("output", "grad input", "grad theta")):
        close(a, b, 1e-10, what, equal_nan=True)


def test_huge_finite_coordinates():
    check_huge_finite_coordinates(lambda x, t, kind, *a: _cpp(x, t, "affine", *a))


# ---------------------------------------------------------------------------------------------
# 16-bit images
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta_dtype", [F32, F64])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_half_images(transform, dtype, theta_dtype):
    """Against the torch path on the same 16-bit image (it widens, warps in the compute dtype
    and rounds back): the outputs and grad_input may differ by one rounding of the 16-bit
    dtype where the compute dtype's last bits differ, i.e. by eps(dtype) relative to the
    value (+ 1e-6 absolute for values that round towards 0); grad_theta as in the compute
    dtype, 1e-4 (float32 accumulation of 16-bit inputs) / 1e-10."""
    x = torch.randn(2, 3, 9, 11, generator=gen(21)).to(dtype)
    theta = theta_for(transform, 2, (9, 11), (7, 13), False, F32, 4).to(theta_dtype)
    g = torch.randn(2, 3, 7, 13, generator=gen(22)).to(dtype)
    res, ref = [_grads(fn, x, theta, g, transform, (7, 13), "bilinear", "border", False)
                for fn in (_cpp, _torch)]
    eps = torch.finfo(dtype).eps
    for a, b, what in zip(res[:2], ref[:2], ("output", "grad input")):
        assert a.dtype == dtype, what
        err = (a.double() - b.double()).abs()
        assert (err <= eps * b.double().abs() + 1e-6).all(), f"{what}: {err.max().item()=}"
    assert res[2].dtype == theta_dtype
    close(res[2], ref[2], 1e-4 if theta_dtype == F32 else 1e-10, "grad theta")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_rounding_is_tensor_to(dtype):
    """A half-pixel shift averages two 16-bit pixels exactly (in float64), which the store
    rounds to the dtype: ties to even, NaN kept, bit for bit what Tensor.to gives."""
    x = (torch.randn(2, 3, 9, 9, dtype=F64, generator=gen(23)) * 100).to(dtype)
    x[0, 0, 3, 3] = float("nan")
    x[1, 2, 5, 5] = float("inf")
    theta = torch.tensor([[[1.0, 0.0, 0.125], [0.0, 1.0, 0.0]]], dtype=F64).repeat(2, 1, 1)
    out = _cpp(x, theta, "affine", (9, 9), "bilinear", "zeros", True)
    expect = _torch(x, theta, "affine", (9, 9), "bilinear", "zeros", True)
    assert torch.equal(out.isnan(), expect.isnan())
    assert torch.equal(out.nan_to_num(), expect.nan_to_num()), "16-bit rounding"
    finite = x.clone()
    finite[0, 0, 3, 3] = finite[1, 2, 5, 5] = 1.0
    out = _cpp(finite, theta, "affine", (9, 9), "bilinear", "zeros", True)
    ties = ((finite[..., :-1].double() + finite[..., 1:].double()) / 2).to(dtype)
    assert torch.equal(out[..., :-1], ties), "the average of two pixels, rounded"


# ---------------------------------------------------------------------------------------------
# work plans, determinism, threads
# ---------------------------------------------------------------------------------------------


# (threads, deterministic) of the runs that _check_runs compares
RUNS = [(2, False), (2, False), (1, True), (2, True)]


def _check_runs(runs):
    """The gradients of the RUNS: bitwise equal at one thread count, and with deterministic=True
    at every count; the plans (private buffers or not) agree to rounding."""
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a, b), "two runs at 2 threads differ"
    for a, b in zip(runs[2], runs[3]):
        assert torch.equal(a, b), "deterministic: 1 and 2 threads differ"
    for a, b in zip(runs[0], runs[2]):
        close(a, b, 1e-5, "plans")


def _backward_bits(transform, shape, threads, deterministic):
    size = (40, 37)
    x = torch.randn(shape, dtype=F32, generator=gen(31))
    theta = (grids.tps_weights(_tps_src(shape[0], 6, dtype=F32)) if transform == "tps" else
             raw_theta(transform, shape[0], 6, 0.25).to(F32))  # the same points every run
    g = torch.randn(shape[0], shape[1], *size, dtype=F32, generator=gen(32))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return _grads(_cpp, x, theta, g, transform, size, "bilinear", "zeros", False,
                      deterministic)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("shape", [(1, 3, 30, 33), (5, 2, 30, 33)])
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_deterministic_bits(transform, shape):
    """Same bits on every run at a thread count; deterministic=True: at every count; and the
    plans (private buffers at 2 threads with 1 image) match the torch path."""
    _check_runs([_backward_bits(transform, shape, n, det) for n, det in RUNS])


def test_shares_torchs_openmp_runtime():
    """After import torch + the C++ kernels, one libgomp is mapped: torch's (so the kernels'
    parallel regions run on torch's thread team), and a warp runs on it."""
    code = (
        "import torch\n"
        "from stnkit.ops.kernels import cpp_cpu\n"
        "x = torch.rand(2, 1, 8, 8)\n"
        "cpp_cpu.warp(x, torch.eye(2, 3)[None].repeat(2, 1, 1), transform='affine', "
        "size=(8, 8), mode='bilinear', padding_mode='zeros', align_corners=False, "
        "deterministic=False)\n"
        "import os\n"
        "maps = open('/proc/self/maps').read().split('\\n')\n"
        "print(sorted({line.split()[-1] for line in maps if 'libgomp' in line}))\n"
        "print(os.path.dirname(torch.__file__))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    libs, torch_dir = res.stdout.strip().split("\n")
    libs = eval(libs)
    assert len(libs) == 1, f"more than one OpenMP runtime mapped: {libs}"
    assert libs[0].startswith(torch_dir), f"{libs[0]} is not torch's libgomp"


def test_supports_reasons():
    x = torch.randn(1, 1, 4, 4)
    theta = torch.eye(2, 3)[None]
    assert cpp_cpu.supports(x, theta, transform="affine", mode="bilinear",
                            padding_mode="zeros") is None
    assert "bicubic" in cpp_cpu.supports(x, theta, transform="affine", mode="bicubic",
                                         padding_mode="zeros")
    v = torch.randn(1, 1, 3, 4, 4)
    assert cpp_cpu.supports(v, torch.eye(3, 4)[None], transform="affine", mode="bilinear",
                            padding_mode="zeros") is None
    assert "volumes" in cpp_cpu.supports(v, torch.eye(3)[None], transform="projective",
                                         mode="bilinear", padding_mode="zeros")
    assert "images" in cpp_cpu.supports(x[0], theta, transform="affine", mode="bilinear",
                                        padding_mode="zeros")


def test_registered_operator():
    """stnkit::warp_cpu and its backward are operators (torch.library.opcheck: schema, fake
    tensor, autograd registration)."""
    x = torch.randn(2, 2, 5, 6, dtype=F64, requires_grad=True)
    theta = theta_for("affine", 2, (5, 6), (4, 3), False, F64).requires_grad_()
    args = (x, theta, [4, 3], "affine", "bilinear", "zeros", False, False)
    torch.library.opcheck(torch.ops.stnkit.warp_cpu.default, args)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_modes_pads_align_sweep_float32(transform):
    """Every combination once more in float32 at another size and seed."""
    for mode, pad, align in itertools.product(MODES, PADS, [False, True]):
        res, ref = _both(transform, mode, pad, align, F32, shape=(3, 1, 6, 15), size=(11, 4),
                         seed=17)
        check_against(res, ref, mode, TOL[F32])


def test_compiles_fullgraph_with_the_operator():
    """torch.compile(fullgraph=True) of a function calling ops.warp(backend="cpp"): no graph
    break (the operator is opaque to dynamo), same values and gradients as eager."""
    from stnkit.ops import warp

    def fn(x, theta):
        return warp(x * 2.0, theta, size=(5, 7), backend="cpp").sum(dim=1)

    x = torch.randn(2, 3, 6, 8, generator=gen(41))
    theta = raw_theta("affine", 2, 41, 0.2).float()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    ti, tc = theta.clone().requires_grad_(), theta.clone().requires_grad_()
    eager, out = fn(x, ti), compiled(x, tc)
    close(out, eager, 1e-6, "compiled output")
    eager.sum().backward()
    out.sum().backward()
    close(tc.grad, ti.grad, 1e-6, "compiled grad theta")


# ---------------------------------------------------------------------------------------------
# volumes: 3-D affine, trilinear and nearest (the same driver, Affine3D and Trilinear)
# ---------------------------------------------------------------------------------------------


def _volume_theta(batch, in_size, size, align, dtype, seed=0):
    return theta_away_from_knots("affine3d", batch, in_size, size, align, dtype, seed)


def _both3(mode, pad, align, dtype, *, shape=(2, 3, 5, 6, 7), size=(4, 6, 5), seed=0,
           theta=None, need=(True, True)):
    if theta is None:
        theta = _volume_theta(shape[0], shape[2:], size, align, dtype, seed)
    return _both("affine", mode, pad, align, dtype, shape=shape, size=size, seed=seed,
                 theta=theta, need=need)


@pytest.mark.parametrize("dtype, channels", [(F64, 1), (F64, 4), (F32, 2)])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("mode", MODES)
def test_volumes_match_torch(mode, pad, align, dtype, channels):
    res, ref = _both3(mode, pad, align, dtype, shape=(2, channels, 5, 6, 7))
    assert res[0].dtype == dtype and res[1].dtype == dtype and res[2].dtype == dtype
    check_against(res, ref, mode, TOL[dtype])


def _zoom_theta3(batch, zoom, shift):
    """As _zoom_theta, for volumes."""
    a = torch.tensor([[zoom, 0.03, -0.02, shift], [-0.02, zoom, 0.01, shift],
                      [0.02, -0.01, zoom, shift]], dtype=F64).repeat(batch, 1, 1)
    return a + 0.01 * torch.randn(batch, 3, 4, dtype=F64, generator=gen(batch))


@pytest.mark.parametrize("zoom, shift", [(0.6, 0.0), (0.8, 0.35), (1.3, 0.0)])
def test_volume_interior_and_edge_tiles(zoom, shift):
    """Tiles of 51 rows that run over several slices, all inside / partly / mostly outside the
    volume, every padding."""
    shape, size = (2, 2, 12, 14, 16), (10, 12, 20)
    theta = _zoom_theta3(shape[0], zoom, shift)
    for pad in PADS:
        res, ref = _both3("bilinear", pad, False, F64, shape=shape, size=size, theta=theta)
        check_against(res, ref, "bilinear", 1e-10)


@pytest.mark.parametrize("size", [(3, 2, 1100), (60, 60, 20)])
def test_volume_long_rows_and_many_row_groups(size):
    """Rows longer than a tile (segments), and more tile rows than row groups (rows of
    several slices in one group); random points (see test_long_and_many_rows)."""
    theta = raw_theta("affine3d", 2, 1, 0.25)
    res, ref = _both3("bilinear", "reflection", False, F64, shape=(2, 2, 5, 6, 7), size=size,
                      theta=theta)
    check_against(res, ref, "bilinear", 1e-10)


@pytest.mark.parametrize("pad", PADS)
def test_volume_gradcheck(pad):
    x = torch.randn(1, 2, 3, 4, 5, dtype=F64, generator=gen(0), requires_grad=True)
    theta = _volume_theta(1, (3, 4, 5), (2, 3, 4), False, F64, 5).requires_grad_()
    fn = lambda a, t: _cpp(a, t, "affine", (2, 3, 4), "bilinear", pad, False)
    assert torch.autograd.gradcheck(fn, (x, theta), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("need", [(True, False), (False, True)])
def test_volume_partial_gradients(need):
    (_, gx, gt), (_, rgx, rgt) = _both3("bilinear", "border", True, F64, need=need)
    check_partial((gx, gt), (rgx, rgt), need)


@pytest.mark.parametrize("pad", PADS)
def test_volume_identity(pad):
    """Identity theta with align_corners is identity, with the torch path's sub-gradients."""
    x = torch.randn(2, 2, 4, 5, 3, dtype=F64, generator=gen(2))
    theta = torch.eye(3, 4, dtype=F64).repeat(2, 1, 1)
    g = torch.randn(x.shape, dtype=F64, generator=gen(3))
    res, ref = [_grads(fn, x, theta, g, "affine", (4, 5, 3), "bilinear", pad, True)
                for fn in (_cpp, _torch)]
    assert torch.equal(res[0], x), "identity is not identity"
    check_against(res, ref, "bilinear", 1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pad", PADS)
def test_volume_wild_thetas(pad, mode):
    """A rotation, all outside, a NaN row, an Inf entry; NaN and Inf voxels."""
    theta = raw_theta("affine3d", 4, 9, 0.2)
    theta[1, :, 3] = torch.tensor([4.0, -3.5, 2.0], dtype=F64)
    theta[2, 1] = float("nan")
    theta[3, 2, 0] = float("inf")
    x = torch.randn(4, 2, 5, 6, 7, dtype=F64, generator=gen(11))
    x[0, 1, 2, 3, 3] = float("nan")
    x[0, 0, :, 0, :] = float("inf")
    g = torch.randn(4, 2, 4, 5, 6, dtype=F64, generator=gen(12))
    res, ref = [_grads(fn, x, theta, g, "affine", (4, 5, 6), mode, pad, False)
                for fn in (_cpp, _torch)]
    for a, b, what in zip(res, ref, ("output", "grad input", "grad theta")):
        close(a, b, 1e-10, what, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_volume_half_images(dtype):
    """As test_half_images."""
    x = torch.randn(2, 3, 5, 6, 7, generator=gen(21)).to(dtype)
    theta = _volume_theta(2, (5, 6, 7), (4, 6, 5), False, F32, 4)
    g = torch.randn(2, 3, 4, 6, 5, generator=gen(22)).to(dtype)
    res, ref = [_grads(fn, x, theta, g, "affine", (4, 6, 5), "bilinear", "zeros", False)
                for fn in (_cpp, _torch)]
    eps = torch.finfo(dtype).eps
    for a, b, what in zip(res[:2], ref[:2], ("output", "grad input")):
        assert a.dtype == dtype, what
        err = (a.double() - b.double()).abs()
        assert (err <= eps * b.double().abs() + 1e-6).all(), f"{what}: {err.max().item()=}"
    close(res[2], ref[2], 1e-4, "grad theta")


@pytest.mark.skipif(not all(p.exists() for p in cpp_cpu.LIBRARIES.values()),
                    reason="one build only (not x86-64)")
@pytest.mark.parametrize("dtype", [F32, F64, torch.bfloat16])
def test_volume_builds_give_the_same_bits(dtype):
    shape, size = (2, 2, 12, 14, 16), (10, 12, 20)
    x = torch.randn(shape, dtype=F64, generator=gen(7)).to(dtype)
    g = torch.randn(shape[0], shape[1], *size, dtype=F64, generator=gen(8)).to(dtype)
    for zoom, shift in [(0.6, 0.0), (0.8, 0.35)]:
        theta = _zoom_theta3(shape[0], zoom, shift).to(F64 if dtype == F64 else F32)
        for mode, pad in [("bilinear", "zeros"), ("bilinear", "reflection"),
                          ("nearest", "border")]:
            args = (x, theta, g, "affine", size, mode, pad, False)
            for a, b in zip(_run_with("avx2", *args), _run_with("baseline", *args)):
                assert torch.equal(a, b), (zoom, mode, pad)


@pytest.mark.parametrize("batch", [1, 5])
def test_volume_deterministic_bits(batch):
    """As test_deterministic_bits: private buffers at 2 threads with 1 volume."""
    size = (9, 10, 11)
    x = torch.randn(batch, 2, 8, 9, 10, generator=gen(31))
    theta = raw_theta("affine3d", batch, 6, 0.25).to(F32)
    g = torch.randn(batch, 2, *size, generator=gen(32))
    before = torch.get_num_threads()
    runs = []
    try:
        for threads, det in RUNS:
            torch.set_num_threads(threads)
            runs.append(_grads(_cpp, x, theta, g, "affine", size, "bilinear", "zeros", False,
                               det))
    finally:
        torch.set_num_threads(before)
    _check_runs(runs)


def test_volume_batch_equals_per_sample():
    x = torch.randn(3, 2, 4, 5, 6, dtype=F64, generator=gen(1))
    theta = _volume_theta(3, (4, 5, 6), (3, 6, 4), False, F64, 3)
    out = _cpp(x, theta, "affine", (3, 6, 4), "bilinear", "zeros", False)
    for b in range(3):
        one = _cpp(x[b:b + 1], theta[b:b + 1], "affine", (3, 6, 4), "bilinear", "zeros", False)
        assert torch.equal(one, out[b:b + 1]), f"sample {b} differs from its batch result"


def test_auto_runs_cpp_for_volumes():
    from stnkit.ops import auto_backend, warp

    x = torch.randn(2, 3, 5, 6, 7, dtype=F32, generator=gen(12))
    theta = _volume_theta(2, (5, 6, 7), (4, 6, 5), False, F32)
    assert auto_backend(x, theta) == "cpp"
    a = warp(x, theta, size=(4, 6, 5))
    assert torch.equal(a, _cpp(x, theta, "affine", (4, 6, 5), "bilinear", "zeros", False))
