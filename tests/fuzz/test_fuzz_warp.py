"""Fuzz ``stnkit.ops.warp`` on every CPU backend ("torch", "cpp", "auto") against
``F.grid_sample(F.affine_grid(theta))`` (affine, 2-D and 3-D) and against the same oracle on
our own ``projective_grid`` / ``tps_grid`` (PyTorch has no such op): values, grad_input and
grad_theta, for shapes with empty batch / channels, every dtype and layout, NaN/Inf pixels
and thetas with NaN, Inf or huge entries. Unsupported combinations and bad sizes must be a
clear StnkitError. Tolerances: ``tests/fuzz/_oracle.py``."""

import math
import warnings

import torch
import torch.nn.functional as F
from hypothesis import assume, event, given
from hypothesis import strategies as st

from stnkit.ops import projective_grid, tps_grid, warp
from stnkit.ops.grids import tps_lattice
from tests._helpers import assert_close
from tests.fuzz._oracle import (DTYPES, LAYOUTS, PADS, assert_clear_error,
                                check_sample_result, eps, finite_mass_check, fuzz, gen,
                                layout, make_input, out_ulp, pixel_coords, pixel_specials,
                                seeds, smooth_points, theta_scale, work_dtype)

BACKENDS = ["torch", "cpp", "auto"]
THETA_SPECIALS = [float("nan"), float("inf"), -float("inf"), 1e7, -1e7, 1e20, -1e20]


@st.composite
def warp_cases(draw):
    transform = draw(st.sampled_from(["affine", "affine", "affine3d", "projective", "tps"]))
    nd = 3 if transform == "affine3d" else 2
    modes = ["bilinear", "nearest"] + (["bicubic"] if nd == 2 else [])
    batch, channels = draw(st.integers(0, 2)), draw(st.integers(0, 3))
    in_size = tuple(draw(st.integers(1, 6)) for _ in range(nd))
    size = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 4)] * nd)))
    return dict(
        transform=transform, nd=nd, mode=draw(st.sampled_from(modes)),
        padding_mode=draw(st.sampled_from(PADS)), align_corners=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)), backend=draw(st.sampled_from(BACKENDS)),
        shape=(batch, channels, *in_size), size=size, seed=draw(seeds),
        strength=draw(st.sampled_from([0.0, 0.1, 0.5, 3.0])),
        x_layout=draw(st.sampled_from(LAYOUTS)), pixels=draw(pixel_specials),
        theta_specials=draw(st.lists(st.tuples(st.integers(0, 11),
                                               st.sampled_from(THETA_SPECIALS)), max_size=2)),
        k=draw(st.sampled_from([4, 9, 16])))


def make_theta(case):
    """Identity + strength * N(0, 1) (projective: mild perspective), specials injected."""
    b, dtype, g = case["shape"][0], case["dtype"], gen(case["seed"] + 3)
    if case["transform"] == "tps":
        base = tps_lattice(case["k"], dtype=torch.float64)[None].repeat(b, 1, 1)
        theta = base + 0.3 * case["strength"] * torch.randn(base.shape, generator=g,
                                                            dtype=torch.float64)
    else:
        rows, cols = {"affine": (2, 3), "affine3d": (3, 4), "projective": (3, 3)}[
            case["transform"]]
        eye = torch.eye(rows, cols, dtype=torch.float64)
        noise = torch.randn(b, rows, cols, generator=g, dtype=torch.float64)
        if case["transform"] == "projective":
            noise[:, 2, :2] *= 0.3
        theta = eye + case["strength"] * noise
    flat = theta.view(-1)
    for i, v in case["theta_specials"]:
        if flat.numel():
            flat[i % flat.numel()] = v
    return theta.to(dtype)


def grid_of(theta, case, size, channels):
    """The sampling grid the warp should use (differentiable in theta)."""
    kw = dict(align_corners=case["align_corners"])
    t = case["transform"]
    if t in ("affine", "affine3d"):
        # F.affine_grid refuses N = 0 and C = 0: one dummy row, dropped again
        rows = torch.cat([theta, theta.new_zeros(1, *theta.shape[1:])])
        with warnings.catch_warnings():  # PyTorch's note on unit-size grids (same values)
            warnings.filterwarnings("ignore", "Since version 1.3.0, affine_grid", UserWarning)
            grid = F.affine_grid(rows, (rows.shape[0], max(channels, 1), *size), **kw)
        return grid[: theta.shape[0]]
    if t == "projective":
        return projective_grid(theta, size, **kw)
    return tps_grid(theta, size, **kw)


