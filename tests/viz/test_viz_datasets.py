"""`label_grid`: the picture `stnkit data show` saves, checked pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PIL.Image")

from stnkit.viz import datasets as D  # noqa: E402


def _images(n, c, s, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, s, s), dtype=np.uint8)


@pytest.mark.parametrize("n,c,s,cols", [(5, 1, 28, None), (3, 2, 42, 2), (1, 1, 60, None)])
def test_cells_hold_the_zoomed_images(n, c, s, cols):
    images = _images(n, c, s)
    pixels = D.label_grid(images, np.arange(n), cols=cols, title="t")
    h, w, zoom = D.label_grid_size(n, c, s, cols=cols)
    assert pixels.shape == (h, w, 3) and pixels.dtype == np.uint8
    assert zoom == -(-112 // s)
    cols = cols or int(np.ceil(np.sqrt(n)))
    for k in range(n):
        x0, y0 = D.cell_origin(k, c, s, cols=cols)
        for ch in range(c):
            x = x0 + ch * (s * zoom + D.CHANNEL_GAP)
            cell = pixels[y0:y0 + s * zoom, x:x + s * zoom]
            expected = np.kron(images[k, ch], np.ones((zoom, zoom), np.uint8))  # nearest zoom
            for rgb in range(3):  # grey: the same in R, G and B
                np.testing.assert_array_equal(cell[..., rgb], expected, err_msg=f"{k=} {ch=}")
    # the gap left of the first cell is background, the title and label bands hold text
    assert (pixels[D.TITLE_H:, :D.PAD] == D.BACKGROUND).all()
    assert (pixels[:D.TITLE_H] != D.BACKGROUND).any(axis=-1).sum() > 5, "no title drawn"
    x0, y0 = D.cell_origin(0, c, s, cols=cols)
    band = pixels[y0 + s * zoom:y0 + s * zoom + D.LABEL_H, x0:x0 + s * zoom]
    assert (band != D.BACKGROUND).any(axis=-1).sum() > 5, "no label drawn"


def test_labels_differ_in_the_picture():
    images = np.zeros((2, 1, 28, 28), np.uint8)
    a = D.label_grid(images, [3, 3])
    b = D.label_grid(images, [3, 8])
    x1, y1 = D.cell_origin(1, 1, 28, cols=2)
    band = slice(y1 + 112, y1 + 112 + D.LABEL_H)
    assert (a[band, x1:x1 + 112] != b[band, x1:x1 + 112]).any(), "label 8 drawn as 3"
    assert (a[:, :x1] == b[:, :x1]).all(), "the first cell should not change"


def test_boxes_are_outlined_and_non_finite_ones_skipped():
    images = np.zeros((1, 1, 28, 28), np.uint8)
    boxes = np.array([[[1.5, 2.5, 9.5, 5.5], [np.nan, 0, 0, 0]]])  # pixel edges (x0, y0, x1, y1)
    pixels = D.label_grid(images, [0], boxes)
    zoom = 4
    x0, y0 = D.cell_origin(0, 1, 28, cols=1)
    red = (pixels == D.BOX_COLOUR).all(axis=-1)
    ys, xs = np.nonzero(red)
    # box edges at (edge + 0.5) * zoom, the outline inside them
    assert (xs.min(), xs.max()) == (x0 + 2 * zoom, x0 + 10 * zoom - 1)
    assert (ys.min(), ys.max()) == (y0 + 3 * zoom, y0 + 6 * zoom - 1)
    assert not red[y0 + 4 * zoom, x0 + 5 * zoom], "an outline, not a filled box"
    assert D.label_grid(images, [0], np.full((1, 1, 4), np.inf)).tolist() == \
        D.label_grid(images, [0]).tolist()


@pytest.mark.parametrize("call,error,match", [
    (lambda: D.label_grid(np.zeros((2, 1, 4, 4)), [0, 1]), TypeError,
     r"label_grid: expected images a uint8 numpy array, got float64"),
    (lambda: D.label_grid(np.zeros((0, 1, 4, 4), np.uint8), []), ValueError,
     r"label_grid: expected images of shape \(N, C, S, S\) with N >= 1"),
    (lambda: D.label_grid(np.zeros((2, 1, 4, 4), np.uint8), [0]), ValueError,
     r"label_grid: expected labels 2 labels"),
    (lambda: D.label_grid(np.zeros((2, 1, 4, 4), np.uint8), [0, 1], cols=0), ValueError,
     r"label_grid: expected cols a positive int"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
