"""sample: gradcheck, forward + both gradients against F.grid_sample and ops.reference for every
mode x padding x align_corners (2-D and 3-D), and the stated sub-gradients at knots / borders."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stnkit.ops import reference, sample
from tests._helpers import assert_close

F64 = torch.float64
MODES = ["bilinear", "nearest", "bicubic"]
PADDINGS = ["zeros", "border", "reflection"]
COMBOS = [(2, m, p, a) for m, p, a in itertools.product(MODES, PADDINGS, [False, True])]
COMBOS += [(3, m, p, a) for m, p, a in itertools.product(MODES[:2], PADDINGS, [False, True])]
IDS = [f"{nd}d-{m}-{p}-{'ac' if a else 'noac'}" for nd, m, p, a in COMBOS]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _run(fn, x, grid, grad_out, **kw):
    x = x.detach().clone().requires_grad_()
    grid = grid.detach().clone().requires_grad_()
    out = fn(x, grid, **kw)
    gx, gg = torch.autograd.grad(out, (x, grid), grad_out)
    return out.detach(), gx, gg


def _case(nd, make_grid, align, *, seed, dtype=F64, small=False):
    """(input, grid, grad_output) away from every knot."""
    g = torch.Generator().manual_seed(seed)
    if nd == 2:
        in_shape, out = ((2, 2, 4, 5), (3, 3)) if small else ((2, 3, 5, 6), (4, 7))
    else:
        in_shape, out = ((1, 2, 3, 4, 5), (2, 2, 3)) if small else ((2, 1, 4, 5, 6), (3, 4, 5))
    x = torch.randn(in_shape, generator=g, dtype=F64)
    grid = make_grid(in_shape[0], out, in_shape[2:], align, seed=seed)
    grad_out = torch.randn((in_shape[0], in_shape[1], *out), generator=g, dtype=F64)
    return x.to(dtype), grid.to(dtype), grad_out.to(dtype)


@pytest.mark.parametrize("nd,mode,padding,align", COMBOS, ids=IDS)
def test_gradcheck(nd, mode, padding, align, make_grid):
    x, grid, _ = _case(nd, make_grid, align, seed=1, small=True)
    x.requires_grad_()
    grid.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda u, g: sample(u, g, mode=mode, padding_mode=padding, align_corners=align),
        (x, grid), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("nd,mode,padding,align", COMBOS, ids=IDS)
def test_matches_grid_sample(nd, mode, padding, align, dtype, make_grid):
    x, grid, grad_out = _case(nd, make_grid, align, seed=2, dtype=dtype)
    kw = dict(mode=mode, padding_mode=padding, align_corners=align)
    ours = _run(sample, x, grid, grad_out, **kw)
    ref = _run(F.grid_sample, x, grid, grad_out, **kw)
    for a, b, what in zip(ours, ref, ("output", "grad_input", "grad_grid")):
        assert a.dtype == dtype
        assert_close(a, b, TOL[dtype], what)


@pytest.mark.parametrize("nd,mode,padding,align", COMBOS, ids=IDS)
def test_matches_reference(nd, mode, padding, align, make_grid):
    x, grid, grad_out = _case(nd, make_grid, align, seed=3, small=True)
    kw = dict(mode=mode, padding_mode=padding, align_corners=align)
    out, gx, gg = _run(sample, x, grid, grad_out, **kw)
    ref = reference.sample(x.numpy(), grid.numpy(), **kw)
    ref_gx, ref_gg = reference.sample_grad(x.numpy(), grid.numpy(), grad_out.numpy(), **kw)
    assert_close(out, ref, 1e-10, "output")
    assert_close(gx, ref_gx, 1e-10, "grad_input")
    assert_close(gg, ref_gg, 1e-10, "grad_grid")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # make_grid is pure
@given(nd=st.sampled_from([2, 3]), mode=st.sampled_from(MODES), padding=st.sampled_from(PADDINGS),
       align=st.booleans(), batch=st.integers(1, 2), channels=st.sampled_from([1, 3]),
       in_size=st.lists(st.integers(1, 6), min_size=3, max_size=3),
       out_size=st.lists(st.integers(1, 4), min_size=3, max_size=3), seed=st.integers(0, 99))
def test_matches_grid_sample_any_shape(nd, mode, padding, align, batch, channels, in_size,
                                       out_size, seed, make_grid):
    """Odd and unit sizes, one or more channels, every option: forward and both gradients."""
    if nd == 3 and mode == "bicubic":
        mode = "bilinear"
    in_size, out_size = tuple(in_size[:nd]), tuple(out_size[:nd])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, channels, *in_size), generator=g, dtype=F64)
    grid = make_grid(batch, out_size, in_size, align, seed=seed)
    grad_out = torch.randn((batch, channels, *out_size), generator=g, dtype=F64)
    kw = dict(mode=mode, padding_mode=padding, align_corners=align)
    for a, b, what in zip(_run(sample, x, grid, grad_out, **kw),
                          _run(F.grid_sample, x, grid, grad_out, **kw),
                          ("output", "grad_input", "grad_grid")):
        assert_close(a, b, 1e-10, f"{what} {kw}")


def test_matches_grid_sample_on_affine_grids():
    """Typical use (rotations / scalings, points on and off knots), float32, both grads."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 2, 9, 11, generator=g)
    theta = torch.eye(2, 3) + 0.3 * torch.randn(3, 2, 3, generator=g)
    for align in (False, True):
        grid = F.affine_grid(theta, (3, 2, 8, 10), align_corners=align)
        grad_out = torch.randn(3, 2, 8, 10, generator=g)
        for mode, padding in itertools.product(MODES, PADDINGS):
            kw = dict(mode=mode, padding_mode=padding, align_corners=align)
            ours = _run(sample, x, grid, grad_out, **kw)
            ref = _run(F.grid_sample, x, grid, grad_out, **kw)
            for a, b, what in zip(ours, ref, ("output", "grad_input", "grad_grid")):
                assert_close(a, b, 1e-5, f"{what} {kw}")


