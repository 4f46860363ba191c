"""triton_gpu: the fused Triton kernels against the torch path (= F.grid_sample semantics).

Runs on CUDA when there is a GPU, else on the CPU under Triton's interpreter
(``TRITON_INTERPRET=1``: set while this module imports triton and the kernels, and per test
with monkeypatch, so no other test sees it).
Skipped when triton is not installed. Shapes are tiny: the interpreter runs each program in
numpy. Thetas keep every sample point ``MARGIN`` away from integers and half-integers
(knots, nearest ties, reflection folds) except in the sub-gradient test.

TPS (kinds "tps4", "tps16": K = 4, 16 control points): the kernels take the spline weights
W = ``tps_weights(src)`` (B, K + 3, 2); the reference is ``_library.torch_path`` with the
same W (basis @ W + ``sample``), grad W by autograd through it.
"""

import os
import sys

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

if DEVICE == "cpu":
    # Triton decides interpreted-or-compiled when it decorates a kernel, its own library
    # (tl.zeros, ...) included, so triton and our kernels module must be imported with
    # TRITON_INTERPRET=1; the variable is restored at once (the autouse fixture sets it
    # again per test, for ``supports``).
    if "triton" in sys.modules and "stnkit.ops.kernels._triton_2d" not in sys.modules:
        pytest.skip("triton was imported before this module (compiled mode): run these "
                    "tests in their own process", allow_module_level=True)
    _saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        triton = pytest.importorskip("triton")
        import stnkit.ops.kernels._triton_2d  # noqa: F401
    finally:
        if _saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = _saved
else:
    triton = pytest.importorskip("triton")

from stnkit.ops import warp
from stnkit.ops.grids import tps_basis, tps_lattice, tps_weights
from stnkit.ops.kernels import triton_gpu
from stnkit.ops.kernels._library import torch_path

from ._cases import (F32, F64, KINDS, MARGIN, MODES, PADS, TOL, behind_camera, check_against,
                     check_huge_finite_coordinates, check_infinite_output_gradient,
                     check_partial, close, gen, raw_theta, theta_away_from_knots, transform_of)

# The interpreter emulates GPU float arithmetic with numpy, which warns on the NaN / Inf
# that the non-finite tests feed it on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

SHAPE, SIZE = (2, 2, 5, 6), (4, 5)
SHAPES = {"affine": (SHAPE, SIZE), "projective": (SHAPE, SIZE),
          "affine3d": ((2, 2, 3, 4, 5), (2, 3, 4)), "tps4": (SHAPE, SIZE), "tps16": (SHAPE, SIZE)}
TPS_KINDS = ["tps4", "tps16"]


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def _transform(kind):
    return "tps" if kind in TPS_KINDS else transform_of(kind)


def _triton(x, theta, kind, size, mode, pad, align, deterministic=False):
    return triton_gpu.warp(x, theta, transform=_transform(kind), size=size, mode=mode,
                           padding_mode=pad, align_corners=align, deterministic=deterministic)


def _torch_path(x, theta, kind, size, mode, pad, align, deterministic=False):
    """The reference; a TPS theta is its spline weights, so TPS runs the operators' torch
    path (``warp`` takes source points)."""
    if kind in TPS_KINDS:
        return torch_path(x, theta, size, "tps", mode, pad, align)
    return warp(x, theta, transform=transform_of(kind), size=size, mode=mode, padding_mode=pad,
                align_corners=align, backend="torch")


def _tps_away_from_knots(k, batch, in_size, out_size, align, dtype, seed=0, strength=0.1):
    """Spline weights (B, K + 3, 2) of the lattice moved by N(0, strength), whose sample points
    all stay MARGIN away from integers and half-integers (as ``theta_away_from_knots``)."""
    basis = tps_basis(out_size, k, align_corners=align, dtype=F64)  # (P, K + 3)
    sizes = torch.tensor([in_size[1], in_size[0]], dtype=F64)  # (W, H)
    for s in range(seed, seed + 500):
        src = tps_lattice(k, dtype=F64) + strength * torch.randn(batch, k, 2, dtype=F64,
                                                                 generator=gen(s))
        w = tps_weights(src)
        grid = basis @ w  # (B, P, 2)
        pix = (grid + 1) / 2 * (sizes - 1) if align else ((grid + 1) * sizes - 1) / 2
        dist = ((2 * pix) - (2 * pix).round()).abs().min().item() / 2
        if dist > MARGIN[dtype]:
            return w.to(dtype)
    raise AssertionError("no suitable spline found")


