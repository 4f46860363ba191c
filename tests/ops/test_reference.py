"""ops.reference, the oracle: its kernels, padding, hand-computed values, its gradients against
finite differences, its agreement with F.grid_sample, and where the paper's choices differ."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stnkit.ops import reference as R

MODES = ["bilinear", "nearest", "bicubic"]
PADDINGS = ["zeros", "border", "reflection"]
COMBOS = [(2, m, p, a) for m, p, a in itertools.product(MODES, PADDINGS, [False, True])]
COMBOS += [(3, m, p, a) for m, p, a in itertools.product(MODES[:2], PADDINGS, [False, True])]
IDS = [f"{nd}d-{m}-{p}-{'ac' if a else 'noac'}" for nd, m, p, a in COMBOS]


def _rng(seed):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


def test_bilinear_kernel():
    for d, want in [(0, 1), (0.25, 0.75), (-0.25, 0.75), (1, 0), (-1, 0), (1.5, 0), (-7, 0)]:
        assert R.bilinear_kernel(d) == want


def test_nearest_kernel_rounds_half_up():
    # delta(floor(d + 0.5)): 1 on [-0.5, 0.5)
    for d, want in [(0, 1), (0.49, 1), (-0.5, 1), (0.5, 0), (-0.51, 0), (1, 0)]:
        assert R.nearest_kernel(d) == want, d


def test_cubic_kernel_values_and_partition_of_unity():
    for d, want in [(0, 1), (1, 0), (-1, 0), (2, 0), (-2, 0), (3, 0)]:
        assert R.cubic_kernel(d) == want
    for x in _rng(0).uniform(-5, 5, 20):
        total = sum(R.cubic_kernel(x - m) for m in range(math.floor(x) - 3, math.floor(x) + 4))
        assert abs(total - 1) < 1e-12


@pytest.mark.parametrize("kernel,grad", [(R.cubic_kernel, R.cubic_kernel_grad),
                                         (R.bilinear_kernel, R.bilinear_kernel_grad)])
def test_kernel_derivatives_match_finite_differences(kernel, grad):
    h = 1e-6
    for d in _rng(1).uniform(-2.5, 2.5, 40):
        if min(abs(d - k) for k in (-2, -1, 0, 1, 2)) < 1e-3:
            continue
        # d k(x - m) / dx = k'(d)
        fd = (kernel(d + h) - kernel(d - h)) / (2 * h)
        assert abs(grad(d) - fd) < 1e-6, d
    if kernel is R.cubic_kernel:  # C^1: one-sided derivatives agree at the knots
        for d in (-2, -1, 0, 1, 2):
            left = (kernel(d) - kernel(d - h)) / h
            right = (kernel(d + h) - kernel(d)) / h
            assert abs(left - right) < 1e-5 and abs(grad(d) - right) < 1e-5, d


def test_bilinear_subgradients_paper_vs_floor():
    """They agree off the knots d in {-1, 0, 1} and differ at d = -1 and d = 0."""
    for d in _rng(2).uniform(-3, 3, 50):
        assert R.bilinear_kernel_grad(d, "paper") == R.bilinear_kernel_grad(d, "floor")
    # d = x - m. Paper (eq. 7): 1 if m >= x, -1 if m < x, 0 if |m - x| >= 1.
    assert [R.bilinear_kernel_grad(d, "paper") for d in (-1, 0, 1)] == [0, 1, 0]
    # floor: derivative on [floor(x), floor(x) + 1]
    assert [R.bilinear_kernel_grad(d, "floor") for d in (-1, 0, 1)] == [1, -1, 0]
    with pytest.raises(ValueError, match="expected subgradient one of"):
        R.bilinear_kernel_grad(0.3, "left")


# ---------------------------------------------------------------------------------------------
# Coordinates and padding
# ---------------------------------------------------------------------------------------------


def test_pad_index():
    idx = range(-5, 9)

    def table(mode, align):
        return [R.pad_index(i, 3, mode, align) for i in idx]

    assert table("zeros", False) == [None] * 5 + [0, 1, 2] + [None] * 6
    assert table("border", True) == [0] * 6 + [1] + [2] * 7
    # mirrored at the pixel centres 0 and 2: ... 1 2 1 | 0 1 2 | 1 0 1 2 ...
    assert table("reflection", True) == [1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0]
    # mirrored at the edges -0.5 and 2.5: ... 1 0 | 0 1 2 | 2 1 0 0 1 2 ...
    assert table("reflection", False) == [1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1, 2]
    assert R.pad_index(-7, 1, "reflection", True) == 0
    assert R.pad_index(10**40 + 1, 3, "reflection", False) == R.pad_index(1 + 10**40 % 6, 3,
                                                                          "reflection", False)
    with pytest.raises(ValueError, match="expected padding_mode one of"):
        R.pad_index(0, 3, "wrap", False)


def test_unnormalize():
    assert R.unnormalize(-1, 5, True) == 0 and R.unnormalize(1, 5, True) == 4
    assert R.unnormalize(-1, 4, False) == -0.5 and R.unnormalize(1, 4, False) == 3.5
    for size, align in itertools.product((2, 5, 8), (False, True)):
        for p in (-0.5, 0, 1.25, 3):
            assert abs(R.unnormalize(R.normalize(p, size, align), size, align) - p) < 1e-12
    assert R.unnormalize_scale(5, True) == 2 and R.unnormalize_scale(4, False) == 2
    assert R.unnormalize(1e308, 4, False) == np.finfo(np.float64).max  # clamped, not inf
    assert math.isnan(R.unnormalize(math.nan, 4, False))


# ---------------------------------------------------------------------------------------------
# Hand-computed values
# ---------------------------------------------------------------------------------------------


def test_hand_computed_2x2():
    a, b, c, d = 1.0, 2.0, 4.0, 8.0
    U = np.array([[[a, b], [c, d]]])  # (C=1, H=2, W=2): U[n, m], n = y, m = x
    V = R.interpolate_2d(U, 0.5, 0.5)[0]
    assert V == (a + b + c + d) / 4
    assert R.interpolate_2d(U, 0.25, 0)[0] == 0.75 * a + 0.25 * b
    assert R.interpolate_2d(U, 0.7, 0.6, mode="nearest")[0] == d
    assert R.interpolate_2d(U, -0.5, 0)[0] == 0.5 * a  # zero padding
    assert R.interpolate_2d(U, -0.5, 0, padding_mode="border")[0] == a
    # eq. 6 at (0.25, 0.5): dV/dU = k(x - m) k(y - n)
    grad_U, gx, gy = R.interpolate_2d_grad(U, 0.25, 0.5, [1.0])
    assert np.allclose(grad_U[0], [[0.375, 0.125], [0.375, 0.125]])
    # eq. 7 off the knots: dV/dx = (b - a) / 2 + (d - c) / 2
    assert gx == 0.5 * (b - a) + 0.5 * (d - c)
    assert gy == 0.75 * (c - a) + 0.25 * (d - b)
    # at the knot (0, 0): the paper's eq. 7 gives U_00 = a, the floor-based choice b - a
    assert R.interpolate_2d_grad(U, 0.0, 0.0, [1.0], subgradient="paper")[1] == a
    assert R.interpolate_2d_grad(U, 0.0, 0.0, [1.0], subgradient="floor")[1] == b - a


def test_hand_computed_3d():
    U = np.arange(8.0).reshape(1, 2, 2, 2)  # U[l, n, m] = 4 l + 2 n + m
    assert R.interpolate_3d(U, 0.5, 0.5, 0.5)[0] == 3.5
    _, gx, gy, gz = R.interpolate_3d_grad(U, 0.3, 0.6, 0.2, [1.0])
    assert (gx, gy, gz) == pytest.approx((1.0, 2.0, 4.0), abs=1e-14)  # U is linear: slopes


@pytest.mark.parametrize("mode", MODES)
def test_windowed_sum_equals_whole_image_sum(mode):
    """Zero padding: the literal eq. 3 over every pixel gives the same as the windowed sum."""
    k = R.KERNELS[mode][0]
    rng = _rng(3)
    U = rng.normal(size=(2, 4, 5))
    for x, y in rng.uniform(-2.5, 6.5, size=(30, 2)):
        full = sum(U[:, n, m] * k(x - m) * k(y - n) for n in range(4) for m in range(5))
        assert np.allclose(R.interpolate_2d(U, x, y, mode=mode), full, atol=1e-14)


def test_nearest_ties_differ_from_pytorch_by_design():
    """The paper rounds half up (floor(x + 0.5)); PyTorch / sample round half to even."""
    U = np.arange(8.0).reshape(1, 1, 1, 8)
    pix = np.array([1.5, 2.5, 2.4, 2.6])
    grid = np.stack([(2 * pix + 1) / 8 - 1, np.zeros(4)], axis=-1).reshape(1, 1, 4, 2)
    ours = R.sample(U, grid, mode="nearest")
    torch_out = F.grid_sample(torch.as_tensor(U), torch.as_tensor(grid), mode="nearest",
                              align_corners=False).numpy()
    assert ours.ravel().tolist() == [2, 3, 2, 3]
    assert torch_out.ravel().tolist() == [2, 2, 2, 3]


def test_non_finite_and_huge_coordinates():
    U = np.arange(12.0).reshape(1, 3, 4)
    for x, y in [(math.nan, 1.0), (1.0, math.inf), (-math.inf, -math.inf)]:
        assert np.all(R.interpolate_2d(U, x, y, padding_mode="border") == 0)
        grad_U, gx, gy = R.interpolate_2d_grad(U, x, y, [1.0], padding_mode="reflection")
        assert np.all(grad_U == 0) and gx == gy == 0
    assert R.interpolate_2d(U, 1e30, 1.0, padding_mode="border")[0] == 7.0
    assert R.interpolate_2d(U, 1e30, 1.0)[0] == 0.0
    # reflection with exact integer arithmetic: 2**60 is 0 modulo the period 2 * 4
    assert R.interpolate_2d(U, float(2**60), 1.0, padding_mode="reflection")[0] == U[0, 1, 0]


def test_bad_mode():
    with pytest.raises(ValueError, match="expected mode one of"):
        R.sample(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 1, 2)), mode="area")
    with pytest.raises(ValueError, match="expected padding_mode one of"):
        R.sample_grad(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 1)),
                      padding_mode="wrap")


# ---------------------------------------------------------------------------------------------
# The oracle against finite differences and against PyTorch
# ---------------------------------------------------------------------------------------------


def _case(nd, make_grid, align, seed):
    rng = _rng(seed)
    in_shape, out = ((2, 2, 4, 5), (3, 3)) if nd == 2 else ((1, 2, 3, 4, 4), (2, 2, 2))
    U = rng.normal(size=in_shape)
    grid = make_grid(in_shape[0], out, in_shape[2:], align, seed=seed).numpy()
    grad_out = rng.normal(size=(in_shape[0], in_shape[1], *out))
    return U, grid, grad_out


@pytest.mark.parametrize("nd,mode,padding,align", COMBOS, ids=IDS)
def test_gradients_match_finite_differences(nd, mode, padding, align, make_grid):
    """Eq. 6 and 7 as implemented, against central differences of the forward."""
    U, grid, grad_out = _case(nd, make_grid, align, seed=10)
    kw = dict(mode=mode, padding_mode=padding, align_corners=align)
    grad_U, grad_grid = R.sample_grad(U, grid, grad_out, **kw)

    def loss(u, g):
        return float((R.sample(u, g, **kw) * grad_out).sum())

    h = 1e-6
    rng = _rng(11)
    for _ in range(4):  # a few random entries of each gradient
        i = tuple(int(rng.integers(s)) for s in U.shape)
        up, dn = U.copy(), U.copy()
        up[i] += h
        dn[i] -= h
        fd = (loss(up, grid) - loss(dn, grid)) / (2 * h)
        assert abs(grad_U[i] - fd) < 1e-6, ("input", i)
    for i in np.ndindex(*grid.shape):
        up, dn = grid.copy(), grid.copy()
        up[i] += h
        dn[i] -= h
        fd = (loss(U, up) - loss(U, dn)) / (2 * h)
        assert abs(grad_grid[i] - fd) < 1e-5 * max(1, abs(fd)), ("grid", i, grad_grid[i], fd)


@pytest.mark.parametrize("nd,mode,padding,align", COMBOS, ids=IDS)
def test_matches_grid_sample(nd, mode, padding, align, make_grid):
    U, grid, grad_out = _case(nd, make_grid, align, seed=12)
    kw = dict(mode=mode, padding_mode=padding, align_corners=align)
    x = torch.tensor(U, requires_grad=True)
    g = torch.tensor(grid, requires_grad=True)
    out = F.grid_sample(x, g, **kw)
    gx, gg = torch.autograd.grad(out, (x, g), torch.as_tensor(grad_out))
    ref_gx, ref_gg = R.sample_grad(U, grid, grad_out, **kw)
    for ours, theirs, what in ((R.sample(U, grid, **kw), out, "output"), (ref_gx, gx, "grad_input"),
                               (ref_gg, gg, "grad_grid")):
        err = np.abs(ours - theirs.detach().numpy()).max()
        assert err < 1e-10, f"{what}: {err=}"


def test_paper_subgradient_at_knots_differs_from_grid_sample():
    """At integer knots the floor-based choice equals grid_sample and the paper's does not."""
    U = _rng(13).normal(size=(1, 1, 5, 5))
    pix = [(1, 2), (2, 3), (3, 1)]
    grid = np.array([[R.normalize(px, 5, True), R.normalize(py, 5, True)] for px, py in pix])
    grid = grid.reshape(1, 1, 3, 2)
    x = torch.tensor(U, requires_grad=True)
    g = torch.tensor(grid, requires_grad=True)
    gx, gg = torch.autograd.grad(F.grid_sample(x, g, align_corners=True).sum(), (x, g))
    ones = np.ones((1, 1, 1, 3))
    floor = R.sample_grad(U, grid, ones, align_corners=True, subgradient="floor")[1]
    paper = R.sample_grad(U, grid, ones, align_corners=True, subgradient="paper")[1]
    assert np.abs(floor - gg.numpy()).max() < 1e-12
    assert np.all(np.abs(paper - gg.numpy()) > 1e-6)
    # the paper's value: dV/dx = U[y, x] * scale, dV/dy = U[y, x] * scale (at a knot in both)
    for j, (px, py) in enumerate(pix):
        assert abs(paper[0, 0, j, 0] - U[0, 0, py, px] * 2) < 1e-12
