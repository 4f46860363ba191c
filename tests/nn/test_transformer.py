"""SpatialTransformer, ThetaRegressor, ParallelSpatialTransformers: identity, restriction,
shapes, gradients, serialisation, bad input."""

from __future__ import annotations

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from stnkit import ops
from stnkit.nn import (
    TRANSFORMS,
    CNNLocalization,
    FCNLocalization,
    ParallelSpatialTransformers,
    SpatialTransformer,
    ThetaRegressor,
    tps_control_points,
)

FAMILIES_2D = [t for t in TRANSFORMS if t != "affine3d"]
NUM_PARAMS = {"affine": 6, "projective": 8, "tps": 32, "attention": 3, "similarity": 4,
              "rotation": 1, "translation": 2, "affine3d": 12}
IDENTITY_TOL = 1e-6


def _fcn_st(transform="affine", size=(1, 12, 10), **kw) -> SpatialTransformer:
    return SpatialTransformer(FCNLocalization(size, (16,)), transform, **kw)


def _perturb(module: nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _identity_theta(transform: str, tps_grid=(4, 4), batch: int = 1) -> torch.Tensor:
    if transform == "tps":
        return tps_control_points(tps_grid).expand(batch, -1, -1)
    if transform == "projective":
        return torch.eye(3).expand(batch, 3, 3)
    if transform == "affine3d":
        return ops.transforms.identity(batch, dim=3)
    return ops.transforms.identity(batch)


# --- the parameterisation table ---------------------------------------------------------------

@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_regressor_sizes_and_identity_init(transform):
    reg = ThetaRegressor(7, transform)
    assert reg.num_params == NUM_PARAMS[transform], reg.num_params
    assert torch.count_nonzero(reg.linear.weight) == 0
    theta = reg(torch.randn(5, 7))
    want = _identity_theta(transform, batch=5)
    assert theta.shape == want.shape, (theta.shape, want.shape)
    assert torch.equal(theta, want), (theta - want).abs().max()


def test_tps_control_points_are_the_ops_default_lattice():
    from stnkit.ops.grids import tps_lattice

    assert torch.equal(tps_control_points((4, 4)), tps_lattice(16))
    pts = tps_control_points((3, 5))  # rows, cols
    assert pts.shape == (15, 2)
    assert torch.equal(pts[:5, 0], torch.linspace(-1, 1, 5)) and torch.all(pts[:5, 1] == -1)
    assert torch.equal(pts[::5, 1], torch.linspace(-1, 1, 3))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=4, max_size=4))
def test_similarity_matches_ops_similarity(raw):
    r = torch.tensor([raw], dtype=torch.float64)
    a, b, tx, ty = raw
    theta = ThetaRegressor(3, "similarity").to_theta(r)
    want = ops.transforms.similarity(torch.tensor([math.atan2(b, a)], dtype=torch.float64),
                                     torch.tensor([math.hypot(a, b)], dtype=torch.float64),
                                     torch.tensor([tx], dtype=torch.float64),
                                     torch.tensor([ty], dtype=torch.float64))
    err = (theta - want).abs().max().item()
    assert err < 1e-12, f"{err=}"


@settings(max_examples=30, deadline=None)
@given(st.floats(-10, 10, allow_nan=False))
def test_rotation_matches_ops_rotation(angle):
    theta = ThetaRegressor(3, "rotation").to_theta(torch.tensor([[angle]], dtype=torch.float64))
    want = ops.transforms.rotation(torch.tensor([angle], dtype=torch.float64))
    err = (theta - want).abs().max().item()
    assert err < 1e-12, f"{err=}"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=3, max_size=3))
def test_attention_matches_ops_attention(raw):
    theta = ThetaRegressor(3, "attention").to_theta(torch.tensor([raw], dtype=torch.float64))
    want = ops.transforms.attention(*[torch.tensor([v], dtype=torch.float64) for v in raw])
    assert torch.equal(theta, want), (theta, want)


def test_projective_last_entry_is_one():
    reg = ThetaRegressor(4, "projective")
    _perturb(reg, 1.0)
    theta = reg(torch.randn(6, 4))
    assert torch.equal(theta[:, 2, 2], torch.ones(6)), theta[:, 2, 2]


