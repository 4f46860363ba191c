"""Tensor-side helpers for pictures: sampling-grid outlines and images ready for display.

No plotting library here: these turn tensors into the numbers the plots draw.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from stnkit._checks import check_shape, check_size, fail

__all__ = ["display_images", "grid_outline", "normalised_to_pixel"]


def normalised_to_pixel(points: Tensor, size: tuple[int, int], *, align_corners: bool) -> Tensor:
    """Normalised (x, y) in [-1, 1] -> pixel (x, y) of an (H, W) image, pixel centres at integers.

    ``align_corners=False``: ``x_pix = ((x + 1) * W - 1) / 2``; ``True``: ``(x + 1) / 2 * (W - 1)``.
    points: (..., 2); returns the same shape.
    """
    H, W = check_size(size, 2, fn="normalised_to_pixel")
    wh = points.new_tensor([W, H])
    if align_corners:
        return (points + 1) / 2 * (wh - 1)
    return ((points + 1) * wh - 1) / 2


def grid_outline(grid: Tensor, input_size: tuple[int, int], *,
                 align_corners: bool = False) -> Tensor:
    """The border of the region a sampling grid reads, in input pixel coordinates.

    The grid holds the source point of every output pixel centre; the outline runs along the
    outer edge of the output pixels (the border centres extended by half a pixel, exact for
    affine grids), so the identity transform outlines the whole input image.

    Args:
        grid: (B, h, w, 2) normalised source coordinates (x, y) (NaN where a projective point
            falls behind the camera; the outline then has gaps).
        input_size: (H, W) of the image the grid samples.
        align_corners: the convention the grid was made with.
    Returns:
        (B, 2 * (h + w) + 1, 2) closed polygon of pixel (x, y) points (the first point is
        repeated at the end), clockwise as displayed, starting at the top-left corner.
    """
    fn = "grid_outline"
    check_shape(grid, ("B", None, None, 2), name="grid", fn=fn)
    size = check_size(input_size, 2, name="input_size", fn=fn)
    g = grid.detach().to(torch.float64)  # (B, h, w, 2)
    g = _extend(_extend(g, dim=1), dim=2)  # (B, h + 2, w + 2, 2)
    # Corners of the output pixels: the mean of the four surrounding centres.
    corners = (g[:, :-1, :-1] + g[:, 1:, :-1] + g[:, :-1, 1:] + g[:, 1:, 1:]) / 4
    # corners: (B, h + 1, w + 1, 2)
    top = corners[:, 0, :-1]  # left to right, (B, w, 2)
    right = corners[:, :-1, -1]  # top to bottom, (B, h, 2)
    bottom = corners[:, -1, 1:].flip(1)  # right to left
    left = corners[:, 1:, 0].flip(1)  # bottom to top
    ring = torch.cat([top, right, bottom, left, corners[:, :1, 0]], dim=1)  # (B, P, 2)
    return normalised_to_pixel(ring, size, align_corners=align_corners).to(torch.float32)


def _extend(g: Tensor, *, dim: int) -> Tensor:
    """Add one linearly extrapolated point before and after along ``dim`` (copies if size 1)."""
    n = g.shape[dim]
    first, last = g.narrow(dim, 0, 1), g.narrow(dim, n - 1, 1)
    if n == 1:
        return torch.cat([first, g, last], dim=dim)
    before = 2 * first - g.narrow(dim, 1, 1)
    after = 2 * last - g.narrow(dim, n - 2, 1)
    return torch.cat([before, g, after], dim=dim)


def display_images(images: Tensor) -> np.ndarray:
    """Images for display: (B, C, H, W) -> uint8 (B, H, W, 3).

    C = 1 grey, C = 2 false colour (channel 0 red, channel 1 green), C = 3 RGB, C = 4 RGB
    (alpha dropped), more channels: their mean in grey. Images in [0, 1] (up to rounding) are
    shown as they are; others are stretched per image from their min to their max.
    """
    fn = "display_images"
    check_shape(images, ("B", "C", "H", "W"), name="images", fn=fn)
    if not images.is_floating_point():
        fail(fn, "images", "to have a floating dtype", images.dtype, error=TypeError)
    x = images.detach().to("cpu", torch.float64).nan_to_num(0.0)
    B, C, H, W = x.shape
    if C == 1:
        rgb = x.expand(B, 3, H, W)
    elif C == 2:
        rgb = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
    elif C in (3, 4):
        rgb = x[:, :3]
    else:
        rgb = x.mean(dim=1, keepdim=True).expand(B, 3, H, W)
    if B > 0 and (rgb.min() < -1e-3 or rgb.max() > 1 + 1e-3):
        lo = rgb.amin(dim=(1, 2, 3), keepdim=True)
        hi = rgb.amax(dim=(1, 2, 3), keepdim=True)
        rgb = (rgb - lo) / (hi - lo).clamp_min(1e-12)
    rgb = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).contiguous().numpy()  # (B, H, W, 3)
