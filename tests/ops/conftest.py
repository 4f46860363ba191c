"""Shared helpers for the sampler tests: grids whose points stay away from every knot."""

import pytest
import torch


def offknot_grid(batch, out_size, in_size, align_corners, *, seed=0, margin=3,
                 dtype=torch.float64):
    """A normalised grid (B, *out_size, nd) whose pixel coordinates are k + f with integer k
    in [-margin, size + margin) and f in [0.1, 0.4] or [0.6, 0.9].

    So no point sits within 0.1 pixel of an integer knot, a half-integer (nearest ties,
    reflection folds with align_corners=False) or a clip point: every sampler is smooth
    there, finite differences are valid and float32 floors cannot flip.
    """
    g = torch.Generator().manual_seed(seed)
    nd = len(in_size)
    cols = []
    for d in range(nd):  # x, y[, z] run along in_size[-1], in_size[-2][, in_size[-3]]
        size = in_size[-1 - d]
        shape = (batch, *out_size)
        k = torch.randint(-margin, size + margin, shape, generator=g).to(torch.float64)
        f = 0.1 + 0.3 * torch.rand(shape, generator=g, dtype=torch.float64)
        f = f + 0.5 * torch.randint(0, 2, shape, generator=g)
        pix = k + f
        if align_corners and size == 1:  # every coordinate maps onto the one pixel
            cols.append(4 * torch.rand(shape, generator=g, dtype=torch.float64) - 2)
        elif align_corners:
            cols.append(2 * pix / (size - 1) - 1)
        else:
            cols.append((2 * pix + 1) / size - 1)
    return torch.stack(cols, dim=-1).to(dtype)


@pytest.fixture
def make_grid():
    return offknot_grid
