"""warp: against F.affine_grid + F.grid_sample, gradcheck per transform, backend dispatch,
batch / dtype / layout behaviour, validation."""

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from stnkit.ops import affine_grid, projective_grid, sample, tps_grid, warp
from stnkit.ops import transforms as T
from stnkit.ops.grids import tps_lattice
from tests._helpers import assert_close

F64 = torch.float64
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
PADDINGS = ["zeros", "border", "reflection"]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _theta(batch, dim=2, dtype=F64, seed=0, strength=0.3):
    eye = torch.eye(dim, dim + 1, dtype=dtype)
    return eye + strength * torch.randn(batch, dim, dim + 1, generator=_gen(seed), dtype=dtype)


def _homography(batch, dtype=F64, seed=0):
    return torch.eye(3, dtype=dtype) + 0.15 * torch.randn(batch, 3, 3, generator=_gen(seed),
                                                          dtype=dtype)


def _src_points(batch, k=9, dtype=F64, seed=0):
    return tps_lattice(k, dtype=dtype)[None] + 0.15 * torch.randn(batch, k, 2, generator=_gen(seed),
                                                                  dtype=dtype)


# --------------------------------------------------------------------------------------------
# against PyTorch
# --------------------------------------------------------------------------------------------


def _compare_with_torch(shape, size, mode, padding_mode, align_corners, dtype, seed=0):
    dim = len(shape) - 2
    x = torch.randn(shape, dtype=dtype, generator=_gen(seed))
    theta = _theta(shape[0], dim, dtype, seed + 1)
    xs, ts = x.clone().requires_grad_(), theta.clone().requires_grad_()
    xr, tr = x.clone().requires_grad_(), theta.clone().requires_grad_()
    out_size = shape[2:] if size is None else size
    out = warp(xs, ts, size=size, mode=mode, padding_mode=padding_mode,
               align_corners=align_corners, backend="torch")
    ref = F.grid_sample(xr, F.affine_grid(tr, (shape[0], shape[1], *out_size),
                                          align_corners=align_corners),
                        mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    assert out.shape == ref.shape and out.dtype == dtype
    assert_close(out, ref, TOL[dtype], "output")
    g = torch.randn(ref.shape, dtype=dtype, generator=_gen(seed + 2))
    out.backward(g)
    ref.backward(g)
    assert_close(xs.grad, xr.grad, TOL[dtype], "grad input")
    assert_close(ts.grad, tr.grad, TOL[dtype], "grad theta")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_affine_2d_matches_torch(mode, padding_mode, align_corners, dtype):
    _compare_with_torch((2, 3, 6, 7), (5, 8), mode, padding_mode, align_corners, dtype)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_affine_3d_matches_torch(mode, padding_mode, align_corners):
    for dtype in (torch.float64, torch.float32):
        _compare_with_torch((2, 2, 4, 5, 3), (3, 4, 5), mode, padding_mode, align_corners, dtype)


@pytest.mark.parametrize("size", [None, (3, 4), (13, 17), (1, 1)])
def test_output_sizes(size):
    # None keeps the input size; down- and up-sampling both work.
    _compare_with_torch((2, 1, 7, 9), size, "bilinear", "zeros", False, F64)
    out = warp(torch.zeros(1, 1, 7, 9), T.identity(), size=size, backend="torch")
    assert out.shape[2:] == ((7, 9) if size is None else size)


@pytest.mark.parametrize("align_corners", [False, True])
def test_projective_and_tps_equal_their_grids_sampled(align_corners):
    x = torch.randn(2, 3, 6, 7, dtype=F64, generator=_gen(0))
    h = _homography(2)
    out = warp(x, h, transform="projective", size=(5, 4), align_corners=align_corners,
               backend="torch")
    ref = F.grid_sample(x, projective_grid(h, (5, 4), align_corners=align_corners),
                        align_corners=align_corners)
    assert_close(out, ref, 1e-12, "projective")
    src = _src_points(2, 16)
    out = warp(x, src, transform="tps", size=(5, 4), align_corners=align_corners,
               backend="torch")
    ref = F.grid_sample(x, tps_grid(src, (5, 4), align_corners=align_corners),
                        align_corners=align_corners)
    assert_close(out, ref, 1e-12, "tps")
    dst = torch.tensor([[-0.8, -0.7], [0.9, -0.8], [0.0, 0.9], [0.3, 0.1], [-0.5, 0.4]],
                       dtype=F64)
    src5 = dst[None] + 0.1 * torch.randn(2, 5, 2, dtype=F64, generator=_gen(1))
    out = warp(x, src5, transform="tps", dst_points=dst, mode="bicubic",
               padding_mode="reflection", align_corners=align_corners, backend="torch")
    ref = F.grid_sample(x, tps_grid(src5, (6, 7), dst_points=dst, align_corners=align_corners),
                        mode="bicubic", padding_mode="reflection", align_corners=align_corners)
    assert_close(out, ref, 1e-12, "tps with dst_points")


def test_projective_affine_last_row_equals_affine():
    x = torch.randn(2, 2, 6, 7, dtype=F64, generator=_gen(0))
    theta = _theta(2)
    h = torch.cat([theta, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=F64).expand(2, 1, 3)], 1)
    for mode in ("bilinear", "nearest", "bicubic"):
        a = warp(x, theta, mode=mode, backend="torch")
        p = warp(x, h, transform="projective", mode=mode, backend="torch")
        assert_close(p, a, 1e-13, mode)


