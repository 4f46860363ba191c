"""Grid generators: values and gradients against PyTorch and closed forms, TPS properties,
validation."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from stnkit.ops import affine_grid, projective_grid, tps_grid
from stnkit.ops.grids import base_coordinates, tps_lattice

F64 = torch.float64
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _theta(batch, dim, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(dim, dim + 1, dtype=dtype)
    return eye + 0.3 * torch.randn(batch, dim, dim + 1, generator=g, dtype=dtype)


def _homography(batch, dtype=F64, seed=0, strength=0.2):
    g = torch.Generator().manual_seed(seed)
    return torch.eye(3, dtype=dtype) + strength * torch.randn(batch, 3, 3, generator=g,
                                                              dtype=dtype)


def _max_err(a, b):
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------------------------
# affine
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(5, 7), (1, 4), (3, 1), (4, 5, 6), (1, 3, 2)])
def test_affine_matches_torch_value_and_gradient(size, align_corners, dtype):
    dim = len(size)
    theta = _theta(3, dim, dtype).requires_grad_()
    ref_theta = theta.detach().clone().requires_grad_()
    grid = affine_grid(theta, size, align_corners=align_corners)
    with warnings.catch_warnings():
        # PyTorch warns about unit sizes with align_corners=True (its values are still ours:
        # a size-1 axis sits at 0).
        warnings.simplefilter("ignore", UserWarning)
        ref = F.affine_grid(ref_theta, (3, 1, *size), align_corners=align_corners)
    assert grid.shape == (3, *size, dim) and grid.dtype == dtype
    err = _max_err(grid, ref)
    assert err <= TOL[dtype], f"{err=}"
    g = torch.randn(grid.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    grid.backward(g)
    ref.backward(g)
    err = _max_err(theta.grad, ref_theta.grad)
    assert err <= TOL[dtype] * max(1.0, ref_theta.grad.abs().max().item()), f"{err=}"


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(3, 4), (2, 3, 4)])
def test_affine_gradcheck(size, align_corners):
    theta = _theta(2, len(size), F64).requires_grad_()
    fn = lambda t: affine_grid(t, size, align_corners=align_corners)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (theta,))
    assert torch.autograd.gradgradcheck(fn, (theta,))


def test_base_coordinates_are_pixel_centres():
    # align_corners=False: (2 i + 1) / N - 1; True: 2 i / (N - 1) - 1; x fastest.
    b = base_coordinates((2, 4), False, dtype=F64)  # (8, 3)
    xs = torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=F64)
    assert torch.allclose(b[:4, 0], xs, atol=1e-15)
    assert torch.allclose(b[:, 1], torch.tensor([-0.5] * 4 + [0.5] * 4, dtype=F64), atol=1e-15)
    assert torch.equal(b[:, 2], torch.ones(8, dtype=F64))
    b = base_coordinates((3, 2), True, dtype=F64)
    assert torch.allclose(b[:, 0], torch.tensor([-1.0, 1.0] * 3, dtype=F64), atol=1e-15)
    assert torch.allclose(b[::2, 1], torch.tensor([-1.0, 0.0, 1.0], dtype=F64), atol=1e-15)


# --------------------------------------------------------------------------------------------
# projective
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [False, True])
def test_projective_matches_closed_form(align_corners):
    h = _homography(2)
    grid = projective_grid(h, (4, 5), align_corners=align_corners)
    base = base_coordinates((4, 5), align_corners, dtype=F64)  # (20, 3)
    uvw = torch.einsum("bij,pj->bpi", h, base)
    ref = (uvw[..., :2] / uvw[..., 2:]).reshape(2, 4, 5, 2)
    assert (uvw[..., 2] > 0).all()
    err = _max_err(grid, ref)
    assert err <= 1e-12, f"{err=}"


@pytest.mark.parametrize("align_corners", [False, True])
def test_projective_with_affine_last_row_equals_affine(align_corners):
    theta = _theta(3, 2, F64)
    h = torch.cat([theta, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=F64).expand(3, 1, 3)], 1)
    err = _max_err(projective_grid(h, (6, 5), align_corners=align_corners),
                   affine_grid(theta, (6, 5), align_corners=align_corners))
    assert err <= 1e-14, f"{err=}"


@pytest.mark.parametrize("align_corners", [False, True])
def test_projective_gradcheck(align_corners):
    h = _homography(2).requires_grad_()
    fn = lambda t: projective_grid(t, (3, 4), align_corners=align_corners)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (h,))
    assert torch.autograd.gradgradcheck(fn, (h,))


def test_projective_behind_camera_is_nan_with_zero_gradient():
    # w = -x + 0.1: positive only for x < 0.1; the other half of the image is behind.
    h = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.1]]], dtype=F64,
                     requires_grad=True)
    grid = projective_grid(h, (3, 6), align_corners=True)
    xs = torch.linspace(-1, 1, 6, dtype=F64)
    behind = (0.1 - xs) <= 0
    assert torch.isnan(grid[0, :, behind]).all()
    assert torch.isfinite(grid[0, :, ~behind]).all()
    # The gradient equals the one of the front points alone, even with a NaN upstream there.
    g = torch.ones_like(grid)
    g[0, :, behind] = torch.nan
    (grad,) = torch.autograd.grad(grid, h, g)
    assert torch.isfinite(grad).all()
    front = projective_grid(h, (3, 6), align_corners=True)[0, :, ~behind]
    (ref,) = torch.autograd.grad(front.sum(), h)
    assert torch.allclose(grad, ref, atol=1e-12), f"{grad=} {ref=}"


def test_projective_w_exactly_zero_is_nan():
    h = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]], dtype=F64)
    grid = projective_grid(h, (1, 3), align_corners=True)  # x = -1, 0, 1 -> w = -1, 0, 1
    assert torch.isnan(grid[0, 0, :2]).all() and torch.isfinite(grid[0, 0, 2]).all()


# --------------------------------------------------------------------------------------------
# TPS
# --------------------------------------------------------------------------------------------


def test_tps_lattice_layout():
    pts = tps_lattice(9, dtype=F64)
    assert pts.shape == (9, 2)
    assert torch.equal(pts[1], torch.tensor([0.0, -1.0], dtype=F64))  # x fastest
    assert torch.equal(pts[3], torch.tensor([-1.0, 0.0], dtype=F64))
    assert torch.equal(pts[8], torch.tensor([1.0, 1.0], dtype=F64))


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("k", [4, 16, 25])
def test_tps_identity_default_lattice(k, align_corners):
    src = tps_lattice(k, dtype=F64)[None].expand(2, k, 2)
    grid = tps_grid(src, (7, 9), align_corners=align_corners)
    ident = affine_grid(torch.eye(2, 3, dtype=F64)[None].expand(2, 2, 3), (7, 9),
                        align_corners=align_corners)
    err = _max_err(grid, ident)
    assert err <= 1e-10, f"{err=}"


@pytest.mark.parametrize("align_corners", [False, True])
def test_tps_identity_custom_dst(align_corners):
    dst = torch.rand(10, 2, dtype=F64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    grid = tps_grid(dst[None], (6, 8), dst_points=dst, align_corners=align_corners)
    ident = affine_grid(torch.eye(2, 3, dtype=F64)[None], (6, 8), align_corners=align_corners)
    err = _max_err(grid, ident)
    assert err <= 1e-10, f"{err=}"


def test_tps_reproduces_affine_maps():
    # TPS reproduces affine functions exactly: src = A dst + t gives the affine grid of (A, t).
    theta = _theta(2, 2, F64)
    dst = tps_lattice(16, dtype=F64)
    src = torch.einsum("bij,kj->bki", theta[:, :, :2], dst) + theta[:, None, :, 2]
    err = _max_err(tps_grid(src, (5, 6)), affine_grid(theta, (5, 6)))
    assert err <= 1e-10, f"{err=}"


def test_tps_interpolates_default_lattice_exactly():
    # With align_corners=True and size (4, 4) the output pixel centres are the 4 x 4 lattice.
    src = tps_lattice(16, dtype=F64)[None] + 0.2 * torch.randn(
        3, 16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    grid = tps_grid(src, (4, 4), align_corners=True)  # (3, 4, 4, 2)
    err = _max_err(grid.reshape(3, 16, 2), src)
    assert err <= 1e-10, f"{err=}"


@pytest.mark.parametrize("align_corners", [False, True])
def test_tps_interpolates_custom_dst_exactly(align_corners):
    # dst = some output pixel centres; the grid there must be src.
    size = (7, 9)
    base = base_coordinates(size, align_corners, dtype=F64)[:, :2]  # (63, 2)
    idx = torch.tensor([0, 5, 13, 22, 30, 41, 47, 55, 62])
    dst = base[idx]
    src = dst[None] + 0.3 * torch.randn(2, 9, 2, dtype=F64,
                                       generator=torch.Generator().manual_seed(2))
    grid = tps_grid(src, size, dst_points=dst, align_corners=align_corners)
    err = _max_err(grid.reshape(2, -1, 2)[:, idx], src)
    assert err <= 1e-10, f"{err=}"


@pytest.mark.parametrize("align_corners", [False, True])
def test_tps_gradcheck(align_corners):
    src = (tps_lattice(9, dtype=F64)[None] + 0.1 * torch.randn(
        2, 9, 2, dtype=F64, generator=torch.Generator().manual_seed(0))).requires_grad_()
    fn = lambda s: tps_grid(s, (4, 5), align_corners=align_corners)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (src,))
    assert torch.autograd.gradgradcheck(fn, (src,))
    dst = torch.tensor([[-0.9, -0.8], [0.7, -0.6], [0.1, 0.9], [0.5, 0.4], [-0.3, 0.2]],
                       dtype=F64)
    src5 = (dst[None] + 0.1).requires_grad_()
    fn5 = lambda s: tps_grid(s, (3, 4), dst_points=dst, align_corners=align_corners)  # noqa: E731
    assert torch.autograd.gradcheck(fn5, (src5,))


def test_tps_cache_is_keyed_by_dst_values():
    dst = tps_lattice(9, dtype=F64) * 0.8
    src = tps_lattice(9, dtype=F64)[None]
    first = tps_grid(src, (5, 5), dst_points=dst)
    again = tps_grid(src, (5, 5), dst_points=dst.clone())
    assert torch.equal(first, again)
    dst.mul_(0.5)  # a mutated dst must not reuse the old matrix
    moved = tps_grid(src, (5, 5), dst_points=dst)
    fresh = tps_grid(src, (5, 5), dst_points=dst.clone() + 0.0)
    assert torch.equal(moved, fresh) and not torch.allclose(moved, first)
    # Other sizes / align_corners / dtypes get their own matrices.
    assert tps_grid(src, (5, 5), dst_points=dst, align_corners=True).shape == (1, 5, 5, 2)
    assert tps_grid(src.float(), (4, 6), dst_points=dst.float()).dtype == torch.float32


# --------------------------------------------------------------------------------------------
# shared behaviour: batch, empty batch, non-contiguous, dtype, no mutation
# --------------------------------------------------------------------------------------------


def _cases():
    lat = tps_lattice(9, dtype=F64)
    return [
        ("affine2d", lambda t: affine_grid(t, (4, 5)), _theta(3, 2, F64)),
        ("affine3d", lambda t: affine_grid(t, (2, 3, 4), align_corners=True), _theta(3, 3, F64)),
        ("projective", lambda t: projective_grid(t, (4, 5)), _homography(3)),
        ("tps", lambda t: tps_grid(t, (4, 5)), lat[None] + 0.1 * torch.randn(
            3, 9, 2, dtype=F64, generator=torch.Generator().manual_seed(5))),
    ]


@pytest.mark.parametrize("name,fn,theta", _cases(), ids=[c[0] for c in _cases()])
def test_batch_empty_noncontiguous_no_mutation(name, fn, theta):
    before = theta.clone()
    full = fn(theta)
    assert torch.equal(theta, before), "input mutated"
    singles = torch.cat([fn(theta[i:i + 1]) for i in range(theta.shape[0])])
    assert torch.allclose(full, singles, atol=1e-14, rtol=0)
    empty = fn(theta[:0])
    assert empty.shape == (0, *full.shape[1:]) and empty.dtype == F64
    # non-contiguous: a transposed copy viewed back
    nc = theta.transpose(1, 2).contiguous().transpose(1, 2)
    assert not nc.is_contiguous()
    assert torch.equal(fn(nc), full)
    # float32 keeps float32
    assert fn(theta.float()).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,fn,theta", _cases(), ids=[c[0] for c in _cases()])
def test_half_precision_is_computed_in_float32(name, fn, theta, dtype):
    low = theta.to(dtype).requires_grad_()
    grid = fn(low)
    assert grid.dtype == dtype
    ref = fn(low.detach().float())
    assert torch.equal(grid, ref.to(dtype))
    grid.float().sum().backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad).all()


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

T23 = torch.zeros(2, 2, 3)
H33 = torch.eye(3).expand(2, 3, 3)
SRC = tps_lattice(16)[None]


@pytest.mark.parametrize("call,error,match", [
    (lambda: affine_grid(T23.numpy(), (3, 3)), TypeError,
     r"affine_grid: expected theta to be a torch.Tensor, got ndarray"),
    (lambda: affine_grid(torch.zeros(2, 3, 3), (3, 3)), ValueError,
     r"affine_grid: expected theta of shape \(B, 2, 3\) or \(B, 3, 4\), got \(2, 3, 3\)"),
    (lambda: affine_grid(torch.zeros(2, 3), (3, 3)), ValueError,
     r"expected theta of shape \(B, 2, 3\) or \(B, 3, 4\), got \(2, 3\)"),
    (lambda: affine_grid(T23.long(), (3, 3)), TypeError,
     r"affine_grid: expected theta to have a floating dtype, got torch.int64"),
    (lambda: affine_grid(T23, (3, 3, 3)), ValueError,
     r"affine_grid: expected size to have 2 entries, got 3"),
    (lambda: affine_grid(torch.zeros(2, 3, 4), (3, 3)), ValueError,
     r"affine_grid: expected size to have 3 entries, got 2"),
    (lambda: affine_grid(T23, (3, 0)), ValueError,
     r"affine_grid: expected size to contain positive ints, got \(3, 0\)"),
    (lambda: affine_grid(T23, (3, -2)), ValueError, r"expected size to contain positive ints"),
    (lambda: affine_grid(T23, (3.0, 2)), TypeError, r"expected size to contain ints"),
    (lambda: affine_grid(T23, 3), TypeError, r"expected size a sequence of 2 positive ints"),
    (lambda: affine_grid(T23, (3, 3), align_corners=None), TypeError,
     r"affine_grid: expected align_corners a bool, got None"),
    (lambda: projective_grid(T23, (3, 3)), ValueError,
     r"projective_grid: expected theta of shape \(B, 3, 3\), got \(2, 2, 3\)"),
    (lambda: projective_grid(H33.int(), (3, 3)), TypeError,
     r"projective_grid: expected theta to have a floating dtype, got torch.int32"),
    (lambda: projective_grid(H33, (3,)), ValueError,
     r"projective_grid: expected size to have 2 entries, got 1"),
    (lambda: tps_grid(torch.zeros(1, 16, 3), (3, 3)), ValueError,
     r"tps_grid: expected src_points of shape \(B, K, 2\), got \(1, 16, 3\)"),
    (lambda: tps_grid(SRC.long(), (3, 3)), TypeError,
     r"tps_grid: expected src_points to have a floating dtype, got torch.int64"),
    (lambda: tps_grid(SRC[:, :15], (3, 3)), ValueError,
     r"tps_grid: expected src_points with a perfect square K >= 4 .* got K = 15"),
    (lambda: tps_grid(SRC[:, :1], (3, 3)), ValueError, r"perfect square K >= 4 .* got K = 1"),
    (lambda: tps_grid(SRC, (3, 3), dst_points=tps_lattice(9)), ValueError,
     r"tps_grid: expected dst_points of shape \(16, 2\), got \(9, 2\)"),
    (lambda: tps_grid(SRC, (3, 3), dst_points=tps_lattice(16).int()), TypeError,
     r"tps_grid: expected dst_points to have a floating dtype, got torch.int32"),
    (lambda: tps_grid(SRC, (3, 3), dst_points=tps_lattice(16, device="meta")), ValueError,
     r"tps_grid: expected dst_points to be on the same device as src_points \(cpu\), got meta"),
    (lambda: tps_grid(SRC, (3, 3), dst_points=torch.cat([tps_lattice(16)[:15],
                                                        tps_lattice(16)[:1]])), ValueError,
     r"tps_grid: expected dst_points to be distinct points .*dst_points\[0\] == dst_points\[15\]"),
    (lambda: tps_grid(SRC[:, :4], (3, 3), dst_points=torch.tensor(
        [[0.0, 0.0], [0.1, 0.1], [0.5, 0.5], [-1.0, -1.0]])), ValueError,
     r"tps_grid: expected dst_points not all on one line"),
    (lambda: tps_grid(SRC[:, :4], (3, 3), dst_points=torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [math.nan, 0.0]])), ValueError,
     r"tps_grid: expected dst_points to be finite, got NaN or Inf"),
    (lambda: tps_grid(SRC, (3, 3, 3)), ValueError, r"tps_grid: expected size to have 2 entries"),
    (lambda: tps_lattice(8), ValueError, r"tps_lattice: expected k a perfect square >= 4, got 8"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_tps_near_duplicate_dst_is_singular():
    dst = tps_lattice(4, dtype=F64).clone()
    dst = torch.cat([dst, dst[:1] + 1e-9])  # 5 points, two 1e-9 apart
    with pytest.raises(ValueError, match=r"tps_grid: expected dst_points in general position "
                                         r"\(the TPS system is singular\), got a system with "
                                         r"condition number"):
        tps_grid(dst[None], (3, 3), dst_points=dst)