@pytest.mark.parametrize("seed", range(3))
def test_restricted_families_stay_restricted_after_random_weights(seed):
    x = torch.rand(16, 1, 12, 10)
    for transform in ("attention", "similarity", "rotation", "translation"):
        stn = _fcn_st(transform)
        _perturb(stn, scale=2.0, seed=seed)
        theta = stn.theta(x).double()
        assert theta.shape == (16, 2, 3)
        lin, t = theta[:, :, :2], theta[:, :, 2]
        assert lin.std() > 0 or transform == "translation"
        if transform == "attention":  # s I: no rotation, shear or anisotropy
            assert torch.all(lin[:, 0, 1] == 0) and torch.all(lin[:, 1, 0] == 0)
            assert torch.equal(lin[:, 0, 0], lin[:, 1, 1])
        if transform == "similarity":  # a I + b J: no shear, no anisotropy
            assert torch.equal(lin[:, 0, 0], lin[:, 1, 1])
            assert torch.equal(lin[:, 0, 1], -lin[:, 1, 0])
        if transform == "rotation":  # orthonormal, det 1, no translation
            gram = lin @ lin.transpose(1, 2)
            err = (gram - torch.eye(2, dtype=torch.float64)).abs().max().item()
            assert err < 1e-6, f"{err=}"
            assert torch.allclose(torch.linalg.det(lin), torch.ones(16, dtype=torch.float64))
            assert torch.all(t == 0)
        if transform == "translation":
            assert torch.equal(lin, torch.eye(2, dtype=torch.float64).expand(16, 2, 2))
            assert t.abs().max() > 0


# --- a fresh transformer is the identity ------------------------------------------------------

@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("transform", FAMILIES_2D)
def test_fresh_transformer_returns_its_input(transform, align_corners):
    x = torch.rand(3, 4, 12, 10)  # any number of channels
    stn = SpatialTransformer(CNNLocalization((4, 12, 10), padding=2), transform,
                             align_corners=align_corners)
    out, theta = stn(x, return_theta=True)
    assert out.shape == x.shape
    err = (out - x).abs().max().item()
    assert err <= IDENTITY_TOL, f"{transform}: {err=}"
    want = _identity_theta(transform, batch=3)
    assert torch.equal(theta, want), (theta - want).abs().max()


@pytest.mark.parametrize("tps_grid", [(3, 5), (2, 2), (5, 5)])
def test_fresh_tps_of_any_grid_is_identity(tps_grid):
    x = torch.rand(2, 1, 12, 10)
    stn = _fcn_st("tps", tps_grid=tps_grid)
    out, theta = stn(x, return_theta=True)
    assert theta.shape == (2, tps_grid[0] * tps_grid[1], 2)
    err = (out - x).abs().max().item()
    assert err <= IDENTITY_TOL, f"{err=}"


def test_fresh_3d_transformer_returns_its_input():
    x = torch.rand(2, 3, 5, 6, 7)
    stn = SpatialTransformer(FCNLocalization((3, 5, 6, 7), (8,)), "affine3d")
    out, theta = stn(x, return_theta=True)
    assert torch.equal(theta, ops.transforms.identity(2, dim=3))
    err = (out - x).abs().max().item()
    assert err <= IDENTITY_TOL, f"{err=}"


def test_fresh_transformer_identity_float64():
    x = torch.rand(2, 1, 12, 10, dtype=torch.float64)
    for transform in FAMILIES_2D:
        stn = _fcn_st(transform).double()
        out = stn(x)
        assert out.dtype == torch.float64
        err = (out - x).abs().max().item()
        assert err <= IDENTITY_TOL, f"{transform}: {err=}"


# --- shapes, consistency, gradients -----------------------------------------------------------

def test_output_size_channels_and_warp_channels():
    x = torch.rand(2, 5, 12, 10)
    stn = SpatialTransformer(FCNLocalization((5, 12, 10)), "attention", output_size=(6, 7))
    assert stn(x).shape == (2, 5, 6, 7)
    stn = SpatialTransformer(FCNLocalization((5, 12, 10)), "affine", warp_channels=[3, 1])
    out = stn(x)
    assert out.shape == (2, 2, 12, 10)
    err = (out - x[:, [3, 1]]).abs().max().item()
    assert err <= IDENTITY_TOL, f"{err=}"
    stn3 = SpatialTransformer(FCNLocalization((1, 4, 6, 8)), "affine3d", output_size=(2, 3, 4))
    assert stn3(torch.rand(3, 1, 4, 6, 8)).shape == (3, 1, 2, 3, 4)


