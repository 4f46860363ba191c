"""What an outside fuzz campaign found (issue 12), each as a class of inputs: empty batches,
empty images, sizes past the index limit, user errors of the reference, hidden state, and
non-finite pixels / huge coordinates against ``torch.nn.functional.grid_sample``."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from stnkit import ops
from stnkit._checks import StnkitTypeError, StnkitValueError
from stnkit.ops import grids, reference
from stnkit.ops.kernels import cpp_cpu

F64 = torch.float64
# cpp where its extension was built (tests/ops/kernels/test_cpp_cpu.py skips with the reason)
BACKENDS = ["torch", *(["cpp"] if cpp_cpu._WHY is None else [])]


def _theta(transform: str, b: int, *, dims: int = 2, requires_grad: bool = True):
    if transform == "affine":
        t = torch.eye(dims, dims + 1, dtype=F64).repeat(b, 1, 1)
    elif transform == "projective":
        t = torch.eye(3, dtype=F64).repeat(b, 1, 1)
    else:
        t = grids.tps_lattice(16, dtype=F64).repeat(b, 1, 1)
    return t.requires_grad_(requires_grad)


# ---------------------------------------------------------------------------------------------
# empty batch / empty channels: forward and backward, every op and backend
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transform, dims, size", [
    ("affine", 2, (4, 5)), ("projective", 2, (4, 5)), ("tps", 2, (4, 5)), ("affine", 3, (3, 4, 5)),
])
def test_grids_empty_batch_backward(transform, dims, size):
    make = {"affine": ops.affine_grid, "projective": ops.projective_grid,
            "tps": ops.tps_grid}[transform]
    t = _theta(transform, 0, dims=dims)
    grid = make(t, size)
    assert grid.shape == (0, *size, dims)
    grid.sum().backward()
    assert t.grad is not None and t.grad.shape == t.shape, "empty batch gradient"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("transform", ["affine", "projective", "tps", "affine3d"])
@pytest.mark.parametrize("shape", [(0, 2), (2, 0)], ids=["B=0", "C=0"])
def test_warp_empty_batch_and_channels(backend, transform, shape):
    """PyTorch handles B = 0 and C = 0 (grid_sample, affine_grid); so does every backend,
    forward and backward, with the same shapes as the torch path."""
    dims = 3 if transform == "affine3d" else 2
    kind = "affine" if transform == "affine3d" else transform
    b, c = shape
    x = torch.rand(b, c, *(5,) * dims, dtype=F64, requires_grad=True)
    t = _theta(kind, b, dims=dims)
    out = ops.warp(x, t, transform=kind, size=(4,) * dims, backend=backend)
    assert out.shape == (b, c, *(4,) * dims), f"{out.shape=}"
    out.sum().backward()
    assert x.grad.shape == x.shape and t.grad.shape == t.shape
    assert (x.grad == 0).all() and (t.grad == 0).all(), "nothing to differentiate: zeros"


def test_sample_empty_batch_and_channels():
    for shape in ((0, 2), (2, 0)):
        x = torch.rand(*shape, 4, 4, dtype=F64, requires_grad=True)
        grid = torch.zeros(shape[0], 3, 3, 2, dtype=F64, requires_grad=True)
        ops.sample(x, grid).sum().backward()
        assert x.grad.shape == x.shape and grid.grad.shape == grid.shape


# ---------------------------------------------------------------------------------------------
# empty images, sizes past the index limit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pad", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("shape", [(1, 1, 0, 2), (1, 1, 3, 0), (1, 1, 0, 3, 3)])
def test_warp_empty_image_is_one_error_on_every_backend(backend, pad, shape):
    x = torch.rand(shape, dtype=F64)
    t = _theta("affine", 1, dims=len(shape) - 2, requires_grad=False)
    with pytest.raises(StnkitValueError, match=r"warp: expected input to have non-empty "
                                               r"spatial dimensions, got \(1, 1, "):
        ops.warp(x, t, padding_mode=pad, backend=backend, size=(3,) * (len(shape) - 2))


HUGE = [(2**40, 2**40), (2**31, 1), (46341, 46341)]


@pytest.mark.parametrize("size", HUGE)
@pytest.mark.parametrize("call", [
    lambda s: ops.affine_grid(torch.eye(2, 3)[None], s),
    lambda s: ops.projective_grid(torch.eye(3)[None], s),
    lambda s: ops.tps_grid(grids.tps_lattice(4)[None], s),
    lambda s: grids.tps_matrix(s, k=4),
    lambda s: ops.warp(torch.rand(1, 1, 4, 4), torch.eye(2, 3)[None], size=s, backend="torch"),
    lambda s: ops.warp(torch.rand(1, 1, 4, 4), torch.eye(2, 3)[None], size=s, backend="cpp"),
    lambda s: ops.warp(torch.rand(1, 1, 4, 4), torch.eye(2, 3)[None], size=s),
], ids=["affine_grid", "projective_grid", "tps_grid", "tps_matrix", "warp-torch", "warp-cpp",
        "warp-auto"])
def test_size_past_the_index_limit(call, size):
    """A clear error naming ``size``, the limit and the value, before any allocation."""
    with pytest.raises(StnkitValueError, match=rf"expected size to have at most 2147483647 "
                                               rf"\(2\*\*31 - 1\) pixels per image.*got "
                                               rf"\({size[0]}, {size[1]}\)"):
        call(size)


def test_size_limit_3d_and_the_largest_allowed():
    with pytest.raises(StnkitValueError, match="expected size to have at most 2147483647"):
        ops.affine_grid(torch.eye(3, 4)[None], (2**11, 2**10, 2**10))
    assert grids.check_grid_size((1, grids.MAX_PIXELS), 2, fn="t") == (1, grids.MAX_PIXELS)


def test_sample_grid_past_the_index_limit():
    grid = torch.zeros(1, 1, 1, 2).expand(1, 2**16, 2**15, 2)  # 2**31 points, a stride-0 view
    with pytest.raises(StnkitValueError, match=r"sample: expected grid to have at most "
                                               r"2147483647 .*points per image"):
        ops.sample(torch.rand(1, 1, 4, 4), grid)


# ---------------------------------------------------------------------------------------------
# user errors of the reference go through _checks.fail
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: reference.bilinear_kernel_grad(0.5, "nope"), "bilinear_kernel_grad: expected "
                                                          "subgradient one of"),
    (lambda: reference.pad_index(0, 4, "nope", False), "pad_index: expected padding_mode"),
    (lambda: reference.sample(torch.rand(1, 1, 2, 2), torch.zeros(1, 1, 1, 2), mode="nope"),
     "reference: expected mode one of"),
])
def test_reference_user_errors_are_stnkit_errors(call, match):
    with pytest.raises(StnkitValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# no hidden state: the TPS matrix is solved per call, or passed in
# ---------------------------------------------------------------------------------------------


def test_no_module_level_tps_cache():
    assert not any(isinstance(v, dict) and k.isupper() for k, v in vars(grids).items()), \
        "a module-level cache is global state"
    assert not hasattr(grids, "_TPS_CACHE") and not hasattr(grids, "_TPS_LOCK")


def test_tps_matrix_passed_in_gives_the_same_grid():
    src = grids.tps_lattice(16, dtype=F64)[None] + 0.05 * torch.randn(
        2, 16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = grids.tps_matrix((6, 7), k=16, dtype=F64)
    assert a.shape == (42, 16) and a.dtype == F64
    assert torch.equal(ops.tps_grid(src, (6, 7), matrix=a), ops.tps_grid(src, (6, 7)))
    dst = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [0.0, 1.0], [0.2, 0.1]])
    a32 = grids.tps_matrix((5, 5), dst_points=dst)
    assert a32.dtype == torch.float32
    s = src[:, :4].float()
    assert torch.equal(ops.tps_grid(s, (5, 5), dst_points=dst, matrix=a32),
                       ops.tps_grid(s, (5, 5), dst_points=dst))


@pytest.mark.parametrize("bad, err, match", [
    (torch.zeros(41, 16, dtype=F64), StnkitValueError, r"expected matrix of shape \(42, 16\)"),
    (torch.zeros(42, 16), StnkitTypeError, "expected matrix to have dtype torch.float64"),
])
def test_tps_grid_rejects_a_wrong_matrix(bad, err, match):
    with pytest.raises(err, match=match):
        ops.tps_grid(grids.tps_lattice(16, dtype=F64)[None], (6, 7), matrix=bad)


# ---------------------------------------------------------------------------------------------
# non-finite pixels: every backend follows grid_sample (sample.py, "Non-finite values")
# ---------------------------------------------------------------------------------------------

PADS = ["zeros", "border", "reflection"]
NONFINITE = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=F64)


def _poison(x: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """x with n random elements set to NaN, +Inf or -Inf."""
    flat = x.reshape(-1).clone()
    idx = torch.randint(0, flat.numel(), (n,), generator=g)
    flat[idx] = NONFINITE[torch.randint(0, 3, (n,), generator=g)]
    return flat.view_as(x)


def _grid_sample_grads(x, theta, size, mode, pad, align, go):
    """Output, grad input, grad theta of F.affine_grid + F.grid_sample (the oracle)."""
    xi, ti = x.clone().requires_grad_(), theta.clone().requires_grad_()
    grid = torch.nn.functional.affine_grid(ti, (x.shape[0], x.shape[1], *size),
                                           align_corners=align)
    out = torch.nn.functional.grid_sample(xi, grid, mode=mode, padding_mode=pad,
                                          align_corners=align)
    out.backward(go)
    return out.detach(), xi.grad, ti.grad


def _warp_grads(warp_fn, x, theta, size, mode, pad, align, go):
    xi, ti = x.clone().requires_grad_(), theta.clone().requires_grad_()
    out = warp_fn(xi, ti, size=size, mode=mode, padding_mode=pad, align_corners=align)
    out.backward(go)
    return out.detach(), xi.grad, ti.grad


def _same_pattern(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert torch.equal(a.isnan(), b.isnan()), \
        f"{what}: NaN at {a.isnan().sum()} places, grid_sample at {b.isnan().sum()}"
    assert torch.equal(a.isposinf(), b.isposinf()) and torch.equal(a.isneginf(),
                                                                    b.isneginf()), \
        f"{what}: +-Inf at other places than grid_sample"


def _check_nonfinite_case(warp_fn, seed, dims, mode, pad, align, knots):
    """One random case: poisoned pixels, a random theta (``knots``: whole-pixel translations
    at align_corners=True, so every coordinate is an integer and zero-weight taps are read),
    the upstream gradient NaN/Inf where the oracle's output is (so grad_input sees it)."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, 2, 5, 6) if dims == 2 else (2, 2, 3, 5, 4)
    if knots:  # n - 1 a power of 2: the oracle's own coordinates are exact integers too
        shape = (2, 2, 5, 9) if dims == 2 else (2, 2, 3, 5, 9)
    x = _poison(torch.rand(shape, dtype=F64, generator=g), 5, g)
    size = shape[2:]
    if knots:
        theta = torch.eye(dims, dims + 1, dtype=F64).repeat(2, 1, 1)
        steps = torch.randint(-2, 3, (2, dims), generator=g).to(F64)
        # one pixel is 2 / (n - 1) in normalised units with align_corners
        theta[:, :, -1] = steps * torch.tensor([2 / (n - 1) for n in reversed(size)], dtype=F64)
    else:
        theta = torch.eye(dims, dims + 1, dtype=F64) + 0.4 * torch.randn(
            2, dims, dims + 1, dtype=F64, generator=g)
    ref = _grid_sample_grads(x, theta, size, mode, pad, align, torch.ones(2, 2, *size,
                                                                          dtype=F64))
    go = torch.where(torch.isfinite(ref[0]), torch.randn(ref[0].shape, dtype=F64, generator=g),
                     ref[0])
    ref = _grid_sample_grads(x, theta, size, mode, pad, align, go)
    res = _warp_grads(warp_fn, x, theta, size, mode, pad, align, go)
    _same_pattern(res[0], ref[0], "output")
    _same_pattern(res[1], ref[1], "grad_input")
    if mode != "nearest":
        assert torch.equal(torch.isfinite(res[2]), torch.isfinite(ref[2])), \
            "grad theta: non-finite at other places than grid_sample's"
    finite = torch.isfinite(ref[0])
    err = (res[0][finite] - ref[0][finite]).abs().max().item() if finite.any() else 0.0
    assert err < 1e-9, f"finite outputs differ from grid_sample by {err}"