def _run(fn, x, theta, g, kind, size, mode, pad, align, need=(True, True), det=False):
    xi = x.clone().to(DEVICE).requires_grad_(need[0])
    ti = theta.clone().to(DEVICE).requires_grad_(need[1])
    out = fn(xi, ti, kind, size, mode, pad, align, det)
    out.backward(g.to(DEVICE))
    return out.detach(), xi.grad, ti.grad


def _inputs(kind, dtype, align, seed=0, shape=None, size=None):
    shape, size = (shape, size) if shape is not None else SHAPES[kind]
    x = torch.randn(shape, dtype=dtype, generator=gen(seed + 100))
    if kind in TPS_KINDS:
        theta = _tps_away_from_knots(int(kind[3:]), shape[0], shape[2:], size, align, dtype,
                                     seed)
    else:
        theta = theta_away_from_knots(kind, shape[0], shape[2:], size, align, dtype, seed)
    g = torch.randn(shape[0], shape[1], *size, dtype=dtype, generator=gen(seed + 200))
    return x, theta, g


# ---------------------------------------------------------------------------------------------
# against the torch path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS + TPS_KINDS)
def test_matches_torch(kind, mode, pad, align, dtype):
    x, theta, g = _inputs(kind, dtype, align)
    size = SHAPES[kind][1]
    res = _run(_triton, x, theta, g, kind, size, mode, pad, align)
    ref = _run(_torch_path, x, theta, g, kind, size, mode, pad, align)
    assert res[0].dtype == dtype and res[0].device == x.to(DEVICE).device
    check_against(res, ref, mode, TOL[dtype])


@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS + ["tps4"])
def test_deterministic_backward(kind, mode, pad):
    """The sorted-pull grad_input equals the atomic one up to rounding and repeats its bits."""
    x, theta, g = _inputs(kind, F64, False, seed=1)
    size = SHAPES[kind][1]
    fast = _run(_triton, x, theta, g, kind, size, mode, pad, False)
    det = [_run(_triton, x, theta, g, kind, size, mode, pad, False, det=True)
           for _ in range(2)]
    for a, b, what in zip(fast, det[0], ("output", "grad input", "grad theta")):
        close(b, a, 1e-12, what)
    for a, b in zip(det[0], det[1]):
        assert torch.equal(a, b), "deterministic mode changed bits between runs"


def test_output_size_and_batch():
    """Output size unlike the input's, more than one program per image, batch == per-sample."""
    shape, size = (3, 2, 12, 5), (17, 19)  # 323 output pixels: two programs of 256
    x = torch.randn(shape, dtype=F64, generator=gen(1))
    theta = theta_away_from_knots("affine", 3, shape[2:], size, False, F64, seed=3)
    out = _triton(x.to(DEVICE), theta.to(DEVICE), "affine", size, "bilinear", "zeros", False)
    ref = _torch_path(x, theta, "affine", size, "bilinear", "zeros", False)
    close(out, ref, 1e-10, "batch")
    for b in range(3):
        one = _triton(x[b:b + 1].to(DEVICE), theta[b:b + 1].to(DEVICE), "affine", size,
                      "bilinear", "zeros", False)
        assert torch.equal(one, out[b:b + 1]), f"sample {b} differs from its batch result"


