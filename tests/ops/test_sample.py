"""sample: behaviour (batch, empty, layouts, mutation, dtype / device, half precision),
non-finite and huge coordinates, and every bad input."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from stnkit.ops import affine_grid, reference, sample

F64 = torch.float64
MODES = ["bilinear", "nearest", "bicubic"]
PADDINGS = ["zeros", "border", "reflection"]
ALL_2D = list(itertools.product(MODES, PADDINGS))
ALL_3D = list(itertools.product(MODES[:2], PADDINGS))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _data(nd=2, batch=3, dtype=torch.float32, seed=0, out=(5, 6)):
    in_shape = (batch, 2, 6, 7) if nd == 2 else (batch, 2, 3, 4, 5)
    out = out if nd == 2 else (2, 3, 4)
    x = torch.randn(in_shape, generator=_gen(seed), dtype=dtype)
    grid = (2.4 * torch.rand((batch, *out, nd), generator=_gen(seed + 1), dtype=dtype) - 1.2)
    return x, grid


def _forward_backward(x, grid, **kw):
    x = x.detach().clone().requires_grad_()
    grid = grid.detach().clone().requires_grad_()
    out = sample(x, grid, **kw)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
    gx, gg = torch.autograd.grad(out, (x, grid), grad_out)
    return out.detach(), gx, gg


def test_doc_example():
    out = sample(torch.arange(4.0).view(1, 1, 2, 2), torch.zeros(1, 1, 1, 2))
    assert out.item() == 1.5  # the centre of a 2 x 2 image is the mean of its pixels


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("nd", [2, 3])
def test_identity_grid_returns_input_exactly(nd, align, dtype):
    """Pixel centres come back as k +- a few ulps; snapping makes identity bit-exact."""
    sizes = [(1, 7, 13), (5, 28, 29), (3, 60, 97), (2, 1, 255)]
    for mode in MODES if nd == 2 else MODES[:2]:
        for size in sizes:
            size = size[-nd:]
            x = torch.randn((2, 3, *size), generator=_gen(sum(size)), dtype=dtype)
            theta = torch.eye(nd, nd + 1, dtype=dtype).expand(2, nd, nd + 1)
            grids = [affine_grid(theta, size, align_corners=align)]
            if min(size) > 1 or not align:  # PyTorch warns on unit sizes with align_corners
                grids.append(F.affine_grid(theta, x.shape, align_corners=align))
            for grid in grids:
                out = sample(x, grid, mode=mode, align_corners=align)
                assert torch.equal(out, x), f"{mode} {size}: {(out - x).abs().max().item()}"


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_snapping_to_knots(dtype):
    """Within 2 eps size pixels of a knot: the knot (value and right derivative); beyond: not."""
    W = 64
    eps = torch.finfo(dtype).eps
    x = torch.randn(1, 1, 1, W, generator=_gen(3), dtype=dtype)
    pix = torch.tensor([10.0, 10.0, 10.0, 10.0], dtype=F64)
    pix += torch.tensor([-1.0, 1.0, -8.0, 8.0], dtype=F64) * eps * W  # within / beyond 2 eps W
    grid = torch.stack([(2 * pix + 1) / W - 1, torch.zeros(4, dtype=F64)], -1).to(dtype)
    grid = grid.view(1, 1, 4, 2)
    out, _, gg = _forward_backward(x, grid, align_corners=False)
    knot, right = x[0, 0, 0, 10], x[0, 0, 0, 11] - x[0, 0, 0, 10]
    assert out[0, 0, 0, 0] == knot and out[0, 0, 0, 1] == knot
    assert out[0, 0, 0, 2] != knot and out[0, 0, 0, 3] != knot
    grad_out = torch.linspace(-1, 1, 4, dtype=dtype)
    # right derivative on both snapped points (the one below the knot included)
    for j in (0, 1):
        assert torch.allclose(gg[0, 0, j, 0], grad_out[j] * right * W / 2)
    left = x[0, 0, 0, 10] - x[0, 0, 0, 9]
    assert torch.allclose(gg[0, 0, 2, 0], grad_out[2] * left * W / 2)  # not snapped: left


@pytest.mark.parametrize("nd,mode,padding", [(2, m, p) for m, p in ALL_2D]
                         + [(3, m, p) for m, p in ALL_3D])
def test_batch_equals_per_sample_calls(nd, mode, padding):
    x, grid = _data(nd)
    grid[1, 0, 0] = float("nan")
    kw = dict(mode=mode, padding_mode=padding, align_corners=False)
    xr, gr = x.clone().requires_grad_(), grid.clone().requires_grad_()
    out = sample(xr, gr, **kw)
    grad_out = torch.randn(out.shape, generator=_gen(9))
    gx, gg = torch.autograd.grad(out, (xr, gr), grad_out)
    for b in range(x.shape[0]):
        xb, gb = x[b:b + 1].clone().requires_grad_(), grid[b:b + 1].clone().requires_grad_()
        ob = sample(xb, gb, **kw)
        gxb, ggb = torch.autograd.grad(ob, (xb, gb), grad_out[b:b + 1])
        assert torch.equal(out[b:b + 1], ob)
        assert torch.equal(gx[b:b + 1], gxb) and torch.equal(gg[b:b + 1], ggb)


@pytest.mark.parametrize("nd", [2, 3])
def test_empty_batch(nd):
    x, grid = _data(nd, batch=0)
    out, gx, gg = _forward_backward(x, grid)
    assert out.shape == (0, 2, *grid.shape[1:-1])
    assert gx.shape == x.shape and gg.shape == grid.shape


@pytest.mark.parametrize("mode", MODES)
def test_empty_output_and_channels(mode):
    x, _ = _data(2)
    out, gx, gg = _forward_backward(x, torch.zeros(3, 0, 4, 2), mode=mode)
    assert out.shape == (3, 2, 0, 4) and torch.all(gx == 0) and gg.shape == (3, 0, 4, 2)
    _, grid = _data(2)
    out, gx, gg = _forward_backward(torch.zeros(3, 0, 6, 7), grid, mode=mode)
    assert out.shape == (3, 0, 5, 6) and torch.all(gg == 0)
    out, _, _ = _forward_backward(torch.zeros(1, 1, 2, 3, 4), torch.zeros(1, 2, 0, 1, 3))
    assert out.shape == (1, 1, 2, 0, 1)


@pytest.mark.parametrize("mode,padding", ALL_2D)
def test_layouts_give_the_same_result(mode, padding):
    x, grid = _data(2)
    kw = dict(mode=mode, padding_mode=padding, align_corners=True)
    ref = _forward_backward(x, grid, **kw)
    variants = {
        "channels_last": (x.contiguous(memory_format=torch.channels_last), grid),
        "transposed": (x.transpose(2, 3).contiguous().transpose(2, 3), grid),
        "sliced": (torch.stack([x, -x], dim=2)[:, :, 0], grid),
        "grid_transposed": (x, grid.transpose(1, 2).contiguous().transpose(1, 2)),
        "grid_sliced": (x, torch.stack([grid, -grid], dim=-1)[..., 0]),
    }
    for name, (xv, gv) in variants.items():
        assert torch.equal(xv, x) and torch.equal(gv, grid), name
        got = _forward_backward(xv, gv, **kw)
        for a, b in zip(got, ref):
            assert torch.equal(a, b), name


def test_layouts_3d():
    x, grid = _data(3)
    ref = _forward_backward(x, grid)
    got = _forward_backward(x.contiguous(memory_format=torch.channels_last_3d), grid[:, ::1])
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("nd,mode,padding", [(2, m, p) for m, p in ALL_2D]
                         + [(3, m, p) for m, p in ALL_3D])
def test_inputs_not_mutated(nd, mode, padding):
    x, grid = _data(nd)
    grid[0, 0, 0] = float("nan")
    grid[0, 0, 1] = 1e30
    x0, g0 = x.clone(), grid.clone()
    _forward_backward(x, grid, mode=mode, padding_mode=padding)
    assert torch.equal(x, x0)
    assert torch.equal(grid.isnan(), g0.isnan())
    assert torch.equal(torch.nan_to_num(grid), torch.nan_to_num(g0))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_dtype_and_device_kept(dtype):
    x, grid = _data(2, dtype=dtype)
    out, gx, gg = _forward_backward(x, grid)
    assert out.dtype == gx.dtype == gg.dtype == dtype
    assert out.device == x.device


def test_only_one_argument_needs_grad():
    x, grid = _data(2)
    xr = x.clone().requires_grad_()
    sample(xr, grid).sum().backward()
    assert xr.grad is not None and grid.grad is None
    gr = grid.clone().requires_grad_()
    sample(x, gr, mode="bicubic").sum().backward()
    assert gr.grad is not None and torch.count_nonzero(gr.grad) > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_half_precision_is_computed_in_float32(dtype, mode):
    """float16 / bfloat16 work: computed in float32 and cast back; gradients keep the dtype."""
    x, grid = _data(2, dtype=dtype)
    out, gx, gg = _forward_backward(x, grid, mode=mode)
    assert out.dtype == gx.dtype == gg.dtype == dtype
    ref, rgx, rgg = _forward_backward(x.float(), grid.float(), mode=mode)
    assert torch.equal(out, ref.to(dtype))
    eps = torch.finfo(dtype).eps
    for a, b in ((gx, rgx), (gg, rgg)):
        err = (a.float() - b).abs().max().item()
        assert err <= 2 * eps * max(1.0, b.abs().max().item()), f"{err=}"
    # grid_sample in float32, rounded the same way (PyTorch's own half kernels unnormalise in
    # half precision and may pick other pixels for nearest)
    torch_ref = F.grid_sample(x.float(), grid.float(), mode=mode, align_corners=False).to(dtype)
    err = (out.float() - torch_ref.float()).abs().max().item()
    assert err <= eps * max(1.0, torch_ref.abs().max().item()), f"vs grid_sample {err=}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("nd,mode,padding", [(2, m, p) for m, p in ALL_2D]
                         + [(3, m, p) for m, p in ALL_3D])
def test_cuda_matches_cpu(nd, mode, padding):
    x, grid = _data(nd, dtype=F64)
    grid[0, 0, 0] = float("nan")
    kw = dict(mode=mode, padding_mode=padding, align_corners=False)
    cpu = _forward_backward(x, grid, **kw)
    gpu = _forward_backward(x.cuda(), grid.cuda(), **kw)
    for a, b in zip(gpu, cpu):
        assert a.device.type == "cuda"
        assert (a.cpu() - b).abs().max().item() < 1e-10


# ---------------------------------------------------------------------------------------------
# Non-finite and huge coordinates
# ---------------------------------------------------------------------------------------------

SPECIAL = [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 1e9, 0.3]


def _special_grid(nd, dtype):
    """Every pair (x, y) of special values, plus finite huge values near the dtype's max."""
    vals = SPECIAL + [torch.finfo(dtype).max, -torch.finfo(dtype).max]
    pairs = list(itertools.product(vals, vals))
    grid = torch.tensor(pairs, dtype=dtype).view(1, 1, len(pairs), 2)
    if nd == 3:
        z = torch.full((1, 1, len(pairs), 1), -0.2, dtype=dtype)
        grid = torch.cat([grid, z], dim=-1).unsqueeze(1)  # (1, 1, 1, N, 3)
    return grid


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("nd,mode,padding", [(2, m, p) for m, p in ALL_2D]
                         + [(3, m, p) for m, p in ALL_3D])
