"""Property tests (hypothesis) of grids, warp and transforms."""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stnkit.ops import affine_grid, projective_grid, tps_grid, warp
from stnkit.ops import transforms as T
from stnkit.ops.grids import base_coordinates

F64 = torch.float64
SETTINGS = settings(max_examples=25, deadline=None)

sizes = st.integers(1, 7)
floats = lambda lo, hi: st.floats(lo, hi, allow_nan=False, allow_infinity=False)  # noqa: E731


@st.composite
def affines(draw, scale=(0.5, 0.9)):
    """A zooming-in similarity composed with a small shear: (1, 2, 3) float64."""
    angle = draw(floats(-0.5, 0.5))
    s = draw(floats(*scale))
    tx, ty = draw(floats(-0.1, 0.1)), draw(floats(-0.1, 0.1))
    shx, shy = draw(floats(-0.1, 0.1)), draw(floats(-0.1, 0.1))
    sim = T.similarity(torch.tensor([angle], dtype=F64), s, tx, ty)
    return T.compose(sim, T.shear(torch.tensor([shx], dtype=F64), shy))


@st.composite
def homographies(draw):
    theta = draw(affines(scale=(0.6, 1.2)))
    g, h = draw(floats(-0.3, 0.3)), draw(floats(-0.3, 0.3))
    last = torch.tensor([[[g, h, 1.0]]], dtype=F64)
    return torch.cat([theta, last], dim=1)  # (1, 3, 3)


def _linear_image(size, align_corners, coef):
    """f(u, v[, w]) = c0 + c1 u + c2 v (+ c3 w) at the pixel centres, normalised coordinates.

    Bilinear interpolation reproduces such a function exactly, so every warp of it is exact
    wherever all interpolation taps are inside the image.
    """
    base = base_coordinates(size, align_corners, dtype=F64)  # (P, n + 1): x, y[, z], 1
    values = base[:, :-1] @ torch.tensor(coef[1:], dtype=F64) + coef[0]
    return values.reshape(1, 1, *size)


# --------------------------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(dim=st.sampled_from([2, 3]), shape=st.tuples(sizes, sizes, sizes),
       align_corners=st.booleans(), mode=st.sampled_from(["bilinear", "nearest", "bicubic"]),
       padding_mode=st.sampled_from(["zeros", "border", "reflection"]),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**16))