def _backend(name):
    def run(x, theta, **kw):
        return ops.warp(x, theta, backend=name, **kw)
    return run


# Triton's interpreter reduces with numpy, which warns on NaN sums
NUMPY_NAN_WARNING = "ignore:invalid value encountered:RuntimeWarning"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("knots", [False, True], ids=["random", "knots"])
def test_nonfinite_pixels_follow_grid_sample(backend, dims, knots):
    """The class of issue 12 item 1: NaN / +-Inf pixels at random places, random thetas,
    every mode and padding: the same NaN / Inf places as grid_sample in the output and
    grad_input, and grad theta non-finite at the same places."""
    modes = ["bilinear", "nearest"] + (["bicubic"] if dims == 2 and backend == "torch" else [])
    for seed in range(4):
        for mode in modes:
            for pad in PADS:
                for align in ([True] if knots else [False, True]):
                    _check_nonfinite_case(_backend(backend), 1000 * seed + dims, dims, mode,
                                          pad, align, knots)


def test_issue_example():
    x = torch.rand(1, 1, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    x[0, 0, 1, 2] = float("nan")
    th = torch.tensor([[[.9, .1, .05], [-.1, .8, .02]]], dtype=F64)
    grid = torch.nn.functional.affine_grid(th, (1, 1, 4, 4), align_corners=False)
    ref = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    for backend in BACKENDS:
        out = ops.warp(x, th, backend=backend)
        assert torch.equal(out.isnan(), ref.isnan()), f"{backend}: {out.isnan().sum()} NaN"
        x2 = x.nan_to_num(posinf=0.0).clone()
        x2[0, 0, 1, 2] = float("inf")
        out2, ref2 = ops.warp(x2, th, backend=backend), torch.nn.functional.grid_sample(
            x2, grid, align_corners=False)
        _same_pattern(out2, ref2, backend)


def _triton_kernels():
    """stnkit.ops.kernels.triton_gpu, interpreted on CPU (TRITON_INTERPRET=1 while triton
    and the kernels import, as tests/ops/kernels/test_triton_gpu.py does), or skip."""
    if "stnkit.ops.kernels._triton_2d" not in sys.modules:
        if "triton" in sys.modules and not torch.cuda.is_available():
            pytest.skip("triton was imported in compiled mode: run this test in its own "
                        "process")
        saved = os.environ.get("TRITON_INTERPRET")
        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
        try:
            pytest.importorskip("triton")
            import stnkit.ops.kernels._triton_2d  # noqa: F401
            import stnkit.ops.kernels._triton_3d  # noqa: F401
        finally:
            if saved is None:
                os.environ.pop("TRITON_INTERPRET", None)
            else:
                os.environ["TRITON_INTERPRET"] = saved
    from stnkit.ops.kernels import triton_gpu
    return triton_gpu


@pytest.mark.slow  # ~160 s under the interpreter on 2 cores
@pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")
@pytest.mark.filterwarnings(NUMPY_NAN_WARNING)
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("knots", [False, True], ids=["random", "knots"])
def test_nonfinite_pixels_follow_grid_sample_triton(monkeypatch, deterministic, dims, knots):
    """The same property for the Triton kernels (interpreter on CPU; fewer cases: slow)."""
    triton_gpu = _triton_kernels()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")

    def run(x, theta, *, size, **kw):
        out = triton_gpu.warp(x.to(device), theta.to(device), transform="affine", size=size,
                              deterministic=deterministic, **kw)
        return out.cpu()

    for mode in ["bilinear", "nearest"]:
        for pad in PADS:
            _check_nonfinite_case(run, 7 + dims, dims, mode, pad, True, knots)


# ---------------------------------------------------------------------------------------------
# reflection at huge coordinates (sample.py, "huge finite coordinates")
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("dtype, magnitudes", [(F64, [1e3, 1e6, 1e9]),
                                               (torch.float32, [1e2, 1e3, 1e4])])
def test_reflection_matches_grid_sample_while_coordinates_are_precise(align, dtype,
                                                                      magnitudes):
    """Where |x_pix| * eps is well below a pixel every backend agrees with grid_sample to
    about |x_pix| * eps (times the image's slope, at most 1 here)."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 2, 5, 7, dtype=dtype, generator=g)
    eps = torch.finfo(dtype).eps
    for m in magnitudes:
        th = torch.tensor([[[1.3, 0.2, m], [-0.1, 0.9, -0.7 * m]]], dtype=dtype)
        grid = torch.nn.functional.affine_grid(th, (1, 2, 4, 6), align_corners=align)
        ref = torch.nn.functional.grid_sample(x, grid, padding_mode="reflection",
                                              align_corners=align)
        tol = 64 * m * 7 * eps
        got = {"sample": ops.sample(x, grid, padding_mode="reflection", align_corners=align)}
        for backend in BACKENDS:
            got[backend] = ops.warp(x, th, size=(4, 6), padding_mode="reflection",
                                    align_corners=align, backend=backend)
        for name, out in got.items():
            err = (out - ref).abs().max().item()
            assert err <= tol, f"{name} at {m:g}: {err=} > {tol=}"


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("magnitude", [1e6, 1e7, 3e7, 1e20, 1e30])
def test_reflection_at_huge_float32_coordinates_is_the_exact_mirror(align, magnitude):
    """Far beyond where float32 holds whole pixels (grid_sample gives rounding noise there):
    ``sample`` returns the exact mirror image of the pixel coordinate it computed, so a
    sample inside the image; every backend's output is finite, inside the image's range, and
    its theta gradient finite."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 1, 5, 7, dtype=torch.float32, generator=g)
    th = torch.tensor([[[1.3, 0.2, magnitude], [-0.1, 0.9, -0.7 * magnitude]]])
    grid = ops.affine_grid(th, (4, 6), align_corners=align)
    out = ops.sample(x, grid, padding_mode="reflection", align_corners=align)
    # the expected value, from the same float32 pixel coordinates, mirrored in float64
    pix = []
    for d, n in enumerate((7, 5)):  # x along W, y along H
        c = grid[..., d]
        p = (c + 1) * ((n - 1) / 2) if align else (c + 1) * (n / 2) - 0.5  # float32, as sample
        low, span = (0.0, n - 1.0) if align else (-0.5, float(n))
        t = torch.fmod(p.double(), 2 * span) - low  # exact (float64 p - low would round)
        e = torch.fmod(t.abs(), 2 * span)
        p = (torch.where(e > span, 2 * span - e, e) + low).clamp(0, n - 1)
        pix.append(p)
    expect = ops.sample(x.double(), torch.stack(
        [2 * pix[0] / 6 - 1 if align else (2 * pix[0] + 1) / 7 - 1,
         2 * pix[1] / 4 - 1 if align else (2 * pix[1] + 1) / 5 - 1], dim=-1),
        padding_mode="border", align_corners=align)
    err = (out.double() - expect).abs().max().item()
    assert err < 1e-5, f"not the exact mirror: {err=}"
    for backend in BACKENDS:
        xi, ti = x.clone().requires_grad_(), th.clone().requires_grad_()
        o = ops.warp(xi, ti, size=(4, 6), padding_mode="reflection", align_corners=align,
                     backend=backend)
        assert torch.isfinite(o).all() and (o >= x.min()).all() and (o <= x.max()).all(), \
            f"{backend}: outside the image's range"
        o.sum().backward()
        assert torch.isfinite(ti.grad).all() and torch.isfinite(xi.grad).all(), backend


def test_reflection_at_huge_exact_coordinates_agrees_everywhere():
    """Huge coordinates that float32 holds exactly (align_corners, spans of 2**k pixels): the
    arithmetic of every path is exact, and all agree with grid_sample."""
    x = torch.rand(1, 2, 5, 5, generator=torch.Generator().manual_seed(5))
    for t in (2.0**21 + 0.5, -(2.0**22) - 0.5, 2.0**22 + 1.5):  # multiples of the ulp 0.5
        th = torch.tensor([[[1.0, 0.0, t], [0.0, -1.0, -t]]])
        grid = torch.nn.functional.affine_grid(th, (1, 2, 5, 5), align_corners=True)
        ref = torch.nn.functional.grid_sample(x, grid, padding_mode="reflection",
                                              align_corners=True)
        outs = [ops.sample(x, grid, padding_mode="reflection", align_corners=True)]
        outs += [ops.warp(x, th, padding_mode="reflection", align_corners=True, backend=b)
                 for b in BACKENDS]
        for out in outs:
            assert (out - ref).abs().max() < 1e-6, f"{t=}"


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("pad", ["zeros", "border", "reflection"])
def test_nonfinite_projective_theta_is_one_rule_on_every_backend(value, pad):
    """A non-finite entry anywhere in a homography: every backend gives the same output
    (fuzz finding: theta[2, 2] = inf made w = +inf, so the torch path read u / w = 0, the
    input's centre, while the fused kernels treated the point as outside)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 5, 6, generator=g, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            theta = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
            theta[0, i, j] = value  # the second image keeps a good theta
            outs = {b: ops.warp(x, theta, transform="projective", backend=b, padding_mode=pad)
                    for b in BACKENDS}
            assert torch.equal(outs[BACKENDS[-1]].isnan(), outs["torch"].isnan()), (i, j)
            assert torch.allclose(outs[BACKENDS[-1]].nan_to_num(), outs["torch"].nan_to_num(),
                                  atol=1e-12), (i, j)
            assert torch.allclose(outs["torch"][1], x[1], atol=1e-12)
