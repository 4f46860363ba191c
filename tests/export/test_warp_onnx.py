"""The ONNX translation of ``stnkit::warp`` against the operator itself, run by onnxruntime."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from stnkit.export import onnx_bytes, onnx_session  # noqa: E402
from stnkit.ops import affine_grid, projective_grid  # noqa: E402

cpp_cpu = pytest.importorskip("stnkit.ops.kernels.cpp_cpu")
if cpp_cpu._LIB is None:
    pytest.skip(str(cpp_cpu._WHY), allow_module_level=True)

TOL = 1e-5  # float32 interpolation of values in [0, 1]: rounding only, a few ulps
COMBOS = list(itertools.product(("bilinear", "nearest"), ("zeros", "border", "reflection"),
                                (False, True)))


class Warps(nn.Module):
    """Every (mode, padding_mode, align_corners) of one transform, stacked: one export."""

    def __init__(self, transform: str, size, combos=COMBOS):
        super().__init__()
        self.transform, self.size, self.combos = transform, list(size), combos

    def forward(self, x, theta):
        return torch.stack([torch.ops.stnkit.warp_cpu(x, theta, self.size, self.transform,
                                                      mode, padding, ac, False)
                            for mode, padding, ac in self.combos])


def check(model: Warps, x, theta, x_run, theta_run):
    """Export on (x, theta), run both on (x_run, theta_run) (another batch size).

    Tolerance per output point: TOL times max(1, |its source coordinate|), since a coordinate
    u / w is itself known only to a few ulps of its size (w close to 0+ makes it large);
    capped at 4 for zeros / border padding, where beyond +-4 the output is exactly 0 / the
    border pixel, not a matter of precision.
    """
    session = onnx_session(onnx_bytes(model, (x, theta)))
    names = [i.name for i in session.get_inputs()]
    got = torch.from_numpy(session.run(None, {names[0]: x_run.numpy(),
                                              names[1]: theta_run.numpy()})[0])
    want = model(x_run, theta_run)
    assert got.shape == want.shape, (got.shape, want.shape)
    for i, (mode, padding, ac) in enumerate(model.combos):
        if model.transform == "projective":
            grid = projective_grid(theta_run, model.size, align_corners=ac)
        else:
            grid = affine_grid(theta_run, model.size, align_corners=ac)
        scale = grid.nan_to_num(0.0, 0.0, 0.0).abs().amax(-1).clamp(min=1).unsqueeze(1)
        if padding != "reflection":
            scale = scale.clamp(max=4)
        err = ((got[i] - want[i]).abs() / scale).max().item()
        assert err <= TOL, (f"{model.transform} {(mode, padding, ac)}: max |onnx - torch| / "
                            f"max(1, |coordinate|) = {err:.3g} > {TOL}")


def test_affine_2d_every_mode():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 9, 11, generator=g)
    theta = torch.eye(2, 3) + 0.4 * torch.randn(3, 2, 3, generator=g)  # reads outside too
    check(Warps("affine", (7, 8)), x[:2], theta[:2], x, theta)


def test_affine_3d_every_mode():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, 5, 6, 7, generator=g)
    theta = torch.eye(3, 4) + 0.3 * torch.randn(3, 3, 4, generator=g)
    check(Warps("affine", (4, 5, 6)), x[:2], theta[:2], x, theta)


def test_projective_every_mode_with_points_behind_the_camera():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 2, 9, 11, generator=g)
    theta = torch.eye(3) + 0.2 * torch.randn(3, 3, 3, generator=g)
    theta[:, 2, :2] = torch.tensor([0.9, 0.7])  # w = 0.9 x + 0.7 y + 1 <= 0 in a corner
    theta[:, 2, 2] = 1.0
    grid = projective_grid(theta, (7, 8))
    behind = grid.isnan().any(-1)
    assert 0 < int(behind.sum()) < behind.numel(), "the test needs points with w <= 0"
    check(Warps("projective", (7, 8)), x[:2], theta[:2], x, theta)


def test_size_one_axis_with_align_corners():
    """ONNX's AffineGrid puts a size-1 axis at -1 with align_corners; PyTorch at 0."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 5, 6, generator=g)
    theta = torch.eye(2, 3) + 0.1 * torch.randn(2, 2, 3, generator=g)
    combos = [("bilinear", "zeros", True), ("bilinear", "border", False)]
    check(Warps("affine", (1, 4), combos), x, theta, x, theta)


def test_nearest_ties_round_half_to_even():
    """Output pixels at exact half-pixel input positions: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, ..."""
    x = torch.arange(1.0, 6.0).view(1, 1, 1, 5)
    theta = torch.eye(2, 3)[None]
    model = Warps("affine", (1, 9), [("nearest", "zeros", True)])
    want = torch.tensor([1.0, 1, 2, 3, 3, 3, 4, 5, 5])  # pixel coordinates 0, 0.5, ..., 4
    assert torch.equal(model(x, theta).flatten(), want)
    check(model, x, theta, x, theta)


def test_non_finite_and_huge_coordinates_read_zero_or_the_border():
    """NaN / Inf points sample 0 in every padding mode; huge finite ones follow the padding."""
    x = torch.rand(1, 1, 4, 5, generator=torch.Generator().manual_seed(4))
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    rows = [[1e30, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # x' = 1e30 x: huge, finite
    theta = torch.cat([theta, torch.tensor([rows]),
                       torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0.0]]])])  # w = 0: NaN
    xs = x.expand(3, -1, -1, -1).contiguous()
    check(Warps("projective", (3, 4)), xs, theta, xs, theta)