def test_identity_theta_returns_the_input(dim, shape, align_corners, mode, padding_mode, dtype,
                                          seed):
    # Exact for every mode: the sampler snaps pixel coordinates within a few ulps of a pixel
    # centre onto it, so each output pixel reads exactly one input pixel with weight 1.
    assume(not (mode == "bicubic" and dim == 3))
    size = shape[:dim]
    x = torch.randn(2, 3, *size, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    out = warp(x, T.identity(2, dim=dim, dtype=dtype), mode=mode, padding_mode=padding_mode,
               align_corners=align_corners, backend="torch")
    err = (out - x).abs().max().item()
    assert torch.equal(out, x), f"{err=}"


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dim", [2, 3])
def test_identity_theta_is_bit_exact(dim, align_corners, backend):
    size = (7, 6, 11)[:dim]
    modes = ("bilinear", "nearest", "bicubic")[: 3 if dim == 2 and backend == "torch" else 2]
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(2, 3, *size, dtype=dtype, generator=torch.Generator().manual_seed(0))
        for mode in modes:
            out = warp(x, T.identity(2, dim=dim, dtype=dtype), mode=mode,
                       align_corners=align_corners, backend=backend)
            err = (out - x).abs().max().item()
            assert torch.equal(out, x), f"{dtype} {mode}: {err=}"


# --------------------------------------------------------------------------------------------
# compose
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(a=affines(), b=affines(), in_size=st.tuples(st.integers(6, 12), st.integers(6, 12)),
       mid_size=st.tuples(st.integers(6, 12), st.integers(6, 12)),
       out_size=st.tuples(st.integers(6, 12), st.integers(6, 12)), align_corners=st.booleans(),
       coef=st.tuples(floats(-1, 1), floats(0.5, 1), floats(0.5, 1)))
def test_warp_of_warp_is_warp_of_compose(a, b, in_size, mid_size, out_size, align_corners,
                                         coef):
    # A linear image makes bilinear resampling exact on pixels whose taps are all inside, so
    # the two sides agree to rounding there (tolerance 1e-9 for values of order 1), and both
    # equal f(compose(a, b) p). The other order, compose(b, a), differs by O(0.1) in general.
    kw = {"align_corners": align_corners, "backend": "torch"}
    x = _linear_image(in_size, align_corners, coef)
    two_steps = warp(warp(x, a, size=mid_size, **kw), b, size=out_size, **kw)
    one_step = warp(x, T.compose(a, b), size=out_size, **kw)
    # Pixels whose every tap is inside, on both paths (a tap outside lowers the ones-image).
    ones = torch.ones(1, 1, *in_size, dtype=F64)
    mid_ok = (warp(ones, a, size=mid_size, **kw) > 1 - 1e-12).to(F64)
    mask = (warp(mid_ok, b, size=out_size, **kw) > 1 - 1e-12) & (
        warp(ones, T.compose(a, b), size=out_size, **kw) > 1 - 1e-12)
    assert mask.float().mean() > 0.1, f"too few interior pixels: {mask.sum()}"
    err = (two_steps - one_step)[mask].abs().max().item()
    assert err < 1e-9, f"{err=}"
    grid = affine_grid(T.compose(a, b), out_size, align_corners=align_corners)
    exact = coef[0] + coef[1] * grid[..., 0] + coef[2] * grid[..., 1]  # (1, H, W)
    err = (one_step[:, 0] - exact)[mask[:, 0]].abs().max().item()
    assert err < 1e-9, f"{err=}"


def test_compose_order_matters_for_warps():
    # The property above must be able to fail: with the factors swapped it does.
    a = T.compose(T.similarity(torch.tensor([0.4], dtype=F64), 0.7, 0.1, 0.0),
                  T.shear(torch.tensor([0.1], dtype=F64), 0.0))
    b = T.similarity(torch.tensor([-0.3], dtype=F64), 0.8, -0.1, 0.05)
    x = _linear_image((10, 10), False, (0.0, 1.0, 0.7))
    two_steps = warp(warp(x, a, backend="torch"), b, backend="torch")
    swapped = warp(x, T.compose(b, a), backend="torch")
    centre = (slice(None), slice(None), slice(3, 7), slice(3, 7))
    assert (two_steps - swapped)[centre].abs().max() > 0.01


@SETTINGS
@given(a=homographies(), b=homographies(), align_corners=st.booleans())
def test_projective_compose_on_grids(a, b, align_corners):
    # The grid of compose(a, b) is the grid of b mapped through a (where both w > 0).
    grid_b = projective_grid(b, (5, 6), align_corners=align_corners)  # (1, 5, 6, 2)
    hom = torch.cat([grid_b, torch.ones_like(grid_b[..., :1])], -1)
    uvw = torch.einsum("ij,bhwj->bhwi", a[0], hom)
    ref = torch.where(uvw[..., 2:] > 0, uvw[..., :2] / uvw[..., 2:], torch.nan)
    got = projective_grid(T.compose(a, b), (5, 6), align_corners=align_corners)
    # w_composite = w_b * w_a(grid_b): finite wherever the two-step map is.
    finite = torch.isfinite(ref)
    assert torch.isfinite(got)[finite].all()
    err = (got - ref)[finite].abs().max().item() if finite.any() else 0.0
    assert err < 1e-10, f"{err=}"


# --------------------------------------------------------------------------------------------
# invert, pixel round trips
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(a=affines(scale=(0.3, 2.0)), h=homographies())
def test_invert_round_trips(a, h):
    eye23 = torch.eye(2, 3, dtype=F64)[None]
    for c in (T.compose(a, T.invert(a)), T.compose(T.invert(a), a)):
        assert torch.allclose(c, eye23, atol=1e-12), c
    for c in (T.compose(h, T.invert(h)), T.compose(T.invert(h), h)):
        assert torch.allclose(c, torch.eye(3, dtype=F64)[None], atol=1e-12), c


@SETTINGS
@given(a=affines(scale=(0.3, 2.0)), h=homographies(), align_corners=st.booleans(),
       in_size=st.tuples(st.integers(2, 50), st.integers(2, 50)),
       out_size=st.tuples(st.integers(2, 50), st.integers(2, 50)))
def test_pixel_round_trips(a, h, align_corners, in_size, out_size):
    for theta in (a, h):
        m = T.to_pixel(theta, in_size, out_size, align_corners=align_corners)
        back = T.from_pixel(m, in_size, out_size, align_corners=align_corners)
        err = (back - theta).abs().max().item()
        assert err < 1e-10, f"{err=}"


@SETTINGS
@given(a=affines(), align_corners=st.booleans(),
       in_size=st.tuples(st.integers(2, 30), st.integers(2, 30)),
       out_size=st.tuples(st.integers(2, 30), st.integers(2, 30)),
       px=floats(0, 1), py=floats(0, 1))
def test_to_pixel_maps_source_pixels_to_output_pixels(a, align_corners, in_size, out_size,
                                                      px, py):
    # An output pixel p samples the input at pixel q (via theta); M maps q back to p.
    h_out, w_out = out_size
    p = torch.tensor([px * (w_out - 1), py * (h_out - 1)], dtype=F64)
    scale_out = torch.tensor([w_out, h_out], dtype=F64) - (1 if align_corners else 0)
    norm_p = (2 * p + (0 if align_corners else 1)) / scale_out - 1
    norm_q = a[0, :, :2] @ norm_p + a[0, :, 2]
    scale_in = torch.tensor([in_size[1], in_size[0]], dtype=F64) - (1 if align_corners else 0)
    q = ((norm_q + 1) * scale_in - (0 if align_corners else 1)) / 2
    m = T.to_pixel(a, in_size, out_size, align_corners=align_corners)[0]
    err = (m[:, :2] @ q + m[:, 2] - p).abs().max().item()
    assert err < 1e-9, f"{err=}"


# --------------------------------------------------------------------------------------------
# projective vs affine, TPS identity
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(a=affines(scale=(0.5, 1.5)), align_corners=st.booleans(),
       mode=st.sampled_from(["bilinear", "nearest", "bicubic"]),
       padding_mode=st.sampled_from(["zeros", "border", "reflection"]),
       size=st.tuples(sizes, sizes), seed=st.integers(0, 2**16))
def test_projective_with_last_row_001_equals_affine(a, align_corners, mode, padding_mode, size,
                                                   seed):
    x = torch.randn(1, 2, 6, 5, dtype=F64, generator=torch.Generator().manual_seed(seed))
    h = torch.cat([a, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=F64)], dim=1)
    kw = {"size": size, "mode": mode, "padding_mode": padding_mode,
          "align_corners": align_corners, "backend": "torch"}
    err = (warp(x, h, transform="projective", **kw) - warp(x, a, **kw)).abs().max().item()
    assert err < 1e-12, f"{err=}"


