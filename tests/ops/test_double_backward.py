"""Second derivatives of sample (its backward is differentiable): gradgradcheck at off-knot
points, Hessian-vector products against F.grid_sample's double backward (every mode x padding x
align_corners, 2-D and 3-D, and at knots / clip points), the grid generators and
warp(backend="torch"), a WGAN-GP gradient-penalty step, and a clear error for a third
derivative."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from stnkit._errors import StnkitValueError
from stnkit.ops import reference, sample, warp
from stnkit.ops.grids import affine_grid, projective_grid, tps_grid

F64 = torch.float64
PADDINGS = ["zeros", "border", "reflection"]
COMBOS = [(2, m, p, a) for m, p, a in
          itertools.product(["bilinear", "bicubic", "nearest"], PADDINGS, [False, True])]
COMBOS += [(3, m, p, a) for m, p, a in
           itertools.product(["bilinear", "nearest"], PADDINGS, [False, True])]
IDS = [f"{nd}d-{m}-{p}-{'ac' if a else 'noac'}" for nd, m, p, a in COMBOS]
# every product and sum below is a few roundings of O(1) float64 values
TOL = 1e-10


def _close(actual, expected, what):
    """max |actual - expected| <= TOL * max(1, max |expected|)."""
    assert actual.shape == expected.shape, f"{what}: {actual.shape} != {expected.shape}"
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert err <= TOL * scale, f"{what}: {err=:.3e} {scale=:.3g}"


def _case(nd, make_grid, align, *, seed, small):
    """(input, grid, grad_output) float64 with every grid point away from knots and clips;
    ``small`` (for gradgradcheck): fewer points, all within a pixel of the image."""
    g = torch.Generator().manual_seed(seed)
    if nd == 2:
        in_shape, out = ((1, 2, 3, 4), (2, 3)) if small else ((2, 3, 5, 6), (4, 7))
    else:
        in_shape, out = ((1, 1, 2, 3, 4), (2, 1, 2)) if small else ((2, 2, 4, 5, 3), (3, 2, 4))
    x = torch.randn(in_shape, generator=g, dtype=F64)
    grid = make_grid(in_shape[0], out, in_shape[2:], align, seed=seed, margin=1 if small else 3)
    grad_out = torch.randn((in_shape[0], in_shape[1], *out), generator=g, dtype=F64)
    return x, grid, grad_out


def _hvp(fn, x, grid, grad_out, vx, vg):
    """d/d(x, grid, grad_out) of <grad_x, vx> + <grad_grid, vg>, with (grad_x, grad_grid) the
    backward of fn(x, grid) against grad_out: every second derivative of fn, contracted."""
    x, grid, grad_out = (t.detach().clone().requires_grad_() for t in (x, grid, grad_out))
    gx, gg = torch.autograd.grad(fn(x, grid), (x, grid), grad_out, create_graph=True)
    s = (gx * vx).sum() + (gg * vg).sum()
    return torch.autograd.grad(s, (x, grid, grad_out), materialize_grads=True)


@pytest.mark.parametrize("nd,mode,padding,align", COMBOS, ids=IDS)
def test_gradgradcheck(nd, mode, padding, align, make_grid):
    x, grid, grad_out = _case(nd, make_grid, align, seed=1, small=True)
    kw = dict(mode=mode, padding_mode=padding, align_corners=align)
    # not a vacuous case: the second derivatives checked are not all 0
    v = [torch.ones_like(x), torch.ones_like(grid)]
    d_x, d_grid, d_go = _hvp(lambda u, g: sample(u, g, **kw), x, grid, grad_out, *v)
    assert d_go.abs().max() > 0.1, "every point samples only zeros"
    if mode != "nearest":
        assert d_grid.abs().max() > 0.1 and d_x.abs().max() > 0.1, "no grid curvature"
    x.requires_grad_()
    grid.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda u, g: sample(u, g, **kw), (x, grid),
                                        (grad_out.requires_grad_(),), eps=1e-6, atol=1e-7,
                                        rtol=1e-5)


@pytest.mark.parametrize("nd,mode,padding,align", COMBOS, ids=IDS)
def test_second_order_matches_grid_sample(nd, mode, padding, align, make_grid):
    """Hessian-vector products agree with F.grid_sample's double backward (the peer)."""
    x, grid, grad_out = _case(nd, make_grid, align, seed=2, small=False)
    g = torch.Generator().manual_seed(3)
    vx = torch.randn(x.shape, generator=g, dtype=F64)
    vg = torch.randn(grid.shape, generator=g, dtype=F64)
    kw = dict(mode=mode, padding_mode=padding, align_corners=align)
    ours = _hvp(lambda u, v: sample(u, v, **kw), x, grid, grad_out, vx, vg)
    peer = _hvp(lambda u, v: F.grid_sample(u, v, **kw), x, grid, grad_out, vx, vg)
    for a, b, what in zip(ours, peer, ("d input", "d grid", "d grad_output")):
        _close(a, b, what)
    if mode != "nearest":  # (nearest: d grid is 0 for both)
        assert ours[1].abs().max() > 1e-3, "the grid's second derivatives vanished"


