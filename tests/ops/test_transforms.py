"""theta builders, compose / invert, and the pixel-matrix conversions (checked against OpenCV)."""

import math

import cv2
import numpy as np
import pytest
import torch

from stnkit._checks import StnkitValueError
from stnkit.ops import affine_grid, projective_grid, warp
from stnkit.ops import transforms as T

F64 = torch.float64


def _t(*values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


def _apply(theta, pts):
    """theta (B, n, n+1) affine / (B, 3, 3) projective applied to points (B, P, n)."""
    hom = torch.cat([pts, torch.ones(*pts.shape[:-1], 1, dtype=pts.dtype)], -1)  # (B, P, n+1)
    out = torch.einsum("bij,bpj->bpi", theta, hom)
    return out[..., :-1] / out[..., -1:] if theta.shape[1] == theta.shape[2] else out


def _random_affine(batch, dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.eye(dim, dim + 1, dtype=F64) + 0.3 * torch.randn(batch, dim, dim + 1,
                                                                   generator=g, dtype=F64)


def _random_homography(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.eye(3, dtype=F64) + 0.15 * torch.randn(batch, 3, 3, generator=g, dtype=F64)


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------


def test_builder_matrices():
    a = 0.3
    c, s = math.cos(a), math.sin(a)
    expect = {
        "rotation": (T.rotation(a), [[c, -s, 0], [s, c, 0]]),
        "scaling": (T.scaling(0.5, 2.0), [[0.5, 0, 0], [0, 2.0, 0]]),
        "scaling_iso": (T.scaling(0.5), [[0.5, 0, 0], [0, 0.5, 0]]),
        "translation": (T.translation(0.1, -0.2), [[1, 0, 0.1], [0, 1, -0.2]]),
        "shear": (T.shear(0.1, -0.2), [[1, 0.1, 0], [-0.2, 1, 0]]),
        "attention": (T.attention(0.5, 0.1, -0.2), [[0.5, 0, 0.1], [0, 0.5, -0.2]]),
        "similarity": (T.similarity(a, 2.0, 0.1, -0.2),
                       [[2 * c, -2 * s, 0.1], [2 * s, 2 * c, -0.2]]),
    }
    for name, (got, want) in expect.items():
        want = torch.tensor([want], dtype=torch.float32)
        assert got.shape == (1, 2, 3) and got.dtype == torch.float32, name
        assert torch.allclose(got, want, atol=1e-7), f"{name}: {got}"


def test_identity():
    assert torch.equal(T.identity(), torch.eye(2, 3)[None])
    i3 = T.identity(4, dim=3, dtype=F64)
    assert i3.shape == (4, 3, 4) and i3.dtype == F64 and torch.equal(i3[2], torch.eye(3, 4,
                                                                                     dtype=F64))
    assert T.identity(0).shape == (0, 2, 3)
    i3[0, 0, 0] = 5  # independent storage per sample
    assert i3[1, 0, 0] == 1


def test_similarity_specialises_to_rotation_and_attention():
    a = _t(0.1, -0.7, 2.0)
    assert torch.allclose(T.similarity(a, 1.0, 0.0, 0.0), T.rotation(a), atol=1e-15)
    s, tx, ty = _t(0.5, 1.0, 2.0), _t(0.1, 0.2, 0.3), _t(-0.1, 0.0, 0.4)
    assert torch.allclose(T.similarity(0.0, s, tx, ty).to(F64), T.attention(s, tx, ty),
                          atol=1e-15)


def test_parameters_broadcast_dtype_device_and_gradient():
    angle = _t(0.1, 0.2, 0.3).requires_grad_()
    theta = T.similarity(angle, 0.5, _t(0.0), 0.2)  # (3,), float, (1,), float
    assert theta.shape == (3, 2, 3) and theta.dtype == F64 and theta.device == angle.device
    assert T.rotation(torch.tensor(0.5)).shape == (1, 2, 3)  # 0-d counts as one sample
    params = (_t(0.3, -0.2), _t(0.8, 1.1), _t(0.1, 0.0), _t(-0.2, 0.3))
    params = tuple(p.requires_grad_() for p in params)
    assert torch.autograd.gradcheck(T.similarity, params)
    assert torch.autograd.gradcheck(T.shear, params[:2])
    assert torch.autograd.gradcheck(T.scaling, params[:2])


def test_rotation_turns_content_counter_clockwise_as_displayed():
    # A bright pixel right of centre ends up above the centre after +90 degrees.
    img = torch.zeros(1, 1, 5, 5, dtype=F64)
    img[0, 0, 2, 4] = 1.0  # row 2 (middle), column 4 (right)
    out = warp(img, T.rotation(_t(math.pi / 2)), align_corners=True, backend="torch")
    assert out[0, 0, 0, 2] > 0.999, out  # row 0 (top), column 2 (middle)
    assert out.sum() > 0.999 and out.sum() < 1.001


def test_rotation_matches_opencv_get_rotation_matrix_2d():
    size = 32
    for a in (0.4, -1.2):
        m = T.to_pixel(T.rotation(_t(a)), (size, size), (size, size))[0].numpy()
        c = (size - 1) / 2
        ref = cv2.getRotationMatrix2D((c, c), math.degrees(a), 1.0)
        assert np.abs(m - ref).max() < 1e-12, (m, ref)
    # scaling(s) zooms in by 1 / s about the centre
    m = T.to_pixel(T.scaling(_t(0.5)), (size, size), (size, size))[0].numpy()
    assert np.abs(m - cv2.getRotationMatrix2D((c, c), 0.0, 2.0)).max() < 1e-12


def test_translation_moves_content_by_minus_t():
    img = torch.zeros(1, 1, 1, 8, dtype=F64)
    img[0, 0, 0, 4] = 1.0
    # one pixel = 2 / 8 normalised (align_corners=False); tx = +1 pixel -> content moves left
    out = warp(img, T.translation(_t(0.25), 0.0), backend="torch")
    assert out[0, 0, 0, 3] == 1.0 and out.sum() == 1.0, out


# --------------------------------------------------------------------------------------------
# compose / invert
# --------------------------------------------------------------------------------------------


def test_compose_is_a_then_b_on_points():
    # warp(warp(x, a), b)(p) = x(a(b(p))): the composite maps p to a(b(p)).
    a, b = _random_affine(3, seed=1), _random_affine(3, seed=2)
    pts = torch.rand(3, 10, 2, dtype=F64) * 2 - 1
    err = (_apply(T.compose(a, b), pts) - _apply(a, _apply(b, pts))).abs().max().item()
    assert err < 1e-14, f"{err=}"
    ha, hb = _random_homography(3, 3), _random_homography(3, 4)
    for x, y in ((ha, hb), (a, hb), (ha, b)):
        c = T.compose(x, y)
        assert c.shape == (3, 3, 3)
        err = (_apply(c, pts) - _apply(x, _apply(y, pts))).abs().max().item()
        assert err < 1e-12, f"{err=}"


def test_compose_grid_level_and_3d():
    a, b = _random_affine(2, seed=3), _random_affine(2, seed=4)
    grid_b = affine_grid(b, (4, 5))  # (2, 4, 5, 2)
    ref = torch.einsum("bij,bhwj->bhwi", a[:, :, :2], grid_b) + a[:, None, None, :, 2]
    err = (affine_grid(T.compose(a, b), (4, 5)) - ref).abs().max().item()
    assert err < 1e-14, f"{err=}"
    a3, b3 = _random_affine(2, 3, seed=5), _random_affine(2, 3, seed=6)
    c3 = T.compose(a3, b3)
    assert c3.shape == (2, 3, 4)
    pts = torch.rand(2, 10, 3, dtype=F64) * 2 - 1
    err = (_apply(c3, pts) - _apply(a3, _apply(b3, pts))).abs().max().item()
    assert err < 1e-14, f"{err=}"


def test_compose_identity_and_broadcast():
    a = _random_affine(4)
    assert torch.allclose(T.compose(a, T.identity(1, dtype=F64)), a, atol=0)
    assert torch.allclose(T.compose(T.identity(1, dtype=F64), a), a, atol=0)
    assert T.compose(a[:1], a).shape == (4, 2, 3)


@pytest.mark.parametrize("kind", ["affine", "affine3d", "projective"])
def test_invert_round_trips(kind):
    theta = {"affine": _random_affine(3), "affine3d": _random_affine(3, 3),
             "projective": _random_homography(3)}[kind]
    inv = T.invert(theta)
    assert inv.shape == theta.shape and inv.dtype == theta.dtype
    for c in (T.compose(theta, inv), T.compose(inv, theta)):
        eye = torch.eye(c.shape[1], c.shape[2], dtype=F64).expand_as(c)
        assert torch.allclose(c, eye, atol=1e-12), c
    assert torch.allclose(T.invert(inv), theta, atol=1e-12)
    assert torch.autograd.gradcheck(T.invert, (theta.clone().requires_grad_(),))


def test_invert_half_precision():
    theta = _random_affine(2).to(torch.bfloat16)
    inv = T.invert(theta)
    assert inv.dtype == torch.bfloat16
    ref = T.invert(theta.float()).to(torch.bfloat16)
    assert torch.equal(inv, ref)


# --------------------------------------------------------------------------------------------
# pixel matrices
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("kind", ["affine", "projective", "affine3d"])
def test_pixel_round_trip(kind, align_corners):
    theta = {"affine": _random_affine(3), "affine3d": _random_affine(3, 3),
             "projective": _random_homography(3)}[kind]
    in_size, out_size = ((5, 6, 7), (4, 8, 3)) if kind == "affine3d" else ((20, 30), (16, 12))
    m = T.to_pixel(theta, in_size, out_size, align_corners=align_corners)
    assert m.shape == theta.shape
    back = T.from_pixel(m, in_size, out_size, align_corners=align_corners)
    assert torch.allclose(back, theta, atol=1e-12), (back - theta).abs().max()
    again = T.to_pixel(back, in_size, out_size, align_corners=align_corners)
    assert torch.allclose(again, m, atol=1e-10)


@pytest.mark.parametrize("align_corners", [False, True])
def test_to_pixel_maps_pixel_centres(align_corners):
    # The identity theta between equal sizes is the identity matrix in pixels; between
    # different sizes it maps corner pixel centres (True) / outer edges (False) to each other.
    eye = T.identity(1, dtype=F64)
    m = T.to_pixel(eye, (10, 20), (10, 20), align_corners=align_corners)[0]
    assert torch.allclose(m, torch.eye(2, 3, dtype=F64), atol=1e-14)
    m = T.to_pixel(eye, (10, 20), (5, 40), align_corners=align_corners)[0]
    if align_corners:  # x: 0 -> 0, 19 -> 39; y: 0 -> 0, 9 -> 4
        want = [[39 / 19, 0, 0], [0, 4 / 9, 0]]
    else:  # x: -0.5 -> -0.5, 19.5 -> 39.5; y: -0.5 -> -0.5, 9.5 -> 4.5
        want = [[2, 0, 0.5], [0, 0.5, -0.25]]
    assert torch.allclose(m, torch.tensor(want, dtype=F64), atol=1e-14), m


def _smooth_image(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return (2 + 0.5 * np.sin(2 * np.pi * x / 37 + 0.3) * np.cos(2 * np.pi * y / 29)
            + 0.2 * np.cos(2 * np.pi * (x + y) / 23)).astype(np.float32)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("kind", ["affine", "projective"])
def test_to_pixel_agrees_with_opencv(kind, align_corners):
    h, w, ho, wo = 40, 48, 36, 44
    img = _smooth_image(h, w)
    if kind == "affine":
        theta = T.compose(T.similarity(_t(0.3), 0.8, 0.1, -0.05), T.shear(_t(0.1), -0.05))
        cv_warp = cv2.warpAffine
    else:
        theta = _t(1.0, 0.1, 0.05, 0.05, 0.9, 0.0, 0.1, -0.1, 1.0).reshape(1, 3, 3)
        cv_warp = cv2.warpPerspective
    m = T.to_pixel(theta, (h, w), (ho, wo), align_corners=align_corners)[0].numpy()
    ref = cv_warp(img, m, (wo, ho), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                  borderValue=0)
    x = torch.from_numpy(img)[None, None]
    ours = warp(x, theta.float(), transform=kind, size=(ho, wo), align_corners=align_corners,
                backend="torch")[0, 0].numpy()
    # interior: output pixels whose source lies at least one pixel inside the input
    grid = (affine_grid if kind == "affine" else projective_grid)(
        theta, (ho, wo), align_corners=align_corners)[0].numpy()  # (ho, wo, 2)
    scale = np.array([w - 1, h - 1]) / 2 if align_corners else np.array([w, h]) / 2
    pix = (grid + 1) * scale - (0 if align_corners else 0.5)
    mask = ((pix >= 1) & (pix <= np.array([w - 2, h - 2]))).all(-1)
    assert mask.sum() > 0.5 * mask.size, mask.sum()
    rel = np.abs(ours[mask] - ref[mask]).max() / np.abs(ref[mask]).max()
    assert rel < 1e-3, f"{rel=}"


def test_from_pixel_of_opencv_matrix():
    # An OpenCV rotation about the image centre is our rotation for a square image.
    m = torch.from_numpy(cv2.getRotationMatrix2D((15.5, 15.5), 30.0, 1.0))[None]
    theta = T.from_pixel(m, (32, 32), (32, 32))
    assert torch.allclose(theta, T.rotation(_t(math.radians(30.0))), atol=1e-12), theta
    # ... and for a non-square one it is not a normalised rotation: use from_pixel then.
    theta = T.from_pixel(torch.from_numpy(cv2.getRotationMatrix2D((31.5, 15.5), 30.0, 1.0))[None],
                         (32, 64), (32, 64))
    assert not torch.allclose(theta, T.rotation(_t(math.radians(30.0))), atol=1e-3)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

A = torch.eye(2, 3)[None]
H = torch.eye(3)[None]


@pytest.mark.parametrize("call,error,match", [
    (lambda: T.rotation("0.1"), TypeError,
     r"rotation: expected angle a number or a tensor of shape \(B,\), got str"),
    (lambda: T.rotation(True), TypeError, r"rotation: expected angle a number"),
    (lambda: T.rotation(torch.zeros(2, 2)), ValueError,
     r"rotation: expected angle a number or a tensor of shape \(B,\), got \(2, 2\)"),
    (lambda: T.rotation(torch.tensor([1, 2])), TypeError,
     r"rotation: expected angle to have a floating dtype, got torch.int64"),
    (lambda: T.translation(torch.zeros(2), torch.zeros(3)), ValueError,
     r"translation: expected parameters to share one batch size B \(or 1\), got tx: 2, ty: 3"),
    (lambda: T.scaling(torch.ones(2), torch.ones(2, dtype=F64)), TypeError,
     r"scaling: expected sy to have the same dtype as sx \(torch.float32\), got torch.float64"),
    (lambda: T.shear(torch.ones(2), torch.ones(2, device="meta")), ValueError,
     r"shear: expected sy to be on the same device as sx \(cpu\), got meta"),
    (lambda: T.identity(2.0), TypeError, r"identity: expected batch an int, got 2.0"),
    (lambda: T.identity(-1), ValueError, r"identity: expected batch an int in \[0, 2\*\*31\) .*, got -1"),
    (lambda: T.identity(2**40), ValueError, r"identity: expected batch an int in \[0, 2\*\*31\) .*, got 1099511627776"),
    (lambda: T.identity(dim=4), ValueError, r"identity: expected dim 2 or 3, got 4"),
    (lambda: T.identity(dtype=torch.int64), TypeError,
     r"identity: expected dtype a floating dtype, got torch.int64"),
    (lambda: T.compose(torch.zeros(1, 2, 2), A), ValueError,
     r"compose: expected a of shape \(B, 2, 3\), \(B, 3, 3\) or \(B, 3, 4\), got \(1, 2, 2\)"),
    (lambda: T.compose(A, torch.eye(3, 4)[None]), ValueError,
     r"compose: expected b a 2-D theta like a \(1, 2, 3\), got \(1, 3, 4\)"),
    (lambda: T.compose(A, A.double()), TypeError,
     r"compose: expected b to have the same dtype as a \(torch.float32\)"),
    (lambda: T.compose(A.expand(2, 2, 3), A.expand(3, 2, 3)), ValueError,
     r"compose: expected b to have batch size 2 \(or 1\) like a, got 3"),
    (lambda: T.compose(A, A.to("meta")), ValueError,
     r"compose: expected b to be on the same device as a \(cpu\), got meta"),
    (lambda: T.compose(A.long(), A), TypeError,
     r"compose: expected a to have a floating dtype, got torch.int64"),
    (lambda: T.invert(torch.zeros(1, 2, 3)), ValueError,
     r"invert: expected theta to be invertible, got a singular matrix at batch index 0"),
    (lambda: T.invert(torch.cat([A, torch.tensor([[[1.0, 2.0, 0.0], [2.0, 4.0, 1.0]]])])),
     ValueError, r"invert: expected theta to be invertible, got a singular matrix at batch "
                 r"index 1"),
    (lambda: T.invert(torch.zeros(2, 3, 3)), ValueError,
     r"invert: expected theta to be invertible, got a singular matrix at batch index 0"),
    (lambda: T.invert(torch.full((1, 2, 3), math.nan)), ValueError,
     r"invert: expected theta to be finite, got NaN or Inf"),
    (lambda: T.invert(torch.zeros(1, 4, 4)), ValueError,
     r"invert: expected theta of shape \(B, 2, 3\), \(B, 3, 3\) or \(B, 3, 4\), got \(1, 4, 4\)"),
    (lambda: T.to_pixel(A, (4, 4, 4), (4, 4)), ValueError,
     r"to_pixel: expected in_size to have 2 entries, got 3"),
    (lambda: T.to_pixel(A, (4, 4), (0, 4)), ValueError,
     r"to_pixel: expected out_size to contain positive ints, got \(0, 4\)"),
    (lambda: T.to_pixel(A, (4, 1), (4, 4), align_corners=True), ValueError,
     r"to_pixel: expected in_size entries >= 2 when align_corners=True"),
    (lambda: T.to_pixel(A, (4, 4), (4, 4), align_corners=1), TypeError,
     r"to_pixel: expected align_corners a bool, got 1"),
    (lambda: T.to_pixel(torch.zeros(1, 2, 3), (4, 4), (4, 4)), ValueError,
     r"to_pixel: expected theta to be invertible"),
    (lambda: T.to_pixel(torch.eye(2, 3), (4, 4), (4, 4)), ValueError,
     r"to_pixel: expected theta of shape \(B, 2, 3\), \(B, 3, 3\) or \(B, 3, 4\), got \(2, 3\)"),
    (lambda: T.from_pixel(torch.zeros(1, 3, 3), (4, 4), (4, 4)), ValueError,
     r"from_pixel: expected matrix to be invertible"),
    (lambda: T.from_pixel(H, (4, 4), (4, 4, 4)), ValueError,
     r"from_pixel: expected out_size to have 2 entries, got 3"),
    (lambda: T.from_pixel(H.numpy(), (4, 4), (4, 4)), TypeError,
     r"from_pixel: expected matrix to be a torch.Tensor, got ndarray"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Pixel-space builders (what `stnkit warp` uses) and the one invertibility check
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("center,deg,scale", [((5.5, 4.5), 30.0, 1.0), ((0.0, 17.25), -75.0, 1.3),
                                              ((100.0, -3.0), 190.0, 0.25)])
def test_pixel_rotation_is_get_rotation_matrix_2d(center, deg, scale):
    ours = T.pixel_rotation(center, _t(deg), scale)[0].numpy()
    ref = cv2.getRotationMatrix2D(center, deg, scale)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [(37, 53), (48, 31), (1, 9)])
def test_pixel_affine_without_shear_is_rotation_about_the_centre(size):
    h, w = size
    ours = T.pixel_affine(size, degrees=-40.0, scale=1.3, dtype=F64)
    assert ours.shape == (1, 2, 3) and ours.dtype == F64
    ref = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -40.0, 1.3)
    np.testing.assert_allclose(ours[0].numpy(), ref, rtol=0, atol=1e-12)


def test_pixel_affine_order_shear_scale_rotate_translate():
    """Built independently in NumPy: T(c_out + t) R S Sh T(-c_in)."""
    (h, w), (ho, wo) = (40, 56), (50, 45)
    deg, s, (tx, ty), (sx, sy) = 25.0, 0.8, (3.0, -2.5), (0.2, -0.1)
    c_in = np.array([(w - 1) / 2, (h - 1) / 2])
    c_out = np.array([(wo - 1) / 2, (ho - 1) / 2])
    a = math.radians(deg)
    lin = s * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) \
        @ np.array([[1, sx], [sy, 1]])
    ref = np.hstack([lin, (c_out + [tx, ty] - lin @ c_in)[:, None]])
    ours = T.pixel_affine((h, w), (ho, wo), degrees=deg, scale=s, translate=(tx, ty),
                          shear=(sx, sy), dtype=F64)[0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    # the input centre lands on the output centre plus the translation
    np.testing.assert_allclose(ours[:, :2] @ c_in + ours[:, 2], c_out + [tx, ty], atol=1e-12)


def test_pixel_affine_batches_and_differentiates():
    deg = torch.tensor([10.0, -20.0, 33.0], dtype=F64, requires_grad=True)
    m = T.pixel_affine((12, 20), degrees=deg, scale=0.9, translate=(1.0, 2.0))
    assert m.shape == (3, 2, 3) and m.dtype == F64
    for i in range(3):
        one = T.pixel_affine((12, 20), degrees=deg[i].item(), scale=0.9, translate=(1.0, 2.0),
                             dtype=F64)
        torch.testing.assert_close(m[i:i + 1], one, rtol=0, atol=1e-12)
    m.sum().backward()
    assert deg.grad is not None and torch.isfinite(deg.grad).all()


def test_compose_pixels_applies_first_then_second():
    first = T.pixel_affine((30, 40), degrees=30.0, scale=1.2, shear=(0.1, 0.0), dtype=F64)
    second = torch.tensor([[[1.0, 0.2, 3.0], [0.1, 0.9, -4.0], [1e-3, 2e-3, 1.0]]], dtype=F64)
    pts = torch.tensor([[[0.0, 0.0], [39.0, 29.0], [12.5, 7.0]]], dtype=F64)
    expected = _apply(second, _apply(first, pts))
    got = T.compose_pixels(first, second)
    assert got.shape == (1, 3, 3)
    torch.testing.assert_close(_apply(got, pts), expected, rtol=0, atol=1e-9)
    affine = T.compose_pixels(first, first)
    assert affine.shape == (1, 2, 3)
    torch.testing.assert_close(_apply(affine, pts), _apply(first, _apply(first, pts)),
                               rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=r"compose_pixels: expected first a 2-D matrix like "
                                         r"second \(1, 2, 3\), got \(1, 3, 4\)"):
        T.compose_pixels(torch.zeros(1, 3, 4, dtype=F64), first)


def test_check_invertible_names_the_argument_and_ignores_translation():
    T.check_invertible(torch.tensor([[[2.0, 0.0, 1e9], [0.0, 3.0, -1e9]]], dtype=F64))
    T.check_invertible(torch.eye(3, dtype=F64)[None])
    with pytest.raises(StnkitValueError,
                       match=r"^warp cli: expected --matrix to be invertible, got a singular "
                             r"matrix at batch index 1"):
        T.check_invertible(torch.stack([torch.eye(2, 3, dtype=F64),
                                        torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]],
                                                     dtype=F64)]), name="--matrix", fn="warp cli")
    with pytest.raises(ValueError, match=r"expected matrix to be finite"):
        T.check_invertible(torch.full((1, 3, 3), float("nan")))
    with pytest.raises(ValueError, match=r"expected matrix of shape"):
        T.check_invertible(torch.eye(2)[None])