@pytest.mark.parametrize("kind", KINDS + ["tps4"])
def test_gradcheck(kind):
    shape, size = ((1, 2, 4, 5), (3, 4)) if kind != "affine3d" else ((1, 1, 3, 3, 4), (2, 2, 3))
    # TPS: the weights only (its grad_input is the other families' code; the interpreter is slow)
    x = torch.randn(shape, dtype=F64, generator=gen(0)).to(DEVICE).requires_grad_(
        kind not in TPS_KINDS)
    if kind in TPS_KINDS:
        theta = _tps_away_from_knots(4, 1, shape[2:], size, False, F64, seed=5)
    else:
        theta = theta_away_from_knots(kind, 1, shape[2:], size, False, F64, seed=5)
    theta = theta.to(DEVICE).requires_grad_()
    fn = lambda a, t: _triton(a, t, kind, size, "bilinear", "border", False)
    assert torch.autograd.gradcheck(fn, (x, theta), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("pad", PADS)
def test_identity_and_subgradient_at_pixel_centres(pad):
    """Identity theta: the output is the input bit for bit (float32 too), and every point
    sits on a pixel centre, where grad theta takes the right derivative (as the torch path)."""
    size = (5, 6)
    for align in (False, True):
        x = torch.randn(2, 2, *size, dtype=F32, generator=gen(2)).to(DEVICE)
        theta = torch.eye(2, 3, dtype=F32).repeat(2, 1, 1).to(DEVICE)
        out = _triton(x, theta, "affine", size, "bilinear", pad, align)
        assert torch.equal(out, x), f"identity is not identity ({align=})"
    x, _, g = _inputs("affine", F64, True, seed=2, shape=(2, 2, 5, 6), size=size)
    theta = torch.eye(2, 3, dtype=F64).repeat(2, 1, 1)
    res = _run(_triton, x, theta, g, "affine", size, "bilinear", pad, True)
    ref = _run(_torch_path, x, theta, g, "affine", size, "bilinear", pad, True)
    for a, b, what in zip(res, ref, ("output", "grad input", "grad theta")):
        close(a, b, 1e-12, what)


@pytest.mark.parametrize("need", [(True, False), (False, True)])
def test_partial_gradients(need):
    """Only one of input / theta requires grad (an STN's first layer: only theta)."""
    x, theta, g = _inputs("projective", F64, True, seed=3)
    _, gx, gt = _run(_triton, x, theta, g, "projective", SIZE, "bilinear", "reflection", True,
                     need=need)
    _, rgx, rgt = _run(_torch_path, x, theta, g, "projective", SIZE, "bilinear", "reflection",
                       True, need=need)
    check_partial((gx, gt), (rgx, rgt), need)


def test_no_grad_empty_and_unmutated():
    x, theta, _ = _inputs("affine", F64, False)
    x, theta = x.to(DEVICE), theta.to(DEVICE)
    x0, t0 = x.clone(), theta.clone()
    with torch.inference_mode():
        a = _triton(x, theta, "affine", SIZE, "bilinear", "zeros", False)
    assert not a.requires_grad and torch.equal(x, x0) and torch.equal(theta, t0)
    empty = _triton(x[:0], theta[:0], "affine", SIZE, "bilinear", "zeros", False)
    assert empty.shape == (0, 2, *SIZE)
    xe = x[:, :0].clone().requires_grad_()
    te = theta.clone().requires_grad_()
    out = _triton(xe, te, "affine", SIZE, "bilinear", "zeros", False)
    out.sum().backward()
    assert out.shape == (2, 0, *SIZE) and (te.grad == 0).all()


# ---------------------------------------------------------------------------------------------
# thin-plate splines (the families' shared sampling is covered by the tests above)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [4, 16])
def test_tps_identity(k):
    """The lattice's own weights (solved in float64) are the identity: output == input bit
    for bit, the solve's rounding within the snapping distance. Except K = 16 in float64,
    whose weights are 4e-15 off (normalised), more than that distance, on the torch path
    too: there the output is the input up to rounding."""
    size = (5, 6)
    w64 = tps_weights(tps_lattice(k, dtype=F64)[None].repeat(2, 1, 1))
    for dtype in (F32, F64):
        x = torch.randn(2, 2, *size, dtype=dtype, generator=gen(2)).to(DEVICE)
        for align in (False, True):
            out = _triton(x, w64.to(dtype).to(DEVICE), f"tps{k}", size, "bilinear", "zeros",
                          align)
            if k == 4 or dtype == F32:
                assert torch.equal(out, x), f"identity is not identity ({dtype=}, {align=})"
            else:
                close(out, x, 1e-13, f"identity ({align=})")


@pytest.mark.parametrize("deterministic", [False, True])
def test_tps_16_bit_image(deterministic):
    """A float16 image with float32 weights: loaded as float16, computed in float32, stored
    as float16. So the result is the float32 run on the same values, rounded once (grad W,
    float32, identical): bit for bit where the order of sums is fixed (grad_input by atomics
    on a GPU is not)."""
    x, w, g = _inputs("tps16", F32, False, seed=4)
    x, g = x.half(), g.half()
    half = _run(_triton, x, w, g, "tps16", SIZE, "bilinear", "reflection", False,
                det=deterministic)
    full = _run(_triton, x.float(), w, g.float(), "tps16", SIZE, "bilinear", "reflection",
                False, det=deterministic)
    assert half[0].dtype == half[1].dtype == torch.float16 and half[2].dtype == F32
    exact = deterministic or DEVICE == "cpu"
    for a, b, what in zip(half, full, ("output", "grad input", "grad W")):
        b = b.to(a.dtype)
        if exact:
            assert torch.equal(a, b), f"{what}: not the float32 result rounded once"
        else:
            close(a, b, 2 * torch.finfo(a.dtype).eps, what)


def test_tps_through_warp():
    """warp(transform="tps", backend="triton") takes source points, hands the kernels their
    weights, and matches the torch backend, grad to the source points included."""
    size = (6, 7)
    src = tps_lattice(9, dtype=F64) + 0.1 * torch.randn(2, 9, 2, dtype=F64, generator=gen(6))
    x = torch.randn(2, 3, 5, 6, dtype=F64, generator=gen(7))
    g = torch.randn(2, 3, *size, dtype=F64, generator=gen(8))
    res = []
    for backend, device in (("triton", DEVICE), ("torch", "cpu")):
        xi = x.clone().to(device).requires_grad_()
        si = src.clone().to(device).requires_grad_()
        out = warp(xi, si, transform="tps", size=size, mode="bilinear", padding_mode="border",
                   align_corners=False, backend=backend)
        out.backward(g.to(device))
        res.append((out.detach(), xi.grad, si.grad))
    for a, b, what in zip(*res, ("output", "grad input", "grad source points")):
        close(a, b, 1e-10, what)


@pytest.mark.parametrize("shape, size, align", [((2, 1, 12, 5), (17, 19), False),
                                               ((2, 1, 4, 5), (1, 6), True)])
def test_tps_output_sizes(shape, size, align):
    """Two programs per image (323 output pixels: grad W summed over their partial sums), and
    a one-pixel axis with align_corners (the output point sits at 0 there)."""
    x, w, g = _inputs("tps16", F64, align, seed=5, shape=shape, size=size)
    res = _run(_triton, x, w, g, "tps16", size, "bilinear", "border", align)
    ref = _run(_torch_path, x, w, g, "tps16", size, "bilinear", "border", align)
    check_against(res, ref, "bilinear", TOL[F64])


@pytest.mark.parametrize("det", [False, True])
def test_tps_opcheck(det):
    """stnkit::warp_triton and its backward with a TPS: schema, autograd registration, fake
    tensors (shape propagation under torch.compile / export; the rest of opcheck compiles,
    which needs a GPU)."""
    from torch.library import opcheck

    x, w, g = _inputs("tps4", F64, False, seed=9)
    x, w, g = x.to(DEVICE), w.to(DEVICE), g.to(DEVICE)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if DEVICE == "cuda":
        utils += ("test_aot_dispatch_dynamic",)
    args = (list(SIZE), "tps", "bilinear", "zeros", False, det)
    opcheck(torch.ops.stnkit.warp_triton, (x.requires_grad_(), w.requires_grad_(), *args),
            test_utils=utils)
    for mask in ([True, True], [False, True]):
        opcheck(torch.ops.stnkit.warp_triton_backward,
                (g, x.detach(), w.detach(), *args, mask), test_utils=utils[:3])


@pytest.mark.parametrize("pad", PADS)
def test_tps_non_finite_weights_are_outside(pad):
    """NaN / Inf weights put the points outside in every padding mode, with zero gradients."""
    _, w, _ = _inputs("tps4", F64, False)
    w[0] = float("nan")
    w[1, 0, 0] = float("inf")
    x = torch.randn(SHAPE, dtype=F64)
    out, gx, gw = _run(_triton, x, w, torch.ones(2, 2, *SIZE, dtype=F64), "tps4", SIZE,
                       "bilinear", pad, False)
    assert (out == 0).all(), "NaN / Inf coordinates must sample 0"
    assert (gx == 0).all() and (gw == 0).all()


# ---------------------------------------------------------------------------------------------
# non-finite and huge coordinates (contracts.md "Non-finite coordinates")
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("det", [False, True])
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("kind", KINDS)
def test_nan_theta_is_outside(kind, pad, det):
    shape, size = SHAPES[kind]
    theta = raw_theta(kind, 2, 0, 0.2)
    theta[0] = float("nan")
    theta[1, 0, 0] = float("inf")
    x = torch.randn(shape, dtype=F64)
    out, gx, gt = _run(_triton, x, theta, torch.ones(2, 2, *size, dtype=F64), kind, size,
                       "bilinear", pad, False, det=det)
    assert (out == 0).all(), "NaN / Inf coordinates must sample 0"
    assert (gx == 0).all() and (gt == 0).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pad", PADS)
def test_projective_behind_camera(pad, mode):
    """w <= 0 on part of the output: those points are outside in every padding mode."""
    x, h, size = behind_camera()
    g = torch.ones(2, 2, *size, dtype=F64)
    res = _run(_triton, x, h, g, "projective", size, mode, pad, False)
    ref = _run(_torch_path, x, h, g, "projective", size, mode, pad, False)
    for a, b, what in zip(res, ref, ("output", "grad input", "grad theta")):
        close(a, b, 1e-9, what)


def test_huge_finite_coordinates():
    check_huge_finite_coordinates(_triton, DEVICE)


@pytest.mark.parametrize("kind", KINDS)
def test_infinite_output_gradient_stays_in_its_footprint(kind):
    check_infinite_output_gradient(_triton, _torch_path, kind, *SHAPES[kind], DEVICE)


# ---------------------------------------------------------------------------------------------
# supports / dispatch
# ---------------------------------------------------------------------------------------------


def _supports(x, theta=None, transform="affine", mode="bilinear", pad="zeros"):
    theta = torch.eye(2, 3)[None] if theta is None else theta
    return triton_gpu.supports(x, theta, transform=transform, mode=mode, padding_mode=pad)


def test_supports_reasons(monkeypatch):
    x = torch.zeros(1, 1, 4, 4, device=DEVICE)
    assert _supports(x) is None
    assert _supports(x, transform="projective") is None
    assert _supports(x, torch.zeros(1, 19, 2), transform="tps") is None  # K = 16 weights
    assert "bicubic" in _supports(x, mode="bicubic")
    assert _supports(x.half()) is None  # 16-bit images: loaded as such, computed in float32
    assert _supports(x.bfloat16()) is None
    assert "floating" in _supports(x.int())
    x3 = torch.zeros(1, 1, 2, 2, 2, device=DEVICE)
    assert _supports(x3, torch.zeros(1, 3, 4)) is None
    assert "affine" in _supports(x3, torch.eye(3)[None], transform="projective")
    assert "affine" in _supports(x3, torch.zeros(1, 7, 2), transform="tps")
    if DEVICE == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET")
        assert "CUDA" in _supports(x)
    monkeypatch.setattr(triton_gpu, "triton", None)
    assert "triton cannot be imported" in _supports(x)


def test_dispatch_through_warp():
    """backend="triton" reaches the kernels; a call they do not support raises."""
    x, theta, _ = _inputs("affine", F64, False)
    x, theta = x.to(DEVICE), theta.to(DEVICE)
    out = warp(x, theta, size=SIZE, align_corners=False, backend="triton")
    assert torch.equal(out, _triton(x, theta, "affine", SIZE, "bilinear", "zeros", False))
    with pytest.raises(ValueError, match="bicubic"):
        warp(x, theta, size=SIZE, mode="bicubic", align_corners=False, backend="triton")
    # the index limit is checked by warp itself, for every backend alike
    with pytest.raises(ValueError, match=r"warp: expected size to have at most 2147483647 "
                                         r"\(2\*\*31 - 1\) pixels per image, the index limit, "
                                         r"got \(65536, 32768\)"):
        warp(x, theta, size=(2**16, 2**15), align_corners=False, backend="triton")


@pytest.mark.parametrize("dtype", [F64, F32])
def test_near_knot_points_are_snapped(dtype):
    """Quarter turns and a 2x upscale with align_corners put points on pixel centres up to
    rounding (cos(pi/2) is 6e-17, not 0): snapped onto them like the torch path, they get
    the right derivative there, not whichever side the rounding picked."""
    size = (6, 6)
    angles = torch.tensor([0.5, 1.0, 1.5], dtype=F64) * torch.pi
    c, s = torch.cos(angles), torch.sin(angles)
    theta = torch.stack([torch.stack([c, -s, 0 * c], -1), torch.stack([s, c, 0 * c], -1)], 1)
    theta = torch.cat([theta, torch.tensor([[[0.5, 0, 0], [0, 0.5, 0]]], dtype=F64)])
    theta = theta.to(dtype)
    x = torch.randn(4, 1, *size, dtype=dtype, generator=gen(8))
    g = torch.randn(4, 1, *size, dtype=dtype, generator=gen(9))
    for align in (False, True):
        res = _run(_triton, x, theta, g, "affine", size, "bilinear", "zeros", align)
        ref = _run(_torch_path, x, theta, g, "affine", size, "bilinear", "zeros", align)
        for a, b, what in zip(res, ref, ("output", "grad input", "grad theta")):
            close(a, b, TOL[dtype], f"{what} ({align=})")


def test_benchmark_script_smoke():
    """benchmarks/warp_gpu.py --smoke runs (interpreter on the CPU) and prints its table."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "warp_gpu.py"
    env = dict(os.environ)
    if DEVICE == "cpu":
        env["TRITON_INTERPRET"] = "1"
    r = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True,
                       text=True, timeout=300, env=env, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| (")]
    assert len(rows) == 8, r.stdout  # a 2-D and a 3-D shape, 4 methods each
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[2]) > 0 and float(cells[3]) > 0, line
        assert float(cells[6]) < 1e-5, line  # agrees with PyTorch eager (float32)
    assert "| triton det |" in r.stdout and "| same |" in r.stdout