# Power-of-two sizes (align_corners=False) and 2^k + 1 sizes (True) keep knots exact.
KNOT_SIZES = {(2, False): (8, 8), (2, True): (5, 9), (3, False): (4, 4, 8), (3, True): (3, 5, 9)}


def _pixel_grid(points, in_size, align):
    """(1, 1, N, nd) (or (1, 1, 1, N, nd)) normalised grid from exact pixel coordinates."""
    nd = len(in_size)
    rows = [[reference.normalize(float(p[d]), in_size[-1 - d], align) for d in range(nd)]
            for p in points]
    for p, row in zip(points, rows):  # the sizes make these exact round trips
        back = [reference.unnormalize(row[d], in_size[-1 - d], align) for d in range(nd)]
        assert back == [float(v) for v in p], "not an exact knot"
    grid = torch.tensor(rows, dtype=F64).view(1, 1, len(points), nd)
    return grid if nd == 2 else grid.unsqueeze(1)


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
def test_second_order_at_knots_and_clip_points(nd, align, padding):
    """The first-order sub-gradients carry over: at integer knots the second derivatives are
    the right-sided ones (the interval [floor(x), floor(x) + 1], as grid_sample), and at and
    beyond the clip points every second-order term through the clipped coordinate is 0."""
    in_size = KNOT_SIZES[(nd, align)]
    W = in_size[-1]
    g = torch.Generator().manual_seed(4)
    x = torch.randn((1, 2, *in_size), generator=g, dtype=F64)
    # integer knots inside, a knot mixed with fractions, the clip points 0 and W - 1, beyond
    points = [(2, 1, 1), (3, 2, 1), (1, 1.25, 1.5), (0, 1.5, 1.25), (W - 1, 2.25, 1.75),
              (-2.5, 1.75, 1.5), (W + 1.25, 0.5, 0.25)]
    grid = _pixel_grid([p[:nd] for p in points], in_size, align)
    grad_out = torch.randn((1, 2, *grid.shape[1:-1]), generator=g, dtype=F64)
    vx = torch.randn(x.shape, generator=g, dtype=F64)
    vg = torch.randn(grid.shape, generator=g, dtype=F64)
    kw = dict(mode="bilinear", padding_mode=padding, align_corners=align)
    ours = _hvp(lambda u, v: sample(u, v, **kw), x, grid, grad_out, vx, vg)
    peer = _hvp(lambda u, v: F.grid_sample(u, v, **kw), x, grid, grad_out, vx, vg)
    for a, b, what in zip(ours, peer, ("d input", "d grid", "d grad_output")):
        _close(a, b, what)
    dgrid = ours[1].reshape(-1, nd)
    if padding == "border":  # clipped x (points 3..6): its multiplier, hence the term, is 0
        assert torch.all(dgrid[3:, 0] == 0), dgrid
    assert dgrid[:3].abs().min() > 1e-6, f"inside knots get a nonzero mixed term: {dgrid}"


@pytest.mark.parametrize("nd", [2, 3])
def test_near_knot_snapping_holds_in_the_second_order(nd):
    """A point a few ulps left of a knot is snapped onto it: its second derivatives are the
    knot's right-sided ones, bit for bit (grid_sample, which does not snap, takes the left
    interval there)."""
    in_size = KNOT_SIZES[(nd, False)]
    g = torch.Generator().manual_seed(5)
    x = torch.randn((1, 2, *in_size), generator=g, dtype=F64)
    knot = _pixel_grid([(3, 2, 1)[:nd]], in_size, False)
    near = knot.clone()
    near[..., 0] -= 3e-16  # ~1e-15 pixel: rounding noise, well inside the snapping tolerance
    grad_out = torch.randn((1, 2, *knot.shape[1:-1]), generator=g, dtype=F64)
    vx = torch.randn(x.shape, generator=g, dtype=F64)
    vg = torch.randn(knot.shape, generator=g, dtype=F64)

    def peer(u, v):
        return F.grid_sample(u, v, align_corners=False)

    at_knot = _hvp(sample, x, knot, grad_out, vx, vg)
    for a, b, what in zip(at_knot, _hvp(peer, x, knot, grad_out, vx, vg),
                          ("d input", "d grid", "d grad_output")):
        _close(a, b, f"{what} at the knot")  # grid_sample takes the right interval there
    snapped = _hvp(sample, x, near, grad_out, vx, vg)
    for a, b, what in zip(snapped, at_knot, ("d input", "d grid", "d grad_output")):
        assert torch.equal(a, b), f"{what}: {a} != {b}"
    left = _hvp(peer, x, near, grad_out, vx, vg)[1]
    assert (left - at_knot[1]).abs().max() > 1e-6, "the left interval would give the same"