# --------------------------------------------------------------------------------------------
# gradcheck (float64, non-integer coordinates: random thetas)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("case", ["affine-bilinear", "affine-bicubic", "affine3d", "projective",
                                  "tps", "tps-dst"])
def test_gradcheck(case, align_corners):
    kw = {"align_corners": align_corners, "backend": "torch"}
    if case == "affine3d":
        x = torch.randn(1, 2, 3, 4, 3, dtype=F64, generator=_gen(0))
        theta = _theta(1, 3, seed=1, strength=0.2)
        kw.update(size=(2, 3, 2), padding_mode="border")
    else:
        x = torch.randn(2, 2, 4, 5, dtype=F64, generator=_gen(0))
        kw["size"] = (3, 4)
        if case.startswith("affine"):
            theta = _theta(2, seed=1, strength=0.2)
            kw["mode"] = case.split("-")[1]
        elif case == "projective":
            theta = _homography(2, seed=1)
            kw.update(transform="projective", padding_mode="reflection")
        elif case == "tps":
            theta = _src_points(2, 9, seed=1)
            kw["transform"] = "tps"
        else:
            kw.update(transform="tps", dst_points=torch.tensor(
                [[-0.8, -0.7], [0.9, -0.8], [0.0, 0.9], [0.3, 0.1]], dtype=F64))
            theta = kw["dst_points"][None] + 0.1 * torch.randn(2, 4, 2, dtype=F64,
                                                               generator=_gen(1))
    x.requires_grad_()
    theta.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: warp(a, b, **kw), (x, theta))


# --------------------------------------------------------------------------------------------
# projective points behind the camera
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_projective_behind_camera_gives_zero_and_finite_gradients(mode, padding_mode):
    # w = -x + 0.1 <= 0 on the right part of the output.
    h = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.1]]], dtype=F64,
                     requires_grad=True)
    x = (torch.rand(1, 2, 5, 6, dtype=F64, generator=_gen(0)) + 1).requires_grad_()
    out = warp(x, h, transform="projective", mode=mode, padding_mode=padding_mode,
               align_corners=True, backend="torch")
    xs = torch.linspace(-1, 1, 6, dtype=F64)
    behind = (0.1 - xs) <= 0
    assert torch.isfinite(out).all()
    assert (out[..., behind] == 0).all(), out
    assert (out[..., ~behind] != 0).any()
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(h.grad).all()


