"""Outlines of sampling grids and images prepared for display."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stnkit.ops import affine_grid, projective_grid, tps_grid, transforms
from stnkit.viz import display_images, grid_outline, normalised_to_pixel


def corners(outline: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The four corners of an outline of an (h, w) grid: top-left, top-right, bottom-right,
    bottom-left (indices 0, w, w + h, 2w + h)."""
    return outline[[0, w, w + h, 2 * w + h]]


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("size_out", [(5, 7), (12, 3)])
def test_identity_outlines_the_whole_input(align, size_out):
    """Whatever the output size, the identity reads the whole input: its outline is the
    image's frame, the outer edges of the corner pixels."""
    H, W = 9, 14
    h, w = size_out
    grid = affine_grid(transforms.identity(1), size_out, align_corners=align)
    out = grid_outline(grid, (H, W), align_corners=align)[0]
    assert out.shape == (2 * (h + w) + 1, 2)
    assert torch.equal(out[0], out[-1]), "the polygon is closed"
    expected = torch.tensor([[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]])
    if align:  # -1 and 1 are corner pixel centres: the output pixels' outer edges reach
        # half an output pixel further, i.e. (W - 1) / (w - 1) / 2 input pixels.
        ex, ey = (W - 1) / (w - 1) / 2, (H - 1) / (h - 1) / 2
        expected = torch.tensor([[-ex, -ey], [W - 1 + ex, -ey], [W - 1 + ex, H - 1 + ey],
                                 [-ex, H - 1 + ey]])
    torch.testing.assert_close(corners(out, h, w), expected, atol=1e-5, rtol=0)


def test_attention_outline_is_the_attended_box():
    """theta = [[s, 0, tx], [0, s, ty]] reads the box [tx - s, tx + s] x [ty - s, ty + s]."""
    H, W = 20, 30
    s, tx, ty = 0.5, 0.2, -0.3
    grid = affine_grid(transforms.attention(s, tx, ty), (10, 10))
    out = grid_outline(grid, (H, W))[0]
    to_px = lambda x, n: ((x + 1) * n - 1) / 2  # noqa: E731
    x0, x1 = to_px(tx - s, W), to_px(tx + s, W)
    y0, y1 = to_px(ty - s, H), to_px(ty + s, H)
    expected = torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=torch.float32)
    torch.testing.assert_close(corners(out, 10, 10), expected, atol=1e-4, rtol=0)
    # every outline point lies on the box's border
    on_x = torch.isclose(out[:, 0], torch.tensor(x0)) | torch.isclose(out[:, 0], torch.tensor(x1))
    on_y = torch.isclose(out[:, 1], torch.tensor(y0)) | torch.isclose(out[:, 1], torch.tensor(y1))
    assert bool((on_x | on_y).all())


def test_rotation_outline_corners_are_rotated_frame_corners():
    """A 90-degree rotation of a square: the frame maps onto itself, corners cycled."""
    grid = affine_grid(transforms.rotation(math.pi / 2), (8, 8))
    out = grid_outline(grid, (8, 8))[0]
    got = corners(out, 8, 8)
    frame = {(-0.5, -0.5), (7.5, -0.5), (7.5, 7.5), (-0.5, 7.5)}
    assert {tuple(round(v, 4) for v in p) for p in got.tolist()} == frame
    assert not torch.allclose(got[0], torch.tensor([-0.5, -0.5])), "rotated, not identity"


def test_tps_identity_and_projective_with_points_behind_the_camera():
    from stnkit.ops.grids import tps_lattice

    grid = tps_grid(tps_lattice(16, dtype=torch.float32)[None], (6, 6))  # the identity
    out = grid_outline(grid, (12, 12))[0]
    torch.testing.assert_close(corners(out, 6, 6), torch.tensor(
        [[-0.5, -0.5], [11.5, -0.5], [11.5, 11.5], [-0.5, 11.5]]), atol=1e-4, rtol=0)
    # w = 2 x + 1 <= 0 on the left part of the output: those points are NaN in the grid
    theta = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [2.0, 0, 1]]])
    g = projective_grid(theta, (6, 6))
    out = grid_outline(g, (10, 10))[0]
    assert torch.isnan(out).any() and torch.isfinite(out).any()


def test_outline_bad_input():
    with pytest.raises(ValueError, match=r"grid_outline: expected grid of shape \(B, \*, \*, 2\)"):
        grid_outline(torch.zeros(1, 4, 4, 3), (4, 4))
    with pytest.raises(ValueError, match=r"grid_outline: expected input_size to contain positive"):
        grid_outline(torch.zeros(1, 4, 4, 2), (0, 4))


@pytest.mark.parametrize("align", [False, True])
def test_normalised_to_pixel_matches_grid_sample_convention(align):
    """The pixel a normalised point lands on, checked by sampling an index image."""
    H, W = 5, 9
    index = torch.arange(H * W, dtype=torch.float64).reshape(1, 1, H, W)
    pts = torch.tensor([[-0.6, 0.3], [0.25, -0.75], [0.0, 0.0]], dtype=torch.float64)
    px = normalised_to_pixel(pts, (H, W), align_corners=align).round()
    grid = pts[None, None]  # (1, 1, 3, 2)
    # nearest sampling returns the index of the pixel whose centre is closest
    got = torch.nn.functional.grid_sample(index, grid, mode="nearest", align_corners=align)[0, 0, 0]
    assert got.tolist() == (px[:, 1] * W + px[:, 0]).tolist()


def test_display_images_channels_and_ranges():
    x = torch.rand(2, 1, 4, 5)
    out = display_images(x)
    assert out.shape == (2, 4, 5, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    two = display_images(torch.rand(1, 2, 3, 3))
    assert (two[..., 2] == 0).all()  # channel 0 red, channel 1 green
    four = display_images(torch.rand(1, 4, 3, 3))
    assert four.shape == (1, 3, 3, 3)
    many = display_images(torch.full((1, 6, 2, 2), 0.5))
    assert (many == 128).all()
    feat = display_images(torch.tensor([[[[-3.0, 1.0], [5.0, 1.0]]]]))  # stretched min..max
    assert feat[0, :, :, 0].tolist() == [[0, 128], [255, 128]]
    with pytest.raises(TypeError, match=r"display_images: expected images to have a floating"):
        display_images(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"display_images: expected images of shape"):
        display_images(torch.zeros(2, 2))