def reference_warp(x, theta, grad_out, case, size):
    """The oracle of ``_oracle.reference_sample`` on the grid of ``grid_of``; also returns the
    grid, and grad_theta."""
    work = work_dtype(x.dtype)
    xr = x.detach().to(work).requires_grad_()
    tr = theta.detach().to(work).requires_grad_()
    # warp computes its grid in the compute dtype and never rounds it (stnkit.ops, "Mixed
    # precision"): float32 for float16 / bfloat16
    grid = grid_of(tr, case, size, x.shape[1])
    bad = ~torch.isfinite(grid).all(-1)
    keep = (~bad).unsqueeze(1)
    gr = torch.where(bad.unsqueeze(-1), 0, grid)
    out = F.grid_sample(xr, gr, mode=case["mode"], padding_mode=case["padding_mode"],
                        align_corners=case["align_corners"])
    out = torch.where(keep, out, 0)
    if out.numel():
        gx, gt = torch.autograd.grad(out, (xr, tr), torch.where(keep, grad_out.to(work), 0))
    else:
        gx, gt = torch.zeros_like(xr), torch.zeros_like(tr)
    d = x.dtype
    return (out.detach().to(d), gx.to(d), gt.to(d)), grid.detach()


def run_warp(x, theta, grad_out, case):
    xr = x.detach().clone().requires_grad_()
    tr = theta.detach().clone().requires_grad_()
    xin = layout(xr, case["x_layout"]) if case["x_layout"] != "non_contiguous" else \
        torch.cat([xr, xr], dim=-1)[..., : xr.shape[-1]]  # a non-contiguous view
    transform = "affine" if case["transform"] == "affine3d" else case["transform"]
    out = warp(xin, tr, transform=transform, size=case["size"], mode=case["mode"],
               padding_mode=case["padding_mode"], align_corners=case["align_corners"],
               backend=case["backend"])
    assert out.requires_grad, "the output of a differentiable input lost its graph"
    gx, gt = torch.autograd.grad(out, (xr, tr), grad_out)  # empty batches too
    return out.detach(), gx, gt


def _cpp_refuses(case):
    return case["backend"] == "cpp" and case["mode"] == "bicubic"  # every dtype and family


def _spline_noise(case, theta):
    """A TPS kernel (which takes the spline weights L^-1 src) with finite source points
    beyond 1e3: both it and the reference (A @ src) round at |src| eps, i.e. by pixels for
    the 1e7 / 1e20 specials, and differently; there neither is the exact warp."""
    finite = theta[torch.isfinite(theta)]
    return (case["transform"] == "tps" and case["backend"] != "torch" and finite.numel() > 0
            and finite.abs().max().item() > 1e3)


@fuzz(4)
@given(case=warp_cases())
def test_warp_matches_grid_sample(case):
    shape, dtype = case["shape"], case["dtype"]
    size = case["size"] or shape[2:]
    x = make_input(shape, dtype, case["seed"], case["pixels"])
    theta = make_theta(case)
    grad_out = make_input((shape[0], shape[1], *size), dtype, case["seed"] + 2, [])
    event(f"{case['transform']} {case['backend']} {case['mode']} {dtype}")
    try:
        got = run_warp(x, theta, grad_out, case)
    except Exception as e:  # noqa: BLE001 - the property is about which exception
        if _cpp_refuses(case):
            assert_clear_error(e, "warp", ["backend"])
            return
        raise
    assert not _cpp_refuses(case), "cpp accepted a call it does not support"
    ref, grid = reference_warp(x, theta, grad_out, case, size)
    if _spline_noise(case, theta):
        event("not compared: TPS kernel with source points beyond 1e3")
        return
    kw = dict(mode=case["mode"], padding_mode=case["padding_mode"],
              align_corners=case["align_corners"])
    assert got[0].shape == ref[0].shape and got[0].dtype == dtype, (got[0].shape, got[0].dtype)
    assert got[2].shape == theta.shape
    extra = theta_scale(theta, shape[2:]) if case["transform"] != "tps" else 0.0
    check_sample_result((got[0], got[1], None), (ref[0], ref[1], None), x, grid, grad_out,
                        what=f"warp[{case['backend']}]", p_extra=extra, **kw)
    if case["padding_mode"] != "zeros" and case["mode"] != "bicubic":
        finite_mass_check(got[1], grad_out, grid, f"warp[{case['backend']}]")
    # grad_theta sums every point's grid gradient: compared when every point is smooth
    pix = pixel_coords(grid, shape[2:], case["align_corners"])
    if not bool(torch.isfinite(x).all()) or not bool(torch.isfinite(theta).all()):
        event("grad_theta: not compared (non-finite input or theta)")
        return
    if pix.numel() and not bool(smooth_points(pix, dtype, shape[2:]).all()):
        event("grad_theta: not compared (a point near a knot)")
        return
    assert bool(torch.isfinite(got[2]).all()), "non-finite grad_theta"
    p = torch.where(torch.isfinite(pix), pix, torch.zeros_like(pix)).abs()
    pmax, s = (p.max().item() if p.numel() else 0.0), max(shape[2:])
    n = max(1, math.prod(size))
    tol = 192 * s * eps(dtype) * (pmax + s) * n + 2 * n * out_ulp(dtype)
    if case["transform"] == "tps":
        tol *= 1 + case["k"]  # the spline's weights |A| may exceed 1
    assert_close(got[2], ref[2], tol, f"warp[{case['backend']}]: grad_theta")