@pytest.mark.parametrize("nd", [2, 3])
def test_nearest_second_order(nd, make_grid):
    """nearest: grad_grid is 0, so the grid's second derivatives are 0; grad_input is the
    sampler's transpose with weights constant in the grid, so d grad_output = sample(v)."""
    x, grid, grad_out = _case(nd, make_grid, False, seed=6, small=False)
    g = torch.Generator().manual_seed(7)
    vx = torch.randn(x.shape, generator=g, dtype=F64)
    vg = torch.randn(grid.shape, generator=g, dtype=F64)
    d_x, d_grid, d_go = _hvp(lambda u, v: sample(u, v, mode="nearest"), x, grid, grad_out, vx,
                             vg)
    assert torch.all(d_grid == 0) and torch.all(d_x == 0)
    _close(d_go, sample(vx, grid, mode="nearest"), "d grad_output")
    assert d_go.abs().max() > 0.1


@pytest.mark.parametrize("ndim,size", [(2, (3, 4)), (3, (2, 3, 2))])
def test_affine_grid_gradgradcheck(ndim, size):
    g = torch.Generator().manual_seed(8)
    theta = torch.randn(2, ndim, ndim + 1, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: affine_grid(t, size, align_corners=False),
                                        (theta,))


@pytest.mark.parametrize("align", [False, True])
def test_projective_grid_gradgradcheck(align):
    g = torch.Generator().manual_seed(9)
    theta = torch.eye(3, dtype=F64) + 0.1 * torch.randn(2, 3, 3, generator=g, dtype=F64)
    theta.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: projective_grid(t, (3, 4), align_corners=align),
                                        (theta,))


def test_tps_grid_gradgradcheck():
    g = torch.Generator().manual_seed(10)
    src = torch.randn(2, 4, 2, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda s: tps_grid(s, (3, 4)), (src,))


def _theta(transform, batch, seed):
    g = torch.Generator().manual_seed(seed)
    n = {"affine": (2, 3), "projective": (3, 3), "affine3d": (3, 4)}[transform]
    eye = torch.eye(*n, dtype=F64)
    return (eye + 0.2 * torch.randn(batch, *n, generator=g, dtype=F64)).requires_grad_()


@pytest.mark.parametrize("transform,in_shape,padding", [
    ("affine", (2, 2, 7, 9), "zeros"),  # the case of issue 11
    ("affine", (1, 2, 4, 5), "reflection"),
    ("projective", (1, 2, 4, 5), "border"),
    ("affine3d", (1, 1, 2, 3, 3), "zeros"),
    ("affine3d", (1, 1, 2, 2, 3), "border"),
])
def test_warp_torch_gradgradcheck(transform, in_shape, padding):
    """Random (off-knot) theta: gradgradcheck through grid generator + sampler."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(in_shape, generator=g, dtype=F64, requires_grad=True)
    theta = _theta(transform, in_shape[0], seed=12)
    kind = "projective" if transform == "projective" else "affine"
    assert torch.autograd.gradgradcheck(
        lambda a, b: warp(a, b, transform=kind, padding_mode=padding, backend="torch"),
        (x, theta))


def test_warp_second_order_matches_affine_grid_sample():
    """The issue's composition: warp(backend="torch") against F.grid_sample(F.affine_grid)."""
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, 2, 7, 9, generator=g, dtype=F64)
    theta = _theta("affine", 2, seed=14).detach()
    grad_out = torch.randn(2, 2, 7, 9, generator=g, dtype=F64)
    vx, vt = torch.randn(x.shape, generator=g, dtype=F64), torch.randn(2, 2, 3, dtype=F64)

    def peer(a, t):
        return F.grid_sample(a, F.affine_grid(t, list(a.shape), align_corners=False),
                             align_corners=False)

    ours = _hvp(lambda a, t: warp(a, t, backend="torch"), x, theta, grad_out, vx, vt)
    ref = _hvp(peer, x, theta, grad_out, vx, vt)
    for a, b, what in zip(ours, ref, ("d input", "d theta", "d grad_output")):
        _close(a, b, what)