# --------------------------------------------------------------------------------------------
# batch, empty batch, layout, dtype, mutation
# --------------------------------------------------------------------------------------------


def _warp_cases():
    return [
        ("affine", torch.randn(3, 2, 5, 6, dtype=F64, generator=_gen(0)), _theta(3), {}),
        ("affine3d", torch.randn(3, 2, 3, 4, 5, dtype=F64, generator=_gen(0)), _theta(3, 3), {}),
        ("projective", torch.randn(3, 2, 5, 6, dtype=F64, generator=_gen(0)), _homography(3),
         {"transform": "projective"}),
        ("tps", torch.randn(3, 2, 5, 6, dtype=F64, generator=_gen(0)), _src_points(3),
         {"transform": "tps", "size": (4, 7)}),
    ]


@pytest.mark.parametrize("name,x,theta,kw", _warp_cases(), ids=[c[0] for c in _warp_cases()])
def test_batch_empty_layout_and_no_mutation(name, x, theta, kw):
    kw = dict(kw, backend="torch")
    x0, t0 = x.clone(), theta.clone()
    full = warp(x, theta, **kw)
    assert torch.equal(x, x0) and torch.equal(theta, t0), "inputs mutated"
    singles = torch.cat([warp(x[i:i + 1], theta[i:i + 1], **kw) for i in range(3)])
    assert_close(full, singles, 1e-14, "batch vs per-sample")
    empty = warp(x[:0], theta[:0], **kw)
    assert empty.shape == (0, *full.shape[1:]) and empty.dtype == F64
    # non-contiguous input and theta
    xn = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    tn = theta.transpose(1, 2).contiguous().transpose(1, 2)
    assert not xn.is_contiguous() and not tn.is_contiguous()
    assert_close(warp(xn, tn, **kw), full, 1e-14, "non-contiguous")
    if x.dim() == 4:
        xc = x.contiguous(memory_format=torch.channels_last)
        assert_close(warp(xc, theta, **kw), full, 1e-14, "channels_last")
    out32 = warp(x.float(), theta.float(), **kw)
    assert out32.dtype == torch.float32 and out32.device == x.device
    assert_close(out32, full.float(), 1e-5, "float32")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,x,theta,kw", _warp_cases(), ids=[c[0] for c in _warp_cases()])
def test_half_precision_consistent_with_sample(name, x, theta, kw, dtype):
    # sample computes float16 / bfloat16 in float32 and casts back; warp does the same, on
    # its grid computed in float32 and never rounded to 16 bits (ops' mixed precision)
    kw = dict(kw, backend="torch")
    x, theta = x.to(dtype), theta.to(dtype)
    out = warp(x, theta, **kw)
    assert out.dtype == dtype
    size = kw.get("size", tuple(x.shape[2:]))
    transform = kw.get("transform", "affine")
    grid = {"affine": affine_grid, "projective": projective_grid, "tps": tps_grid}[transform](
        theta.float(), size)
    assert torch.equal(out, sample(x, grid))


# --------------------------------------------------------------------------------------------
# backend dispatch (fake kernel modules stand in for stnkit.ops.kernels.*)
# --------------------------------------------------------------------------------------------


def _fake_kernel(reason=None):
    mod = types.ModuleType("fake_kernel")
    mod.calls = []

    def supports(input, theta, *, transform, mode, padding_mode):
        return reason

    def warp_(input, theta, **kw):
        mod.calls.append(kw)
        return torch.full((input.shape[0], input.shape[1], *kw["size"]), 7.0,
                          dtype=input.dtype)

    mod.supports, mod.warp = supports, warp_
    return mod


CPP = "stnkit.ops.kernels.cpp_cpu"
TRITON = "stnkit.ops.kernels.triton_gpu"