@fuzz(1)
@given(backend=st.sampled_from(BACKENDS), nd=st.sampled_from([2, 3]),
       empty_axis=st.integers(0, 2), batch=st.integers(0, 2), channels=st.integers(0, 2),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       transform=st.sampled_from(["affine", "projective"]))
def test_warp_empty_input_is_a_clear_error(backend, nd, empty_axis, batch, channels, dtype,
                                           transform):
    """A zero spatial input size: StnkitValueError naming input, on every backend."""
    if nd == 3:
        transform = "affine"
    in_size = [3] * nd
    in_size[empty_axis % nd] = 0
    x = torch.zeros(batch, channels, *in_size, dtype=dtype)
    theta = torch.eye(nd + (transform == "projective"), nd + 1, dtype=dtype)[None].repeat(
        batch, 1, 1)
    try:
        warp(x, theta, transform=transform, size=(2,) * nd, backend=backend)
    except Exception as e:  # noqa: BLE001
        assert_clear_error(e, "warp", ["input"])
    else:
        raise AssertionError(f"warp[{backend}] accepted an input of size {tuple(x.shape)}")


@fuzz(1)
@given(backend=st.sampled_from(BACKENDS), nd=st.sampled_from([2, 3]),
       big=st.integers(31, 62), axis=st.integers(0, 2), batch=st.integers(1, 2))
def test_warp_impossible_size_is_a_clear_error(backend, nd, big, axis, batch):
    """An output of 2**31 or more pixels per image: StnkitValueError naming size (not an
    overflow, a MemoryError or a hang)."""
    size = [2] * nd
    size[axis % nd] = 2**big
    x = torch.zeros(batch, 1, *([3] * nd))
    theta = torch.eye(nd, nd + 1)[None].repeat(batch, 1, 1)
    try:
        warp(x, theta, size=tuple(size), backend=backend)
    except Exception as e:  # noqa: BLE001
        assert_clear_error(e, "warp", ["size"])
    else:
        raise AssertionError(f"warp[{backend}] accepted size {size}")


@fuzz(1)
@given(case=warp_cases())
def test_cpp_matches_torch_backend(case):
    """Where the C++ kernels support a call, they give the torch backend's answer (the
    projective family has no PyTorch op: this is its cross-check, NaN pattern included)."""
    assume(not _cpp_refuses(dict(case, backend="cpp")))
    shape, dtype = case["shape"], case["dtype"]
    size = case["size"] or shape[2:]
    x = make_input(shape, dtype, case["seed"], case["pixels"])
    theta = make_theta(case)
    grad_out = make_input((shape[0], shape[1], *size), dtype, case["seed"] + 2, [])
    got = run_warp(x, theta, grad_out, dict(case, backend="cpp"))
    ref = run_warp(x, theta, grad_out, dict(case, backend="torch", x_layout="contiguous"))
    _, grid = reference_warp(x, theta, grad_out, case, size)
    check_sample_result((got[0], got[1], None), (ref[0], ref[1], None), x, grid, grad_out,
                        what="cpp vs torch", p_extra=theta_scale(theta, shape[2:]),
                        mode=case["mode"],
                        padding_mode=case["padding_mode"], align_corners=case["align_corners"])