@pytest.mark.parametrize("transform", FAMILIES_2D)
def test_forward_equals_theta_grid_and_sample(transform):
    x = torch.rand(3, 2, 12, 10)
    stn = SpatialTransformer(FCNLocalization((2, 12, 10), (16,)), transform, output_size=(7, 9),
                             tps_grid=(3, 4) if transform == "tps" else (4, 4))
    _perturb(stn, 0.05)
    out, theta = stn(x, return_theta=True)
    assert torch.equal(theta, stn.theta(x))
    grid = stn.sampling_grid(theta, (7, 9))
    assert grid.shape == (3, 7, 9, 2)
    ref = ops.sample(x, grid, align_corners=False)
    err = (out - ref).abs().max().item()
    assert err <= 1e-5, f"{err=}"


def test_gradients_reach_localization_and_regressor():
    x = torch.rand(4, 1, 12, 10)
    stn = _fcn_st("affine")
    stn(x).square().sum().backward()
    assert stn.regressor.linear.weight.grad.abs().sum() > 0  # zero-init W still learns
    assert stn.regressor.linear.bias.grad.abs().sum() > 0
    _perturb(stn, 0.1)
    stn.zero_grad()
    stn(x).square().sum().backward()
    for name, p in stn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_empty_batch():
    for transform in ("affine", "tps"):
        out, theta = _fcn_st(transform)(torch.rand(0, 1, 12, 10), return_theta=True)
        assert out.shape == (0, 1, 12, 10) and theta.shape[0] == 0


def test_state_dict_round_trip():
    from safetensors.torch import load, save

    x = torch.rand(3, 1, 12, 10)
    a = _fcn_st("tps", tps_grid=(3, 3))
    _perturb(a, 0.05)
    b = _fcn_st("tps", tps_grid=(3, 3))
    b.load_state_dict(load(save(a.state_dict())))
    assert torch.equal(a(x), b(x))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    c = _fcn_st("tps", tps_grid=(3, 3))
    c.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert torch.equal(a(x), c(x))
    assert "regressor.control_points" not in a.state_dict()  # a constant, not a weight


def test_features_inferred_by_dry_run():
    loc = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    before = loc[1].running_mean.clone()
    stn = SpatialTransformer(loc, "translation", input_size=(3, 8, 8))
    assert stn.features == 4 * 6 * 6
    assert torch.equal(loc[1].running_mean, before)  # the dry run updated no statistics
    assert loc.training
    out = stn(torch.rand(2, 3, 8, 8))
    assert out.shape == (2, 3, 8, 8)


@pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
def test_backends_agree(transform):
    x = torch.rand(2, 3, 12, 10)
    a = _fcn_st(transform, size=(3, 12, 10), output_size=(9, 8))
    _perturb(a, 0.05)
    b = _fcn_st(transform, size=(3, 12, 10), output_size=(9, 8), backend="torch")
    b.load_state_dict(a.state_dict())
    err = (a(x) - b(x)).abs().max().item()
    assert err < 1e-5, f"{err=}"
    assert "backend='torch'" in repr(b) and "backend" not in repr(a)


def test_extra_repr():
    text = repr(_fcn_st("attention", output_size=(5, 5)))
    for part in ("transform='attention'", "params=3", "features=16", "output_size=(5, 5)",
                 "align_corners=False"):
        assert part in text, text


# --- parallel and serial ----------------------------------------------------------------------

def test_parallel_concat_and_list():
    x = torch.rand(2, 3, 12, 10)
    sts = [SpatialTransformer(FCNLocalization((3, 12, 10)), t, output_size=(6, 5))
           for t in ("affine", "attention")]
    par = ParallelSpatialTransformers(sts)
    out, thetas = par(x, return_theta=True)
    assert out.shape == (2, 6, 6, 5) and len(thetas) == 2
    assert torch.equal(out[:, :3], sts[0](x)) and torch.equal(out[:, 3:], sts[1](x))
    listed = ParallelSpatialTransformers(sts, combine="list")(x)
    assert isinstance(listed, list) and len(listed) == 2
    assert "combine='concat'" in repr(par)


def test_serial_stacking_with_sequential():
    x = torch.rand(2, 1, 12, 10)
    a, b = _fcn_st("affine"), _fcn_st("tps")
    seq = nn.Sequential(a, b)
    err = (seq(x) - x).abs().max().item()
    assert err <= 2 * IDENTITY_TOL, f"{err=}"
    _perturb(seq, 0.05)
    assert torch.equal(seq(x), b(a(x)))


# --- bad input --------------------------------------------------------------------------------