# ---------------------------------------------------------------------------------------------
# Sub-gradients at integer knots and at the borders
# ---------------------------------------------------------------------------------------------


def _pixel_grid(points, in_size, align):
    """(1, 1, N, nd) normalised grid from exact pixel coordinates (x, y[, z])."""
    nd = len(in_size)
    rows = [[reference.normalize(float(p[d]), in_size[-1 - d], align) for d in range(nd)]
            for p in points]
    grid = torch.tensor(rows, dtype=F64).view(1, 1, len(points), nd)
    for p, row in zip(points, rows):  # the sizes below make these exact round trips
        back = [reference.unnormalize(row[d], in_size[-1 - d], align) for d in range(nd)]
        assert back == [float(v) for v in p]
    return grid if nd == 2 else grid.unsqueeze(1)


# Power-of-two sizes (align_corners=False) and 2^k + 1 sizes (True) keep knots exact.
KNOT_SIZES = {(2, False): (8, 8), (2, True): (5, 9), (3, False): (4, 4, 8), (3, True): (3, 5, 9)}


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
def test_bilinear_integer_knot_is_right_derivative(nd, align, padding):
    """At integer pixel coordinates strictly inside the image, dV/dx is the derivative on
    [floor(x), floor(x) + 1] (reference subgradient="floor", as grid_sample); the paper's eq. 7
    gives sum_n U_nj k(y - n) there instead, so the two differ exactly at the knots."""
    in_size = KNOT_SIZES[(nd, align)]
    g = torch.Generator().manual_seed(5)
    x = torch.randn((1, 2, *in_size), generator=g, dtype=F64)
    # all coordinates integer; one point also mixes an integer x with fractional y (z)
    points = [(2, 1, 1)[:nd], (3, 2, 1)[:nd], (1, 1.25, 1.5)[:nd]]
    grid = _pixel_grid(points, in_size, align)
    grad_out = torch.randn((1, 2, *grid.shape[1:-1]), generator=g, dtype=F64)
    kw = dict(mode="bilinear", padding_mode=padding, align_corners=align)
    ours = _run(sample, x, grid, grad_out, **kw)
    torch_ref = _run(F.grid_sample, x, grid, grad_out, **kw)
    floor_gx, floor_gg = reference.sample_grad(x.numpy(), grid.numpy(), grad_out.numpy(), **kw,
                                               subgradient="floor")
    paper_gx, paper_gg = reference.sample_grad(x.numpy(), grid.numpy(), grad_out.numpy(), **kw,
                                               subgradient="paper")
    for a, b, what in zip(ours, torch_ref, ("output", "grad_input", "grad_grid")):
        assert_close(a, b, 1e-10, f"{what} vs grid_sample")
    assert_close(ours[2], floor_gg, 1e-10, "grad_grid vs floor sub-gradient")
    assert_close(paper_gx, floor_gx, 1e-12, "grad_input does not depend on the sub-gradient")
    # the paper's choice differs on every integer coordinate of the knot points
    diff = (ours[2] - torch.as_tensor(paper_gg)).abs().view(-1, nd)
    for p, row in zip(points, diff):
        for d in range(nd):
            if float(p[d]).is_integer():
                assert row[d] > 1e-6, f"paper and floor sub-gradients agree at {p} axis {d}"
            else:
                assert row[d] < 1e-10, f"paper and floor sub-gradients differ off-knot {p}"
    # and the right derivative is what a forward difference measures
    h = 1e-7
    for d in range(nd):
        scale = reference.unnormalize_scale(in_size[-1 - d], align)
        bumped = grid.clone()
        bumped[..., d] += h / scale  # h pixels to the right
        fd = ((sample(x, bumped, **kw) - ours[0]) * grad_out).sum().item() / h
        total = ours[2][..., d].sum().item() / scale  # all points, per pixel
        assert abs(fd - total) < 1e-5, f"axis {d}: forward difference {fd} vs {total}"


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("padding", ["border", "reflection"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_border_clip_points_have_zero_grid_gradient(mode, padding, align):
    """At and beyond the clip points 0 and W - 1 (and on the clipped stretches), PyTorch's
    clip multiplier is 0: dV/dx = 0 there, although the one-sided interior derivative is not."""
    in_size = KNOT_SIZES[(2, align)]
    H, W = in_size
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 1, H, W, generator=g, dtype=F64)
    ys = [1.25, 2.75]
    xs = [0, W - 1] + ([-0.25, W - 0.75] if not align else [])
    if padding == "border":
        xs += [-3.5, W + 2.25]  # far outside: clipped
    grid = _pixel_grid([(px, py) for px in xs for py in ys], in_size, align)
    grad_out = torch.ones(1, 1, 1, grid.shape[2], dtype=F64)
    kw = dict(mode=mode, padding_mode=padding, align_corners=align)
    ours = _run(sample, x, grid, grad_out, **kw)
    torch_ref = _run(F.grid_sample, x, grid, grad_out, **kw)
    for a, b, what in zip(ours, torch_ref, ("output", "grad_input", "grad_grid")):
        assert_close(a, b, 1e-10, f"{what} vs grid_sample")
    assert torch.all(ours[2][..., 0] == 0), ours[2]
    if mode == "bilinear":  # the interior one-sided derivative at x = 0 is U[:, 1] - U[:, 0]
        floor_gg = reference.sample_grad(x.numpy(), grid.numpy(), grad_out.numpy(), **kw,
                                         subgradient="floor")[1]
        assert abs(floor_gg[0, 0, 0, 0]) > 1e-6


@pytest.mark.parametrize("align", [False, True])
def test_reflection_mirrors_the_gradient(align):
    """A point mirrored at the left edge samples the same value with the opposite dV/dx."""
    in_size = KNOT_SIZES[(2, align)]
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, *in_size, generator=g, dtype=F64)
    mirror = (lambda p: -p) if align else (lambda p: -1 - p)
    inside = [(0.25, 1.75), (1.625, 2.125), (2.375, 0.875)]
    grid = _pixel_grid(inside + [(mirror(px), py) for px, py in inside], in_size, align)
    kw = dict(mode="bilinear", padding_mode="reflection", align_corners=align)
    out, _, gg = _run(sample, x, grid, torch.ones(1, 2, 1, 6, dtype=F64), **kw)
    assert_close(out[..., 3:], out[..., :3], 1e-12, "mirrored values")
    assert_close(gg[0, 0, 3:, 0], -gg[0, 0, :3, 0], 1e-12, "dV/dx flips sign")
    assert_close(gg[0, 0, 3:, 1], gg[0, 0, :3, 1], 1e-12, "dV/dy unchanged")


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("padding", PADDINGS)
def test_nearest_gives_zero_grid_gradient(nd, padding, make_grid):
    x, grid, grad_out = _case(nd, make_grid, False, seed=8)
    out, gx, gg = _run(sample, x, grid, grad_out, mode="nearest", padding_mode=padding)
    assert torch.all(gg == 0)
    # the input gradient is dL/dV routed to the one pixel each point reads
    assert torch.count_nonzero(gx) > 0
    assert_close(gx.sum(), (grad_out * (out != 0)).sum(), 1e-10, "routed gradient mass")


def test_bicubic_is_smooth_across_knots():
    """Keys' kernel is C^1: dV/dx just left of, at and right of a knot agree."""
    in_size = (8, 8)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 1, *in_size, generator=g, dtype=F64)
    e = 2.0**-20
    grid = _pixel_grid([(3 - e, 2.5), (3, 2.5), (3 + e, 2.5)], in_size, False)
    _, _, gg = _run(sample, x, grid, torch.ones(1, 1, 1, 3, dtype=F64), mode="bicubic")
    assert (gg[0, 0, :, 0].max() - gg[0, 0, :, 0].min()).item() < 1e-4