def test_non_finite_and_huge_coordinates(nd, mode, padding, align, dtype):
    """NaN / Inf: outside in every padding mode (0, zero gradients). Finite huge values follow
    the padding mode, never overflow an index, and match the reference where it is exact."""
    in_shape = (1, 2, 3, 4) if nd == 2 else (1, 2, 3, 4, 5)
    x = 1 + torch.rand(in_shape, generator=_gen(1), dtype=dtype)  # values in [1, 2]
    grid = _special_grid(nd, dtype)
    out, gx, gg = _forward_backward(x, grid, mode=mode, padding_mode=padding,
                                    align_corners=align)
    for t in (out, gx, gg):
        assert torch.isfinite(t).all()
    points = out.movedim(1, -1).reshape(-1, 2)  # (N, C)
    coords = grid.reshape(-1, nd)
    nonfinite = ~torch.isfinite(coords).all(dim=1)
    assert torch.all(points[nonfinite] == 0)
    assert torch.all(gg.reshape(-1, nd)[nonfinite] == 0)
    huge = torch.isfinite(coords).all(dim=1) & (coords.abs() > 1e8).any(dim=1)
    if padding == "zeros":
        assert torch.all(points[huge] == 0)
    elif mode != "bicubic":  # convex combinations of pixels in [1, 2]
        assert torch.all((points[~nonfinite] >= 1) & (points[~nonfinite] <= 2))
    # non-finite points add nothing to the input gradient
    keep = grid.clone()
    keep[~torch.isfinite(grid).all(dim=-1)] = 0.0
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=dtype).view(out.shape)
    mask = torch.isfinite(grid).all(dim=-1).unsqueeze(1).to(dtype)  # (1, 1, ..., N)
    xr = x.clone().requires_grad_()
    (gx_masked,) = torch.autograd.grad(
        sample(xr, keep, mode=mode, padding_mode=padding, align_corners=align),
        xr, grad_out * mask)
    assert (gx - gx_masked).abs().max().item() <= 1e-5
    if dtype == F64 and padding != "reflection":  # reflection of 1e30 is exact only in ints
        ref = reference.sample(x.numpy(), grid.numpy(), mode=mode, padding_mode=padding,
                               align_corners=align)
        assert (out - torch.as_tensor(ref)).abs().max().item() < 1e-12