def test_bad_construction():
    loc = FCNLocalization((1, 12, 10))
    with pytest.raises(ValueError, match="expected transform one of 'affine'.*got 'shear'"):
        SpatialTransformer(loc, "shear")
    with pytest.raises(TypeError, match="expected localization to be an nn.Module"):
        SpatialTransformer(lambda x: x, "affine")
    with pytest.raises(ValueError, match="expected mode one of"):
        SpatialTransformer(loc, mode="linear")
    with pytest.raises(ValueError, match="expected padding_mode one of"):
        SpatialTransformer(loc, padding_mode="wrap")
    with pytest.raises(ValueError, match="expected mode 'bilinear' or 'nearest' for a 3-D"):
        SpatialTransformer(FCNLocalization((1, 4, 4, 4)), "affine3d", mode="bicubic")
    with pytest.raises(ValueError, match="expected output_size to have 2 entries"):
        SpatialTransformer(loc, output_size=(4, 4, 4))
    with pytest.raises(ValueError, match="expected tps_grid to have at least 2 control"):
        SpatialTransformer(loc, "tps", tps_grid=(1, 4))
    with pytest.raises(TypeError, match="expected features .* or input_size"):
        SpatialTransformer(nn.Flatten(), "affine")
    with pytest.raises(ValueError, match="expected features a positive int, got 0"):
        SpatialTransformer(nn.Flatten(), "affine", features=0)
    with pytest.raises(ValueError, match=r"expected localization output of shape \(B, F\)"):
        SpatialTransformer(nn.Identity(), "affine", input_size=(1, 4, 4))
    with pytest.raises(ValueError, match="expected warp_channels to contain channel indices"):
        SpatialTransformer(loc, warp_channels=[1], input_size=(1, 12, 10))
    with pytest.raises(TypeError, match="expected align_corners a bool"):
        SpatialTransformer(loc, align_corners=None)
    with pytest.raises(ValueError, match="expected backend one of 'auto'"):
        SpatialTransformer(loc, backend="cuda")
    with pytest.raises(ValueError, match="expected transformers at least one"):
        ParallelSpatialTransformers([])
    with pytest.raises(TypeError, match=r"expected transformers\[1\] to be a SpatialTransformer"):
        ParallelSpatialTransformers([_fcn_st(), nn.Identity()])
    with pytest.raises(ValueError, match="expected combine one of"):
        ParallelSpatialTransformers([_fcn_st()], combine="sum")
    with pytest.raises(ValueError, match="expected transform one of"):
        ThetaRegressor(4, "similarity2")


def test_bad_forward_input():
    stn = _fcn_st("affine")
    with pytest.raises(ValueError, match=r"SpatialTransformer: expected input of shape "
                       r"\(B, C, H, W\), got \(1, 12, 10\)"):
        stn(torch.rand(1, 12, 10))
    with pytest.raises(ValueError, match=r"FCNLocalization: expected input of shape "
                       r"\(B, 1, 12, 10\), got \(2, 3, 12, 10\)"):
        stn(torch.rand(2, 3, 12, 10))
    sized = SpatialTransformer(nn.Flatten(), "affine", input_size=(2, 3, 3))
    with pytest.raises(ValueError, match="expected input with 2 channels"):
        sized(torch.rand(1, 3, 3, 3))
    with pytest.raises(ValueError, match=r"SpatialTransformer: expected input of shape "
                       r"\(B, C, D, H, W\)"):
        SpatialTransformer(FCNLocalization((1, 4, 4, 4)), "affine3d")(torch.rand(1, 1, 4, 4))


def test_localization_output_not_b_by_f():
    class Bad(nn.Module):
        out_features = 8

        def forward(self, x):
            return x.flatten(1)[:, :16].reshape(x.shape[0], 2, 8)

    stn = SpatialTransformer(Bad(), "affine")
    with pytest.raises(ValueError, match=r"SpatialTransformer: expected localization output of "
                       r"shape \(2, 8\), got \(2, 2, 8\)"):
        stn(torch.rand(2, 1, 12, 10))
    wrong_width = SpatialTransformer(nn.Flatten(), "affine", features=5)
    with pytest.raises(ValueError, match=r"expected localization output of shape \(2, 5\), "
                       r"got \(2, 120\)"):
        wrong_width(torch.rand(2, 1, 12, 10))
    class TupleOut(nn.Module):
        def forward(self, x):
            return x.flatten(1), None

    tuple_out = SpatialTransformer(TupleOut(), "affine", features=12)
    with pytest.raises(TypeError, match="expected localization output to be a torch.Tensor"):
        tuple_out(torch.rand(2, 1, 3, 4))


def test_parallel_mismatched_sizes():
    par = ParallelSpatialTransformers([_fcn_st(output_size=(4, 4)), _fcn_st(output_size=(5, 5))])
    with pytest.raises(ValueError, match="expected output 1 to have batch and spatial size"):
        par(torch.rand(2, 1, 12, 10))
