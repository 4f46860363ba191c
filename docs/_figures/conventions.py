"""The pictures of the "Coordinate convention" page, drawn at build time with stnkit itself.

Matplotlib's plot directive runs this file and then one of its functions per picture
(``.. plot:: _figures/conventions.py align_corners``), so every picture shows what the code
does today. ``python docs/_figures/conventions.py OUT_DIR`` writes them all as PNG files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.cbook import get_sample_data

from stnkit import ops
from stnkit.ops import transforms as T
from stnkit.viz import grid_outline, read_image

ACCENT = "#d62728"


def photo(size: int = 96) -> torch.Tensor:
    """A (1, 3, size, size * 600 // 512) photograph: Grace Hopper, shipped with matplotlib."""
    with get_sample_data("grace_hopper.jpg") as f:
        image = read_image(f.name)  # (3, 600, 512) float in [0, 1]
    h, w = image.shape[1:]
    theta = T.identity(1)
    return ops.warp(image[None], theta, size=(size * h // w, size))


def show(ax, image: torch.Tensor, title: str = "") -> None:
    """Draw a (1, C, H, W) image with pixel centres at integer coordinates."""
    array = image[0].permute(1, 2, 0).clamp(0, 1).numpy()
    ax.imshow(array if array.shape[2] == 3 else array[..., 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def align_corners() -> None:
    """Where -1 and 1 fall on a 4 x 3 image, for both values of align_corners."""
    h, w = 3, 4
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, ac in zip(axes, (False, True)):
        for i in range(w + 1):
            ax.plot([i - 0.5, i - 0.5], [-0.5, h - 0.5], color="0.6", lw=0.8)
        for j in range(h + 1):
            ax.plot([-0.5, w - 0.5], [j - 0.5, j - 0.5], color="0.6", lw=0.8)
        ys, xs = np.mgrid[0:h, 0:w]
        ax.plot(xs.ravel(), ys.ravel(), "o", color="0.2", ms=4)
        for x, y in zip(xs.ravel(), ys.ravel()):
            ax.annotate(f"({x},{y})", (x, y), textcoords="offset points", xytext=(0, -13),
                        ha="center", fontsize=7, color="0.3")
        # the normalised frame [-1, 1]^2, drawn in pixel coordinates by stnkit's own map
        corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]])
        from stnkit.viz import normalised_to_pixel
        frame = normalised_to_pixel(corners, (h, w), align_corners=ac).numpy()
        ax.plot(frame[:, 0], frame[:, 1], color=ACCENT, lw=2)
        for (x, y), label in zip(frame[:4], ("(-1,-1)", "(1,-1)", "(1,1)", "(-1,1)")):
            ax.annotate(label, (x, y), color=ACCENT, fontsize=8, xytext=(4, 4),
                        textcoords="offset points")
        ax.set_xlim(-1.1, w + 0.4)
        ax.set_ylim(h + 0.1, -1.0)
        ax.set_aspect("equal")
        ax.set_xticks(range(w))
        ax.set_yticks(range(h))
        ax.set_title(f"align_corners={ac}: " + ("-1, 1 = outer edges" if not ac
                                                  else "-1, 1 = corner pixel centres"),
                     fontsize=9)
        ax.set_xlabel("pixel x (grey dots: pixel centres)", fontsize=8)
    fig.tight_layout()


def inverse_mapping() -> None:
    """Each output pixel reads the input at theta @ (x_t, y_t, 1)."""
    image = photo(96)
    h, w = image.shape[2:]
    theta = T.compose(T.rotation(0.5), T.compose(T.scaling(0.55), T.translation(-0.2, -0.35)))
    out_size = (48, 48)
    grid = ops.affine_grid(theta, out_size)  # (1, 48, 48, 2) source points
    out = ops.sample(image, grid)

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.3), gridspec_kw={"width_ratios": [1.1, 1]})
    show(axes[0], image, "input U: the region theta reads (red), grid points (dots)")
    outline = grid_outline(grid, (h, w))[0].numpy()
    axes[0].plot(outline[:, 0], outline[:, 1], color=ACCENT, lw=1.5)
    from stnkit.viz import normalised_to_pixel
    pts = normalised_to_pixel(grid[0, ::8, ::8].reshape(-1, 2), (h, w),
                              align_corners=False).numpy()
    axes[0].plot(pts[:, 0], pts[:, 1], ".", color="yellow", ms=4)
    first = normalised_to_pixel(grid[0, 0, 0][None], (h, w), align_corners=False)[0].numpy()
    axes[0].plot(*first, "o", color=ACCENT, ms=6)
    show(axes[1], out, "output V (48 x 48): pixel (0, 0) marked")
    axes[1].plot(0, 0, "o", color=ACCENT, ms=6)
    axes[1].set_xlim(-0.5, 47.5)
    axes[1].set_ylim(47.5, -0.5)
    fig.tight_layout()