def test_auto_uses_a_supporting_kernel(monkeypatch):
    fake = _fake_kernel()
    monkeypatch.setitem(sys.modules, CPP, fake)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    x = torch.zeros(2, 1, 4, 5)
    out = warp(x, T.identity(2), size=(3, 3), mode="nearest")
    assert (out == 7).all() and out.shape == (2, 1, 3, 3)
    assert fake.calls == [{"transform": "affine", "size": (3, 3), "mode": "nearest",
                           "padding_mode": "zeros", "align_corners": False,
                           "deterministic": True}]
    warp(x, T.identity(2), backend="cpp", deterministic=False)
    assert fake.calls[-1]["deterministic"] is False and fake.calls[-1]["size"] == (4, 5)
    # torch is never routed to a kernel
    assert not (warp(x, T.identity(2), backend="torch") == 7).any()


def test_auto_runs_the_cpp_kernel_on_cpu(monkeypatch):
    cpp = _fake_kernel()
    monkeypatch.setitem(sys.modules, CPP, cpp)
    warp(torch.zeros(2, 1, 4, 5), T.identity(2))
    assert len(cpp.calls) == 1
    monkeypatch.setitem(sys.modules, CPP, _fake_kernel("not this call"))
    assert not (warp(torch.zeros(2, 1, 4, 5), T.identity(2)) == 7).any()  # torch path


def test_auto_falls_back_to_torch(monkeypatch):
    x = torch.rand(1, 1, 4, 5)
    ref = warp(x, T.identity(), backend="torch")
    monkeypatch.setitem(sys.modules, CPP, None)  # makes the import fail
    assert torch.equal(warp(x, T.identity()), ref)
    monkeypatch.setitem(sys.modules, CPP, _fake_kernel("no bicubic"))
    assert torch.equal(warp(x, T.identity()), ref)
    fake = _fake_kernel()
    monkeypatch.setitem(sys.modules, CPP, fake)
    src = tps_lattice(4)[None]
    # dst_points cannot be passed to a kernel: auto uses torch
    warp(x, src, transform="tps", dst_points=tps_lattice(4))
    assert fake.calls == []
    # a CPU tensor never goes to the GPU kernel
    monkeypatch.setitem(sys.modules, TRITON, fake)
    monkeypatch.setitem(sys.modules, CPP, None)
    warp(x, T.identity())
    assert fake.calls == []


def test_explicit_kernel_backend_errors(monkeypatch):
    x = torch.rand(1, 1, 4, 5)
    monkeypatch.setitem(sys.modules, CPP, None)
    with pytest.raises(ValueError, match=r"warp: expected backend 'cpp' to support this call "
                                         r"\(stnkit.ops.kernels.cpp_cpu cannot be imported"):
        warp(x, T.identity(), backend="cpp")
    monkeypatch.setitem(sys.modules, CPP, _fake_kernel("bicubic is not supported"))
    with pytest.raises(ValueError, match=r"warp: expected backend 'cpp' to support this call "
                                         r"\(bicubic is not supported\), got 'cpp'"):
        warp(x, T.identity(), backend="cpp", mode="bicubic")
    monkeypatch.setitem(sys.modules, CPP, _fake_kernel())
    with pytest.raises(ValueError, match=r"\(dst_points is not supported\)"):
        warp(x, tps_lattice(4)[None], transform="tps", dst_points=tps_lattice(4),
             backend="cpp")
    monkeypatch.setitem(sys.modules, TRITON, None)
    with pytest.raises(ValueError, match=r"expected backend 'triton' to support this call "
                                         r"\(stnkit.ops.kernels.triton_gpu cannot be imported"):
        warp(x, T.identity(), backend="triton")


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

X = torch.zeros(2, 1, 4, 4)
A = torch.eye(2, 3).expand(2, 2, 3)