@st.composite
def control_points(draw):
    """K in [3, 12] points in [-1, 1]^2, pairwise >= 0.2 apart, not all on one line.

    Built apart rather than filtered: each point sits in its own cell of a 5 x 5 lattice of
    spacing 0.5 over [-1, 1]^2, jittered by at most 0.15 and clamped to the square, so two
    points differ by >= 0.2 in a coordinate. (Drawing 12 free points and rejecting the close
    ones threw away so many draws that hypothesis's health check failed now and then.)"""
    k = draw(st.integers(3, 12))
    cells = draw(st.lists(st.integers(0, 24), min_size=k, max_size=k, unique=True))
    jitter = draw(st.lists(st.tuples(floats(-0.15, 0.15), floats(-0.15, 0.15)),
                           min_size=k, max_size=k))
    t = torch.tensor([(-1 + 0.5 * (c % 5) + jx, -1 + 0.5 * (c // 5) + jy)
                      for c, (jx, jy) in zip(cells, jitter, strict=True)], dtype=F64).clamp(-1, 1)
    d = torch.cdist(t, t) + 10 * torch.eye(k, dtype=F64)
    assert d.min() >= 0.2 - 1e-12, "the lattice keeps the points apart"
    spread = torch.linalg.svdvals(t - t.mean(0))
    assume(spread[1] >= 0.2)  # far from collinear
    return t


@SETTINGS
@given(dst=control_points(), align_corners=st.booleans(), size=st.tuples(sizes, sizes))
def test_tps_with_src_equal_dst_is_identity(dst, align_corners, size):
    grid = tps_grid(dst[None], size, dst_points=dst, align_corners=align_corners)
    ident = affine_grid(torch.eye(2, 3, dtype=F64)[None], size, align_corners=align_corners)
    err = (grid - ident).abs().max().item()
    assert err < 1e-10, f"{err=}"


@SETTINGS
@given(n=st.integers(2, 5), align_corners=st.booleans(), size=st.tuples(sizes, sizes),
       seed=st.integers(0, 2**16))
def test_tps_default_lattice_identity_warp(n, align_corners, size, seed):
    from stnkit.ops.grids import tps_lattice

    x = torch.randn(1, 2, *size, dtype=F64, generator=torch.Generator().manual_seed(seed))
    src = tps_lattice(n * n, dtype=F64)[None]
    out = warp(x, src, transform="tps", align_corners=align_corners, backend="torch")
    ref = warp(x, T.identity(1, dtype=F64), align_corners=align_corners, backend="torch")
    err = (out - ref).abs().max().item()
    assert err < 1e-9, f"{err=}"


def test_angle_units_are_radians():
    quarter = T.rotation(torch.tensor([math.pi / 2], dtype=F64))
    assert torch.allclose(quarter, torch.tensor([[[0.0, -1, 0], [1, 0, 0]]], dtype=F64),
                          atol=1e-15)