def padding_modes() -> None:
    """What is read outside the input: zoomed out by 1.8, the three padding modes."""
    image = photo(72)
    theta = T.scaling(1.8)
    fig, axes = plt.subplots(1, 4, figsize=(10, 3.3))
    show(axes[0], image, "input")
    for ax, mode in zip(axes[1:], ("zeros", "border", "reflection")):
        show(ax, ops.warp(image, theta, padding_mode=mode), f'padding_mode="{mode}"')
    fig.tight_layout()


def non_finite() -> None:
    """A NaN pixel spreads to the outputs that read it; NaN coordinates read 0."""
    image = torch.full((1, 1, 6, 6), 0.5)
    image[0, 0, 2, 3] = float("nan")
    zoom = ops.warp(image, T.identity(1), size=(24, 24), padding_mode="border")  # bilinear x4

    # A homography that tilts the plane away: the top of the output looks past the horizon
    # (w <= 0): its grid points are NaN and read 0 even with border padding, which gives
    # every other point outside the image the colour of the nearest border pixel.
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.6, 1.0]]])
    picture = photo(48)
    size = tuple(picture.shape[2:])
    grid = ops.projective_grid(theta, size)
    tilted = ops.warp(picture, theta, transform="projective", padding_mode="border")

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    cmap = plt.get_cmap("gray").with_extremes(bad=ACCENT)
    axes[0].imshow(image[0, 0].numpy(), cmap=cmap, vmin=0, vmax=1)
    axes[0].set_title("input: one NaN pixel (red)", fontsize=9)
    axes[1].imshow(zoom[0, 0].numpy(), cmap=cmap, vmin=0, vmax=1)
    axes[1].set_title("bilinear x4: NaN wherever it is a tap", fontsize=9)
    show(axes[2], tilted, "homography, border padding:\nbehind the camera (NaN) reads 0")
    behind = torch.isnan(grid[0, ..., 0]).numpy()
    axes[2].contour(behind, levels=[0.5], colors=[ACCENT], linewidths=1.2)
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()


def opencv_pixels() -> None:
    """A pixel matrix M (OpenCV: input pixel -> output pixel) and its theta."""
    image = photo(96)
    h, w = image.shape[2:]
    out_size = (h, w)
    m = T.pixel_affine((h, w), degrees=25.0, scale=0.7, translate=(6.0, -4.0))  # (1, 2, 3)
    theta = T.from_pixel(m, (h, w), out_size)
    out = ops.warp(image, theta, size=out_size)

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    show(axes[0], image, "input, its frame (red)")
    corners = torch.tensor([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1],
                            [-0.5, h - 0.5, 1], [-0.5, -0.5, 1]])
    axes[0].plot(corners[:, 0].numpy(), corners[:, 1].numpy(), color=ACCENT, lw=2)
    moved = (corners @ m[0].T).numpy()  # forward: input pixel -> output pixel
    show(axes[1], out, "warp(input, from_pixel(M)); M @ frame (red)")
    axes[1].plot(moved[:, 0], moved[:, 1], color=ACCENT, lw=2)
    axes[1].set_xlim(-0.5, w - 0.5)
    axes[1].set_ylim(h - 0.5, -0.5)
    fig.tight_layout()


FIGURES = (align_corners, inverse_mapping, padding_modes, non_finite, opencv_pixels)


# Run as a script: write every picture. The plot directive runs this file as __main__ too
# (with this file as argv[0]), after docs/conf.py's plot_pre_code has set the marker below;
# then it draws only the one picture it asks for.
if __name__ == "__main__" and "UNDER_PLOT_DIRECTIVE" not in globals():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    for draw in FIGURES:
        draw()
        plt.savefig(out_dir / f"{draw.__name__}.png", dpi=110, bbox_inches="tight")
        plt.close("all")
        print(f"wrote {out_dir / (draw.__name__ + '.png')}")