@pytest.mark.parametrize("call,error,match", [
    (lambda: warp(X.numpy(), A), TypeError, r"warp: expected input to be a torch.Tensor, got "
                                            r"ndarray"),
    (lambda: warp(X, A.numpy()), TypeError, r"warp: expected theta to be a torch.Tensor"),
    (lambda: warp(X[0], A), ValueError,
     r"warp: expected input of shape \(B, C, H, W\) or \(B, C, D, H, W\), got \(1, 4, 4\)"),
    (lambda: warp(X[..., None], torch.eye(3)[None].expand(2, 3, 3), transform="projective"),
     ValueError, r"warp: expected input of shape \(B, C, H, W\) for transform='projective', "
                 r"got \(2, 1, 4, 4, 1\)"),
    (lambda: warp(X.long(), A), TypeError,
     r"warp: expected input to have a floating dtype, got torch.int64"),
    (lambda: warp(X, A, transform="similarity"), ValueError,
     r"warp: expected transform one of 'affine', 'projective', 'tps', got 'similarity'"),
    (lambda: warp(X, A, mode="linear"), ValueError,
     r"warp: expected mode one of 'bilinear', 'nearest', 'bicubic', got 'linear'"),
    (lambda: warp(X, A, padding_mode="edge"), ValueError,
     r"warp: expected padding_mode one of 'zeros', 'border', 'reflection', got 'edge'"),
    (lambda: warp(X, A, backend="cuda"), ValueError,
     r"warp: expected backend one of 'auto', 'torch', 'cpp', 'triton', got 'cuda'"),
    (lambda: warp(X, A, align_corners="yes"), TypeError,
     r"warp: expected align_corners a bool, got 'yes'"),
    (lambda: warp(X, A, deterministic=1), TypeError,
     r"warp: expected deterministic None or a bool, got 1"),
    (lambda: warp(X, torch.eye(3)[None].expand(2, 3, 3)), ValueError,
     r"warp: expected theta of shape \(B, 2, 3\), got \(2, 3, 3\)"),
    (lambda: warp(X[..., None], A), ValueError,
     r"warp: expected theta of shape \(B, 3, 4\), got \(2, 2, 3\)"),
    (lambda: warp(X, A, transform="projective"), ValueError,
     r"warp: expected theta of shape \(B, 3, 3\), got \(2, 2, 3\)"),
    (lambda: warp(X, torch.zeros(2, 16, 3), transform="tps"), ValueError,
     r"warp: expected theta of shape \(B, K, 2\), got \(2, 16, 3\)"),
    (lambda: warp(X, torch.zeros(2, 15, 2), transform="tps"), ValueError,
     r"warp: expected theta with a perfect square K >= 4 of points when dst_points is None"),
    (lambda: warp(X, A[:1]), ValueError,
     r"warp: expected theta to have batch size 2 like input, got 1"),
    (lambda: warp(X, A.int()), TypeError,
     r"warp: expected theta to have a floating dtype, got torch.int32"),
    (lambda: warp(X, A.to("meta")), ValueError,
     r"warp: expected theta to be on the same device as input \(cpu\), got meta"),
    (lambda: warp(X, A, size=(4, 4, 4)), ValueError,
     r"warp: expected size to have 2 entries, got 3"),
    (lambda: warp(X, A, size=(0, 4)), ValueError,
     r"warp: expected size to contain positive ints, got \(0, 4\)"),
    (lambda: warp(X, A, size=(2.5, 4)), TypeError, r"warp: expected size to contain ints"),
    (lambda: warp(X[..., None], torch.eye(3, 4).expand(2, 3, 4), mode="bicubic"), ValueError,
     r"warp: expected mode 'bilinear' or 'nearest' for 5-D input, got 'bicubic'"),
    (lambda: warp(X, A, dst_points=tps_lattice(4)), ValueError,
     r"warp: expected dst_points None for transform='affine', got a tensor"),
    (lambda: warp(X, tps_lattice(4)[None].expand(2, 4, 2), transform="tps",
                  dst_points=tps_lattice(9)), ValueError,
     r"warp: expected dst_points of shape \(4, 2\), got \(9, 2\)"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
