"""Fuzz ``stnkit.ops.sample`` against ``F.grid_sample``: shapes (zero sizes included), dtypes,
layouts, NaN/Inf pixels and coordinates, knots, huge coordinates, every mode x padding x
align_corners; values, grad_input and grad_grid. Tolerances: ``tests/fuzz/_oracle.py``."""

import torch
from hypothesis import event, given
from hypothesis import strategies as st

from stnkit.ops import sample
from tests.fuzz._oracle import (DTYPES, HUGE, LAYOUTS, PADS, assert_clear_error,
                                check_sample_result, coord_specials, finite_mass_check, fuzz,
                                layout, make_grid, make_input, pixel_specials,
                                reference_sample, seeds)

sizes = st.integers(1, 6)


@st.composite
def sample_cases(draw):
    nd = draw(st.sampled_from([2, 2, 3]))
    mode = draw(st.sampled_from(["bilinear", "nearest", "bicubic"] if nd == 2
                                else ["bilinear", "nearest"]))
    batch = draw(st.integers(0, 2))
    channels = draw(st.integers(0, 3))
    in_size = tuple(draw(sizes) for _ in range(nd))
    out_size = tuple(draw(st.integers(0, 4)) for _ in range(nd))
    return dict(
        nd=nd, mode=mode, padding_mode=draw(st.sampled_from(PADS)),
        align_corners=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)),
        shape=(batch, channels, *in_size), out_size=out_size,
        x_layout=draw(st.sampled_from(LAYOUTS)), grid_layout=draw(st.sampled_from(LAYOUTS)),
        seed=draw(seeds), spread=draw(st.sampled_from([0.0, 0.2, 1.0])),
        pixels=draw(pixel_specials), coords=draw(coord_specials),
        huge=draw(st.sampled_from(HUGE)))


def _run(x, grid, grad_out, **kw):
    xr = x.detach().clone().requires_grad_()
    gr = grid.detach().clone().requires_grad_()
    out = sample(layout_like(xr, x), layout_like(gr, grid), **kw)
    assert out.requires_grad, "the output of a differentiable input lost its graph"
    gx, gg = torch.autograd.grad(out, (xr, gr), grad_out)  # empty outputs too
    return out.detach(), gx, gg


def layout_like(t, like):
    """``t`` (a leaf) viewed in ``like``'s layout, differentiably."""
    if like.is_contiguous():
        return t
    if t.dim() in (4, 5) and like.is_contiguous(
            memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d):
        return t.contiguous(memory_format=torch.channels_last if t.dim() == 4
                            else torch.channels_last_3d)
    big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    big = big.index_copy(-1, torch.arange(0, 2 * t.shape[-1], 2), t)
    return big[..., ::2]


@fuzz(3)
@given(case=sample_cases())
def test_sample_matches_grid_sample(case):
    kw = dict(mode=case["mode"], padding_mode=case["padding_mode"],
              align_corners=case["align_corners"])
    shape, dtype = case["shape"], case["dtype"]
    x = layout(make_input(shape, dtype, case["seed"], case["pixels"]), case["x_layout"])
    grid = make_grid(shape[0], case["out_size"], shape[2:], case["align_corners"], dtype,
                     case["seed"] + 1, case["spread"], case["coords"], case["huge"])
    grid = layout(grid, case["grid_layout"])
    grad_out = make_input((shape[0], shape[1], *case["out_size"]), dtype, case["seed"] + 2, [])
    event(f"{case['nd']}-D {case['mode']} {dtype}")
    got = _run(x, grid, grad_out, **kw)
    ref = reference_sample(x, grid, grad_out, **kw)
    assert got[0].shape == ref[0].shape and got[0].dtype == dtype
    check_sample_result(got, ref, x, grid, grad_out, what="sample", **kw)
    if case["padding_mode"] != "zeros" and case["mode"] != "bicubic":
        finite_mass_check(got[1], grad_out, grid, "sample")


@fuzz(1)
@given(nd=st.sampled_from([2, 3]), batch=st.integers(0, 2), channels=st.integers(0, 2),
       empty_axis=st.integers(0, 2), dtype=st.sampled_from(DTYPES))
def test_sample_empty_input_is_a_clear_error(nd, batch, channels, empty_axis, dtype):
    """An input with a zero spatial size has nothing to sample: StnkitValueError naming
    input (grid_sample raises its own RuntimeError)."""
    in_size = [3] * nd
    in_size[empty_axis % nd] = 0
    x = torch.zeros(batch, channels, *in_size, dtype=dtype)
    grid = torch.zeros(batch, *([2] * nd), nd, dtype=dtype)
    try:
        sample(x, grid)
    except Exception as e:  # noqa: BLE001 - the property is about which exception
        assert_clear_error(e, "sample", ["input"])
    else:
        raise AssertionError("sample accepted an input with a zero spatial size")
