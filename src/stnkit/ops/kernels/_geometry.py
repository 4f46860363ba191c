"""Shared by the fused kernels: how output pixel indices and input pixels relate to the
normalised [-1, 1] coordinates of theta (the convention of ``stnkit.ops.sample``)."""

from __future__ import annotations

__all__ = ["axis_coefficients", "axes_coefficients"]


def axis_coefficients(n_out: int, n_in: int, align: bool) -> tuple[float, float, float, float]:
    """(a, b, s, o) for one axis: output pixel j sits at normalised a*j + b; normalised x sits
    at input pixel s*x + o.

    ``align`` (align_corners): -1 and 1 are the corner pixel centres, else the outer edges.
    A one-pixel output with ``align`` sits at 0, as ``affine_grid`` puts it.
    """
    if align:
        a, b = (2.0 / (n_out - 1), -1.0) if n_out > 1 else (0.0, 0.0)
        s = (n_in - 1) / 2.0
    else:
        a, b = 2.0 / n_out, 1.0 / n_out - 1.0
        s = n_in / 2.0
    return a, b, s, (n_in - 1) / 2.0


def axes_coefficients(out_size, in_size, align: bool) -> list[tuple[float, float, float, float]]:
    """``axis_coefficients`` of every axis in (x, y[, z]) order, for spatial sizes given in
    tensor order ((H, W) or (D, H, W)): x runs along the last dimension."""
    nd = len(out_size)
    return [axis_coefficients(out_size[nd - 1 - d], in_size[nd - 1 - d], align)
            for d in range(nd)]