def test_wgan_gp_step():
    """A WGAN-GP step: the critic warps its input by a learnt theta; the gradient penalty
    ((|d critic / d x_hat| - 1)^2) reaches theta (through d grad_input / d grid) with a finite,
    nonzero gradient, the one F.grid_sample gives."""
    g = torch.Generator().manual_seed(15)
    real = torch.randn(4, 1, 6, 6, generator=g, dtype=F64)
    fake = torch.randn(4, 1, 6, 6, generator=g, dtype=F64)
    eps = torch.rand(4, 1, 1, 1, generator=g, dtype=F64)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_()
    theta0 = torch.tensor([[0.9, 0.1, 0.05], [-0.2, 1.1, -0.1]], dtype=F64)
    w0 = torch.randn(1, 1, 6, 6, generator=g, dtype=F64)

    def step(warp_fn):
        theta = theta0.clone().requires_grad_()
        w = w0.clone().requires_grad_()
        critic = (w * warp_fn(x_hat, theta.expand(4, 2, 3))).sum(dim=(1, 2, 3))  # (B,)
        (grads,) = torch.autograd.grad(critic.sum(), x_hat, create_graph=True)
        penalty = ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()
        penalty.backward()
        return theta.grad, w.grad

    theta_grad, w_grad = step(lambda a, t: warp(a, t, backend="torch"))
    ref = step(lambda a, t: F.grid_sample(a, F.affine_grid(t, list(a.shape),
                                                             align_corners=False),
                                          align_corners=False))
    assert theta_grad is not None and bool(torch.isfinite(theta_grad).all()), theta_grad
    assert theta_grad.abs().max() > 1e-3, theta_grad
    _close(theta_grad, ref[0], "theta.grad")
    _close(w_grad, ref[1], "w.grad")


def test_third_derivative_raises(make_grid):
    x, grid, grad_out = _case(2, make_grid, False, seed=16, small=True)
    x.requires_grad_()
    grid.requires_grad_()
    _, gg = torch.autograd.grad(sample(x, grid), (x, grid), grad_out, create_graph=True)
    (h,) = torch.autograd.grad((gg ** 2).sum(), grid, create_graph=True)
    assert h.requires_grad, "the second derivative lost its graph"
    with pytest.raises(StnkitValueError, match="sample: expected derivatives of order at most 2"):
        torch.autograd.grad(h.sum(), x)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_nonfinite_points_get_zero_second_derivatives(mode, padding):
    """A NaN/Inf point samples 0 and gets 0 gradient; its second derivatives are 0 too, and
    the finite points are unaffected by it."""
    g = torch.Generator().manual_seed(17)
    x = torch.randn(1, 2, 4, 5, generator=g, dtype=F64)
    nan, inf = float("nan"), float("inf")
    grid = torch.tensor([[[[0.13, 0.27], [nan, 0.3], [inf, 0.0], [0.3, -inf], [-0.41, 0.62]]]],
                        dtype=F64)
    grad_out = torch.randn(1, 2, 1, 5, generator=g, dtype=F64)
    vx = torch.randn(x.shape, generator=g, dtype=F64)
    vg = torch.randn(grid.shape, generator=g, dtype=F64)
    kw = dict(mode=mode, padding_mode=padding, align_corners=False)
    d_x, d_grid, d_go = _hvp(lambda u, v: sample(u, v, **kw), x, grid, grad_out, vx, vg)
    assert torch.all(d_grid[..., 1:4, :] == 0) and torch.all(d_go[..., 1:4] == 0), d_grid
    keep = [0, 4]
    ref = _hvp(lambda u, v: sample(u, v, **kw), x, grid[..., keep, :], grad_out[..., keep],
               vx, vg[..., keep, :])
    _close(d_x, ref[0], "d input")
    _close(d_grid[..., keep, :], ref[1], "d grid")
    _close(d_go[..., keep], ref[2], "d grad_output")
    assert d_grid[..., keep, :].abs().min() > 1e-6, d_grid


def test_empty_batch():
    x = torch.randn(0, 2, 4, 5, dtype=F64)
    grid = torch.zeros(0, 3, 3, 2, dtype=F64)
    grad_out = torch.zeros(0, 2, 3, 3, dtype=F64)
    res = _hvp(sample, x, grid, grad_out, torch.ones_like(x), torch.ones_like(grid))
    assert [r.shape for r in res] == [x.shape, grid.shape, grad_out.shape]
