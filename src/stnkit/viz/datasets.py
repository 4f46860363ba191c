"""A picture of dataset samples: a grid of zoomed images, each with its label (and, for
colocalisation, its instance boxes). What ``stnkit data show`` saves. Pillow is imported only
when the function runs (``viz`` extra).
"""

from __future__ import annotations

import math

import numpy as np

from stnkit._checks import fail
from stnkit.viz._deps import require

__all__ = ["BACKGROUND", "BOX_COLOUR", "label_grid", "label_grid_size"]

# layout, in pixels
PAD = 4  # around and between cells
LABEL_H = 14  # text band under each cell
TITLE_H = 18  # title band at the top
CHANNEL_GAP = 2  # between the channels of a multi-channel (addition) sample
TARGET_CELL = 112  # images are zoomed by ceil(TARGET_CELL / S)
BACKGROUND = (48, 48, 48)
BOX_COLOUR = (255, 64, 64)
_TITLE_COLOUR = (255, 255, 255)
_LABEL_COLOUR = (255, 220, 120)


def label_grid_size(n: int, channels: int, side: int, *, cols: int | None = None
                    ) -> tuple[int, int, int]:
    """(height, width, zoom) of the :func:`label_grid` picture of ``n`` samples (C, S, S).

    zoom = ceil(112 / S); a cell is C * S * zoom + (C - 1) * 2 wide and S * zoom high; the
    picture is cols * cell_w + (cols + 1) * 4 wide and 18 + rows * (cell_h + 14) +
    (rows + 1) * 4 high, with cols = ceil(sqrt(n)) by default and rows = ceil(n / cols).
    """
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    zoom = math.ceil(TARGET_CELL / side)
    cell_w, cell_h = channels * side * zoom + (channels - 1) * CHANNEL_GAP, side * zoom
    width = cols * cell_w + (cols + 1) * PAD
    height = TITLE_H + rows * (cell_h + LABEL_H) + (rows + 1) * PAD
    return height, width, zoom


def cell_origin(k: int, channels: int, side: int, *, cols: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of sample ``k``'s first channel in the picture."""
    zoom = math.ceil(TARGET_CELL / side)
    cell_w = channels * side * zoom + (channels - 1) * CHANNEL_GAP
    r, q = divmod(k, cols)
    return PAD + q * (cell_w + PAD), TITLE_H + PAD + r * (side * zoom + LABEL_H + PAD)


def label_grid(images: np.ndarray, labels, boxes=None, *, cols: int | None = None,
               title: str = "") -> np.ndarray:
    """A grid of samples with their labels, as RGB pixels.

    Args:
        images: uint8 (N, C, S, S), N >= 1; the C channels of a sample are drawn side by side
            (grey), each zoomed by nearest neighbour to ``ceil(112 / S)`` times its size.
        labels: N ints, written under each cell as ``label <y>``.
        boxes: optional (N, K, 4) or (N, 4) boxes (x0, y0, x1, y1) in the sample's pixel
            coordinates (centres at integers, edges at half-integers), drawn as red outlines;
            rows with a non-finite value are skipped.
        cols: columns of the grid (default ceil(sqrt(N))).
        title: text in the band at the top.
    Returns:
        uint8 (H, W, 3) with (H, W) from :func:`label_grid_size`.
    """
    fn = "label_grid"
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        fail(fn, "images", "a uint8 numpy array", getattr(images, "dtype", type(images).__name__),
             error=TypeError)
    if images.ndim != 4 or images.shape[0] < 1 or images.shape[2] != images.shape[3]:
        fail(fn, "images", "of shape (N, C, S, S) with N >= 1", images.shape)
    n, c, s, _ = images.shape
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
        fail(fn, "labels", f"{n} labels (one per image)", labels.shape[0])
    if cols is not None and (isinstance(cols, bool) or not isinstance(cols, int) or cols < 1):
        fail(fn, "cols", "a positive int or None", repr(cols))
    Image = require("PIL.Image")
    ImageDraw = require("PIL.ImageDraw")
    ImageFont = require("PIL.ImageFont")

    cols = cols or math.ceil(math.sqrt(n))
    height, width, zoom = label_grid_size(n, c, s, cols=cols)
    picture = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    draw.text((PAD, 3), title, fill=_TITLE_COLOUR, font=font)
    for k in range(n):
        x0, y0 = cell_origin(k, c, s, cols=cols)
        for ch in range(c):
            tile = Image.fromarray(images[k, ch]).resize((s * zoom, s * zoom), Image.NEAREST)
            picture.paste(tile.convert("RGB"), (x0 + ch * (s * zoom + CHANNEL_GAP), y0))
        if boxes is not None:
            for box in np.asarray(boxes[k], dtype=np.float64).reshape(-1, 4):
                if np.isfinite(box).all():  # box edges in pixel coordinates, centres at ints
                    bx0, by0, bx1, by1 = ((box + 0.5) * zoom).tolist()
                    draw.rectangle((x0 + bx0, y0 + by0, x0 + bx1 - 1, y0 + by1 - 1),
                                   outline=BOX_COLOUR)
        draw.text((x0 + 2, y0 + s * zoom + 1), f"label {int(labels[k])}", fill=_LABEL_COLOUR,
                  font=font)
    return np.asarray(picture, dtype=np.uint8).copy()