def test_border_far_outside_reads_the_border_pixel():
    x = torch.arange(15.0).view(1, 1, 3, 5)  # align_corners: x = 0 is column 2, y = 0 row 1
    grid = torch.tensor([[[[1e30, 0.0], [-1e30, 0.0], [0.0, 3e38], [-3e38, -1e30]]]])
    for mode in MODES:
        out = sample(x, grid, mode=mode, padding_mode="border", align_corners=True)
        assert out.view(-1).tolist() == [9.0, 5.0, 12.0, 0.0], mode


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def _bad_cases():
    x, g = torch.zeros(2, 1, 4, 4), torch.zeros(2, 3, 3, 2)
    x5, g5 = torch.zeros(2, 1, 3, 4, 4), torch.zeros(2, 3, 3, 3, 3)
    return [
        ((x.numpy(), g), {}, TypeError, r"sample: expected input to be a torch\.Tensor, got ndarray"),
        ((x, [0.0]), {}, TypeError, r"sample: expected grid to be a torch\.Tensor, got list"),
        ((torch.zeros(2, 4, 4), g), {}, ValueError,
         r"expected input of shape \(B, C, H, W\) or \(B, C, D, H, W\), got \(2, 4, 4\)"),
        ((torch.zeros(1, 1, 1, 1, 1, 1), g), {}, ValueError, r"got \(1, 1, 1, 1, 1, 1\)"),
        ((x, torch.zeros(2, 3, 3)), {}, ValueError,
         r"expected grid of shape \(B, H, W, 2\), got \(2, 3, 3\)"),
        ((x, torch.zeros(2, 3, 3, 3)), {}, ValueError,
         r"expected grid of shape \(B, H, W, 2\), got \(2, 3, 3, 3\)"),
        ((x5, g), {}, ValueError, r"expected grid of shape \(B, D, H, W, 3\), got \(2, 3, 3, 2\)"),
        ((x5, torch.zeros(2, 3, 3, 3, 2)), {}, ValueError, r"\(B, D, H, W, 3\), got \(2, 3, 3, 3, 2\)"),
        ((x, torch.zeros(3, 3, 3, 2)), {}, ValueError,
         r"expected grid to have batch size 2 like input, got 3"),
        ((x.long(), g), {}, TypeError, r"expected input to have a floating dtype, got torch\.int64"),
        ((x, g.int()), {}, TypeError, r"expected grid to have a floating dtype, got torch\.int32"),
        ((x, g.to(torch.complex64)), {}, TypeError,
         r"expected grid to have a floating dtype, got torch\.complex64"),
        ((x, g.to("meta")), {}, ValueError,
         r"expected grid to be on the same device as input \(cpu\), got meta"),
        ((x, g), {"mode": "linear"}, ValueError,
         r"expected mode one of 'bilinear', 'nearest', 'bicubic', got 'linear'"),
        ((x, g), {"mode": None}, ValueError, r"expected mode one of .*, got None"),
        ((x, g), {"padding_mode": "constant"}, ValueError,
         r"expected padding_mode one of 'zeros', 'border', 'reflection', got 'constant'"),
        ((x, g), {"align_corners": 1}, TypeError, r"expected align_corners a bool, got 1"),
        ((x, g), {"align_corners": None}, TypeError, r"expected align_corners a bool, got None"),
        ((x5, g5), {"mode": "bicubic"}, ValueError,
         r"expected mode 'bilinear' or 'nearest' for 5-D input, got 'bicubic'"),
        ((torch.zeros(2, 1, 0, 4), g), {}, ValueError,
         r"expected input to have non-empty spatial dimensions, got \(2, 1, 0, 4\)"),
    ]


@pytest.mark.parametrize("args,kwargs,error,match", _bad_cases(),
                         ids=[f"bad{i}" for i in range(len(_bad_cases()))])
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        sample(*args, **kwargs)


def test_deterministic_mode():
    """Nothing in the backward refuses torch.use_deterministic_algorithms(True)."""
    x, grid = _data(2)
    ref = _forward_backward(x, grid, mode="bicubic", padding_mode="reflection")
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        got = _forward_backward(x, grid, mode="bicubic", padding_mode="reflection")
    finally:
        torch.use_deterministic_algorithms(was)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
