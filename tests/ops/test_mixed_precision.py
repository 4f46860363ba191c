"""Mixed precision: the policy of ``stnkit.ops`` ("Mixed precision") for every op.

For every op (``warp``: affine, attention, projective, TPS, 3-D affine; ``sample`` 2-D and
3-D; the grid generators) in bilinear / nearest / bicubic where it has them, with the input
in {bfloat16, float16, float32, float64} and theta (or the grid) in {float32, float64,
bfloat16, float16}:

- dtypes: output and grad_input have the input's dtype, grad_theta (grad_grid) theta's; a
  grid generator returns theta's dtype (computed in float32 for a 16-bit theta);
- values: against the same call in float64 on the same (rounded) operands, with the same
  backend (cpp, torch or triton), upstream gradient exactly representable in the input's
  dtype.

Tolerances, from the dtypes' epsilons. With ``eps(d) = torch.finfo(d).eps``, ``c`` the
compute dtype (float64 if an operand is float64, else float32), R the float64 reference
and ``span`` = 1 + the largest |pixel coordinate| of the sample points (a coordinate computed
in ``c`` is off by about ``eps(c) * span`` pixels):

    |Q - R| <= eps(dtype of Q) * max|R|  +  K * eps(c) * span * S_Q,      K = 64

The first term bounds the rounding of the result to its dtype (half an ulp; a whole one
under the Triton interpreter, which truncates float32 -> bfloat16 where a GPU rounds). The
second is the computation in ``c``; ``S_Q`` is the scale of the terms that make up Q (so
that cancellation cannot decide the check):

- output: max|input| (an interpolation moves by a few times max|input| per pixel of
  coordinate error);
- grad_input: max of the reference grad_input under |upstream gradient|
  (sum_i |g_i| W_q(x_i));
- grad_theta: max of |J|^T |grad_grid| (J the float64 Jacobian of the grid in theta,
  grad_grid the reference's);
- grad_grid (``sample``): max|R| + max|input| * the largest size.

K covers a few ulps per operation, up to 16 taps and the sums (measured: float32 results
use at most 3 % of their tolerance). Coordinates computed in 16 bits, or a 16-bit
accumulator, would exceed it by far (eps 2**-8 or 2**-11 against 2**-23): both mutations,
tried on the torch path, fail these tests.

Sample points within 1e-3 pixels of a multiple of 0.5 (bilinear knots, nearest ties, border
clip points and reflection folds, where the result is not continuous in the coordinate and
a coordinate rounded differently lands on the other side) get zero upstream gradient and are
left out of the output comparison; borders and knots have their own tests elsewhere.

Also: integer / complex / bool operands keep their TypeError; ``torch.autocast`` neither
reaches inside the ops nor stops them; every zoo model with a spatial transformer trains
(forward and backward) under ``torch.autocast("cpu", dtype=torch.bfloat16)`` with a finite
gradient for every parameter and a loss within ``4 * eps(bfloat16) * max(1, loss)`` of the
float32 loss (the bfloat16 convolutions and linear layers round their inputs to 8 bits).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from stnkit.ops import affine_grid, projective_grid, sample, tps_grid, warp
from stnkit.ops.grids import tps_lattice

F64, F32, BF16, F16 = torch.float64, torch.float32, torch.bfloat16, torch.float16
INPUT_DTYPES = [BF16, F16, F32, F64]
THETA_DTYPES = [F32, F64, BF16, F16]
K = 64
MARGIN = 1e-3  # pixels from a multiple of 0.5


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def _compute(*dtypes: torch.dtype) -> torch.dtype:
    return F64 if F64 in dtypes else F32


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _id(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


# ---------------------------------------------------------------------------------------------
# cases: random thetas (float64) and the grid generator of each transform
# ---------------------------------------------------------------------------------------------


def _theta(kind: str, batch: int, seed: int) -> torch.Tensor:
    g = _gen(seed)
    if kind == "affine":
        return torch.eye(2, 3, dtype=F64) + 0.25 * torch.randn(batch, 2, 3, generator=g,
                                                               dtype=F64)
    if kind == "attention":  # [[s, 0, tx], [0, s, ty]]
        s = 0.6 + 0.5 * torch.rand(batch, generator=g, dtype=F64)
        t = 0.3 * torch.randn(batch, 2, generator=g, dtype=F64)
        z = torch.zeros_like(s)
        return torch.stack([s, z, t[:, 0], z, s, t[:, 1]], 1).view(batch, 2, 3)
    if kind == "projective":  # a mild perspective: w > 0.5 over the output
        h = torch.eye(3, dtype=F64) + 0.2 * torch.randn(batch, 3, 3, generator=g, dtype=F64)
        h[:, 2, :2] *= 0.3
        h[:, 2, 2] = 1.0
        return h
    if kind == "tps":
        return tps_lattice(16, dtype=F64)[None] + 0.1 * torch.randn(batch, 16, 2, generator=g,
                                                                    dtype=F64)
    assert kind == "affine3d"
    return torch.eye(3, 4, dtype=F64) + 0.2 * torch.randn(batch, 3, 4, generator=g, dtype=F64)


def _grid_fn(kind: str):
    return {"projective": projective_grid, "tps": tps_grid}.get(kind, affine_grid)


def _transform(kind: str) -> str:
    return {"projective": "projective", "tps": "tps"}.get(kind, "affine")


@dataclass(frozen=True)
class Case:
    kind: str  # affine, attention, projective, tps, affine3d
    mode: str
    pad: str
    backend: str  # warp's backend ("auto": cpp for what it supports, else torch)
    shape: tuple  # input (B, C, *S)
    size: tuple  # output spatial size
    align: bool = False

    def __str__(self) -> str:
        return f"{self.kind}-{self.mode}-{self.pad}-{self.backend}{'-align' * self.align}"


WARP_CASES = [
    Case("affine", "bilinear", "zeros", "auto", (2, 2, 11, 13), (9, 10)),
    Case("affine", "bilinear", "reflection", "torch", (2, 1, 11, 13), (9, 10), True),
    Case("affine", "nearest", "border", "auto", (2, 2, 11, 13), (9, 10)),
    Case("affine", "bicubic", "zeros", "auto", (2, 2, 11, 13), (9, 10)),
    Case("attention", "bilinear", "border", "auto", (2, 3, 12, 12), (8, 8)),
    Case("projective", "bilinear", "reflection", "auto", (2, 2, 11, 13), (9, 10)),
    Case("projective", "bicubic", "border", "torch", (2, 1, 11, 13), (9, 10), True),
    Case("tps", "bilinear", "zeros", "auto", (2, 2, 12, 12), (10, 10)),
    Case("tps", "nearest", "reflection", "torch", (2, 1, 12, 12), (10, 10)),
    Case("affine3d", "bilinear", "zeros", "auto", (2, 2, 5, 6, 7), (4, 5, 6)),
    Case("affine3d", "nearest", "border", "auto", (2, 1, 5, 6, 7), (4, 5, 6), True),
]

SAMPLE_CASES = [
    Case("affine", "bilinear", "zeros", "-", (2, 2, 11, 13), (9, 10)),
    Case("affine", "nearest", "reflection", "-", (2, 2, 11, 13), (9, 10)),
    Case("affine", "bicubic", "border", "-", (2, 1, 11, 13), (9, 10), True),
    Case("affine3d", "bilinear", "reflection", "-", (2, 2, 5, 6, 7), (4, 5, 6)),
]


def _pixels(grid: torch.Tensor, in_size, align: bool) -> torch.Tensor:
    """(..., nd) pixel coordinates of a normalised float64 grid (x along the last dim)."""
    sizes = torch.tensor(list(reversed(in_size)), dtype=F64)  # (W, H[, D])
    return (grid + 1) / 2 * (sizes - 1) if align else ((grid + 1) * sizes - 1) / 2


def _safe(grid: torch.Tensor, in_size, align: bool) -> torch.Tensor:
    """(B, *out) bool: the point is MARGIN away from every multiple of 0.5 on every axis."""
    pix = _pixels(grid, in_size, align)
    dist = ((2 * pix) - (2 * pix).round()).abs() / 2
    return (dist > MARGIN).all(dim=-1)


def _span(grid: torch.Tensor, in_size, align: bool) -> float:
    pix = _pixels(grid, in_size, align)
    return 1.0 + max(pix[torch.isfinite(pix)].abs().max().item(), max(in_size))


def _operands(case: Case, in_dtype, theta_dtype, seed=0):
    """x, theta (rounded to their dtypes), the float64 reference grid of the rounded theta,
    and the upstream gradient (zero at unsafe points, representable in in_dtype)."""
    x = (2 * torch.rand(case.shape, generator=_gen(seed), dtype=F64) - 1).to(in_dtype)
    theta = _theta(case.kind, case.shape[0], seed + 1).to(theta_dtype)
    grid = _grid_fn(case.kind)(theta.double(), case.size, align_corners=case.align)
    safe = _safe(grid, case.shape[2:], case.align)  # (B, *size)
    assert safe.float().mean() > 0.8, "the case needs mostly safe points"
    g = torch.randn(case.shape[0], case.shape[1], *case.size, generator=_gen(seed + 2),
                    dtype=F64)
    g = (g * safe.unsqueeze(1)).to(in_dtype).double()
    return x, theta, grid, safe, g


def _run(op, x, theta, g):
    """(output, grad_input, grad_theta) of ``op(x, theta)`` under the loss sum(out * g)."""
    x = x.clone().requires_grad_()
    theta = theta.clone().requires_grad_()
    out = op(x, theta)
    (out.double() * g).sum().backward()
    return out.detach(), x.grad, theta.grad


def _check(what, got, ref, dtype, compute, span, scale, mask=None):
    """The docstring's bound |got - ref| <= eps(dtype) max|ref| + K eps(compute) span S."""
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {dtype}"
    got, ref = got.double(), ref.double()
    if mask is not None:
        got, ref = got[mask], ref[mask]
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    tol = _eps(dtype) * ref.abs().max().item() + K * _eps(compute) * span * scale
    err = (got - ref).abs().max().item()
    assert err <= tol, f"{what}: error {err:.3g} > tol {tol:.3g}"
    return err / tol


def _theta_scale(kind, theta64, size, align, grad_grid):
    """max over theta's entries of |J|^T |grad_grid|: the size of the sums behind grad_theta."""
    fn = _grid_fn(kind)
    jac = torch.autograd.functional.jacobian(lambda t: fn(t, size, align_corners=align),
                                             theta64)  # (*grid.shape, *theta.shape)
    flat = jac.abs().reshape(grad_grid.numel(), -1)
    return (grad_grid.abs().reshape(1, -1) @ flat).max().item()


# ---------------------------------------------------------------------------------------------
# warp
# ---------------------------------------------------------------------------------------------


def _warp_op(case: Case):
    def op(x, theta):
        return warp(x, theta, transform=_transform(case.kind), size=case.size, mode=case.mode,
                    padding_mode=case.pad, align_corners=case.align, backend=case.backend)
    return op


def check_warp(case: Case, in_dtype, theta_dtype, op=None, ref_op=None):
    op = op or _warp_op(case)
    ref_op = ref_op or op
    x, theta, grid, safe, g = _operands(case, in_dtype, theta_dtype)
    out, gx, gt = _run(op, x, theta, g)
    rout, rgx, rgt = _run(ref_op, x.double(), theta.double(), g)
    c = _compute(in_dtype, theta_dtype)
    span = _span(grid, case.shape[2:], case.align)
    mask = safe.unsqueeze(1).expand_as(rout)
    _check("output", out, rout, in_dtype, c, span, x.double().abs().max().item(), mask)
    _, abs_gx, _ = _run(ref_op, x.double(), theta.double(), g.abs())
    _check("grad_input", gx, rgx, in_dtype, c, span, abs_gx.abs().max().item())
    assert gt.dtype == theta_dtype, f"grad_theta: dtype {gt.dtype}, expected {theta_dtype}"
    if case.mode == "nearest":
        assert (gt == 0).all() and (rgt == 0).all()
        return
    # the reference's grid gradient, for the scale of grad_theta's sums
    leaf = grid.clone().requires_grad_()
    (sample(x.double(), leaf, mode=case.mode, padding_mode=case.pad,
            align_corners=case.align) * g).sum().backward()
    scale = _theta_scale(case.kind, theta.double(), case.size, case.align, leaf.grad)
    _check("grad_theta", gt, rgt, theta_dtype, c, span, scale)


@pytest.mark.parametrize("theta_dtype", THETA_DTYPES, ids=_id)
@pytest.mark.parametrize("in_dtype", INPUT_DTYPES, ids=_id)
@pytest.mark.parametrize("case", WARP_CASES, ids=str)
def test_warp(case, in_dtype, theta_dtype):
    check_warp(case, in_dtype, theta_dtype)


@pytest.mark.parametrize("in_dtype", [BF16, F16], ids=_id)
def test_half_images_take_the_fused_kernel(in_dtype, monkeypatch):
    """A 16-bit image runs on the fused kernel ("auto": cpp), not on the torch path."""
    import stnkit.ops.kernels.cpp_cpu as cpp_cpu

    calls = []

    def spy(input, theta, real=cpp_cpu.warp, **kw):
        calls.append(input.dtype)
        return real(input, theta, **kw)

    monkeypatch.setattr(cpp_cpu, "warp", spy)
    x = torch.rand(2, 1, 8, 8).to(in_dtype)
    out = warp(x, _theta("affine", 2, 0).float())
    assert calls == [in_dtype] and out.dtype == in_dtype


def _all_16bit(dtype) -> torch.Tensor:
    """Every 16-bit pattern as a ``dtype`` tensor."""
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=_id)
def test_kernel_round_trips_every_16bit_value(dtype):
    """The C++ kernel's 16-bit loads and stores (``csrc/storage.h``): an identity warp
    (nearest: one tap, so an Inf neighbour's 0 * Inf does not enter) reads every pixel and
    stores it back, so every 16-bit pattern comes back bit for bit (NaN as a NaN). Rounding
    to the nearest even between two 16-bit neighbours:
    ``test_cpp_cpu.py::test_half_rounding_is_tensor_to``."""
    half = _all_16bit(dtype).reshape(1, 1, 256, 256)
    out = warp(half, torch.eye(2, 3)[None], mode="nearest", backend="cpp")
    assert torch.equal(out.isnan(), half.isnan())
    ok = ~half.isnan()
    assert torch.equal(out.view(torch.int16)[ok], half.view(torch.int16)[ok])


# ---------------------------------------------------------------------------------------------
# sample: the grid in any floating dtype
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid_dtype", THETA_DTYPES, ids=_id)
@pytest.mark.parametrize("in_dtype", INPUT_DTYPES, ids=_id)
@pytest.mark.parametrize("case", SAMPLE_CASES, ids=str)
def test_sample(case, in_dtype, grid_dtype):
    x, theta, _, _, _ = _operands(case, in_dtype, F64)
    grid = _grid_fn(case.kind)(theta, case.size, align_corners=case.align).to(grid_dtype)
    grid64 = grid.double()
    safe = _safe(grid64, case.shape[2:], case.align)
    g = torch.randn(case.shape[0], case.shape[1], *case.size, generator=_gen(9), dtype=F64)
    g = (g * safe.unsqueeze(1)).to(in_dtype).double()

    def op(x, grid):
        return sample(x, grid, mode=case.mode, padding_mode=case.pad, align_corners=case.align)

    out, gx, gg = _run(op, x, grid, g)
    rout, rgx, rgg = _run(op, x.double(), grid64, g)
    c = _compute(in_dtype, grid_dtype)
    span = _span(grid64, case.shape[2:], case.align)
    xmax = x.double().abs().max().item()
    _check("output", out, rout, in_dtype, c, span, xmax, safe.unsqueeze(1).expand_as(rout))
    _, abs_gx, _ = _run(op, x.double(), grid64, g.abs())
    _check("grad_input", gx, rgx, in_dtype, c, span, abs_gx.abs().max().item())
    if case.mode == "nearest":
        assert gg.dtype == grid_dtype and (gg == 0).all()
        return
    _check("grad_grid", gg, rgg, grid_dtype, c, span,
           rgg.abs().max().item() + xmax * max(case.shape[2:]))


# ---------------------------------------------------------------------------------------------
# grid generators: theta in any floating dtype, computed in at least float32
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta_dtype", THETA_DTYPES, ids=_id)
@pytest.mark.parametrize("kind,size", [("affine", (7, 9)), ("projective", (7, 9)),
                                       ("tps", (7, 9)), ("affine3d", (3, 4, 5))])
def test_grid_generators(kind, size, theta_dtype):
    """The grid comes back in theta's dtype (as from F.affine_grid), rounded once from the
    float32 (float64) computation; the gradient in theta's dtype too."""
    theta = _theta(kind, 2, 3).to(theta_dtype)
    fn = _grid_fn(kind)
    t = theta.clone().requires_grad_()
    grid = fn(t, size)
    c = _compute(theta_dtype)
    t64 = theta.double().requires_grad_()
    ref = fn(t64, size)
    g = torch.randn(ref.shape, generator=_gen(4), dtype=F64)
    g = g.to(theta_dtype).double()  # what reaches the generator through grid.double()
    (grid.double() * g).sum().backward()
    (ref * g).sum().backward()
    span = 1.0 + ref.abs().max().item()
    _check("grid", grid.detach(), ref.detach(), theta_dtype, c, span, 1.0)
    scale = _theta_scale(kind, theta.double(), size, False, g)
    _check("grad_theta", t.grad, t64.grad, theta_dtype, c, 1.0, scale)


# ---------------------------------------------------------------------------------------------
# types that stay refused
# ---------------------------------------------------------------------------------------------

X = torch.zeros(2, 1, 4, 4)
A = torch.eye(2, 3).repeat(2, 1, 1)
G = torch.zeros(2, 3, 3, 2)


@pytest.mark.parametrize("call,match", [
    (lambda: warp(X.int(), A), r"warp: expected input to have a floating dtype, got torch.int32"),
    (lambda: warp(X.bool(), A), r"warp: expected input to have a floating dtype, got torch.bool"),
    (lambda: warp(X.to(torch.complex64), A),
     r"warp: expected input to have a floating dtype, got torch.complex64"),
    (lambda: warp(X, A.long()), r"warp: expected theta to have a floating dtype, got torch.int64"),
    (lambda: warp(X, A.to(torch.complex128)),
     r"warp: expected theta to have a floating dtype, got torch.complex128"),
    (lambda: warp(X, A.bool(), backend="cpp"),
     r"warp: expected theta to have a floating dtype, got torch.bool"),
    (lambda: sample(X.int(), G),
     r"sample: expected input to have a floating dtype, got torch.int32"),
    (lambda: sample(X, G.bool()),
     r"sample: expected grid to have a floating dtype, got torch.bool"),
    (lambda: affine_grid(A.int(), (3, 3)),
     r"affine_grid: expected theta to have a floating dtype, got torch.int32"),
    (lambda: projective_grid(torch.eye(3)[None].to(torch.complex64), (3, 3)),
     r"projective_grid: expected theta to have a floating dtype, got torch.complex64"),
    (lambda: tps_grid(tps_lattice(4)[None].bool(), (3, 3)),
     r"tps_grid: expected src_points to have a floating dtype, got torch.bool"),
    (lambda: torch.ops.stnkit.warp_cpu(X.int(), A, [4, 4], "affine", "bilinear", "zeros",
                                       False, False),
     r"stnkit::warp_cpu: expected input to have a floating dtype, got torch.int32"),
])
def test_non_floating_operands_are_refused(call, match):
    import stnkit.ops.kernels.cpp_cpu  # noqa: F401  (registers torch.ops.stnkit.warp_cpu)

    with pytest.raises(TypeError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# the custom operators take mixed dtypes directly
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_dtype,theta_dtype", [(BF16, F32), (F16, F64), (F32, BF16),
                                                  (F64, F16)], ids=_id)
def test_operator_opcheck(in_dtype, theta_dtype):
    """The operator's fake implementation and autograd formula agree with the kernel on
    mixed dtypes (output: the input's dtype; gradients: their operands')."""
    import stnkit.ops.kernels.cpp_cpu  # noqa: F401

    x = torch.rand(2, 2, 6, 7).to(in_dtype).requires_grad_()
    theta = _theta("affine", 2, 5).to(theta_dtype).requires_grad_()
    args = (x, theta, [5, 6], "affine", "bilinear", "zeros", False, False)
    torch.library.opcheck(torch.ops.stnkit.warp_cpu, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))
    out = torch.ops.stnkit.warp_cpu(*args)
    assert out.dtype == in_dtype
    gx, gt = torch.autograd.grad(out.double().sum(), (x, theta))
    assert gx.dtype == in_dtype and gt.dtype == theta_dtype


# ---------------------------------------------------------------------------------------------
# torch.autocast
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta_dtype", [F32, BF16], ids=_id)
@pytest.mark.parametrize("case", WARP_CASES, ids=str)
def test_autocast_does_not_reach_inside(case, theta_dtype):
    """Under autocast the ops compute exactly what they compute outside it (no fp32 theta or
    grid rounded to bfloat16 by an autocast matmul), forward and backward."""
    op = _warp_op(case)
    x, theta, _, _, g = _operands(case, F32, theta_dtype)
    plain = _run(op, x, theta, g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = _run(op, x, theta, g)
    for a, b, what in zip(auto, plain, ("output", "grad_input", "grad_theta")):
        assert a.dtype == b.dtype and torch.equal(a, b), what


def test_grids_under_autocast_stay_float32():
    """F.affine_grid under autocast returns bfloat16 for a float32 theta; ours do not."""
    theta = _theta("affine", 2, 0).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grid = affine_grid(theta, (5, 6))
        h = projective_grid(_theta("projective", 2, 0).float(), (5, 6))
    assert grid.dtype == h.dtype == F32
    assert torch.equal(grid, affine_grid(theta, (5, 6)))


def _st_models():
    from stnkit.models import list_models
    return [n for n in list_models() if n.startswith("st")]


def _input_size(name):
    from stnkit.models import model_spec
    return model_spec(name).default_input_size


@pytest.mark.parametrize("name", _st_models())
def test_zoo_models_train_under_bf16_autocast(name):
    from stnkit.models import create_model
    from stnkit.nn import SpatialTransformer

    torch.manual_seed(0)
    size = _input_size(name)
    model = create_model(name, input_size=size)
    sts = [m for m in model.modules() if isinstance(m, SpatialTransformer)]
    assert sts, "every st-* model has a spatial transformer"
    with torch.no_grad():  # a transform that is not the identity, so the warp matters
        for st in sts:
            st.regressor.linear.weight.normal_(0, 0.02, generator=_gen(1))
    x = torch.rand(4, *size, generator=_gen(2))
    y = torch.randint(0, 10, (4,), generator=_gen(3))

    def loss_and_grads(autocast):
        model.zero_grad()
        torch.manual_seed(4)  # the same dropout masks in both runs
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        return loss.item(), {n: p.grad for n, p in model.named_parameters()}

    ref, _ = loss_and_grads(False)
    loss, grads = loss_and_grads(True)
    for n, gr in grads.items():
        assert gr is not None, f"{n}: no gradient"
        assert torch.isfinite(gr).all(), f"{n}: non-finite gradient"
    tol = 4 * _eps(BF16) * max(1.0, abs(ref))
    assert abs(loss - ref) <= tol, f"{loss=} {ref=} {tol=}"


@pytest.mark.parametrize("transform", ["affine", "projective", "tps", "attention",
                                       "similarity", "rotation", "translation", "affine3d"])
def test_spatial_transformers_under_autocast(transform):
    """Every family: theta stays float32 (the regression runs in the layer's dtype), the
    output has the input's dtype and is close to the float32 run, and the parallel
    transformers concatenate the same way."""
    from torch import nn

    from stnkit.nn import ParallelSpatialTransformers, SpatialTransformer

    torch.manual_seed(0)
    shape = (2, 5, 6, 7) if transform == "affine3d" else (2, 8, 8)
    loc = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 16), nn.Tanh())
    sts = [SpatialTransformer(loc, transform, features=16) for _ in range(2)]
    for st in sts:
        with torch.no_grad():
            st.regressor.linear.weight.normal_(0, 0.05, generator=_gen(5))
    par = ParallelSpatialTransformers(sts)
    x = torch.rand(3, *shape, generator=_gen(6))
    ref, thetas_ref = par(x, return_theta=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, thetas = par(x, return_theta=True)
    assert out.dtype == F32 and all(t.dtype == F32 for t in thetas)
    # theta differs from the float32 run only through the bfloat16 localisation layer
    err = (out - ref).abs().max().item()
    # output change per unit of theta: up to 3 entries a pixel (4 with z) times the
    # unnormalisation (size / 2) times the image's slope (2 max|x| a pixel)
    slope = 4 * max(shape[1:]) * x.abs().max().item()
    theta_err = max((t - r).abs().max().item() for t, r in zip(thetas, thetas_ref))
    assert theta_err <= 4 * _eps(BF16), f"{theta_err=}"
    assert err <= slope * theta_err + K * _eps(F32), f"{err=}"
    out.sum().backward()
    for n, p in par.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


# ---------------------------------------------------------------------------------------------
# triton kernels: 16-bit images under Triton's interpreter (tiny shapes)
# ---------------------------------------------------------------------------------------------


def _import_triton():
    """(stnkit.ops.kernels.triton_gpu, None), or (None, why not). On the CPU triton and the
    kernels must be imported under TRITON_INTERPRET=1 before anything imports triton in
    compiled mode (``torch.library.opcheck`` does), as tests/ops/kernels/test_triton_gpu.py
    does: so at this module's import."""
    try:
        if not torch.cuda.is_available() and "stnkit.ops.kernels._triton_2d" not in sys.modules:
            if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
                # (stnkit's import of torch._dynamo imports triton: .ci/run runs this file's
                # triton tests with TRITON_INTERPRET=1 set for the whole process)
                return None, ("triton was imported in compiled mode: run these tests in their "
                              "own process with TRITON_INTERPRET=1")
            saved = os.environ.get("TRITON_INTERPRET")
            os.environ["TRITON_INTERPRET"] = "1"
            try:
                import triton  # noqa: F401
                import stnkit.ops.kernels._triton_2d  # noqa: F401
                import stnkit.ops.kernels._triton_3d  # noqa: F401
            finally:
                if saved is None:
                    del os.environ["TRITON_INTERPRET"]
                else:
                    os.environ["TRITON_INTERPRET"] = saved
        from stnkit.ops.kernels import triton_gpu
    except ImportError as e:
        return None, f"triton cannot be imported ({e})"
    return triton_gpu, None


_TRITON, _NO_TRITON = _import_triton()


def _triton_module():
    if _TRITON is None:
        pytest.skip(_NO_TRITON)
    return _TRITON


TRITON_CASES = [
    Case("affine", "bilinear", "zeros", "triton", (2, 2, 5, 6), (4, 5)),
    Case("projective", "bilinear", "reflection", "triton", (2, 1, 5, 6), (4, 5)),
    Case("affine", "nearest", "border", "triton", (2, 2, 5, 6), (4, 5)),
    Case("affine3d", "bilinear", "border", "triton", (1, 2, 3, 4, 5), (2, 3, 4)),
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("in_dtype,theta_dtype", [(BF16, F32), (F16, F32), (BF16, BF16),
                                                  (F32, F16), (F16, F64)], ids=_id)
@pytest.mark.parametrize("case", TRITON_CASES, ids=str)
def test_triton_kernels(case, in_dtype, theta_dtype, deterministic, monkeypatch):
    """The Triton kernels load 16-bit images, compute in float32 (float64 with a float64
    operand) and store the input's dtype, against a float64 run of the same kernels."""
    triton_gpu = _triton_module()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")

    def op(x, theta):
        return triton_gpu.warp(x.to(device), theta.to(device), transform=_transform(case.kind),
                               size=case.size, mode=case.mode, padding_mode=case.pad,
                               align_corners=case.align, deterministic=deterministic).cpu()

    assert triton_gpu.supports(torch.zeros(1, 1, 2, 2, dtype=in_dtype, device=device),
                               torch.zeros(1, 2, 3, dtype=theta_dtype, device=device),
                               transform="affine", mode="bilinear", padding_mode="zeros") is None
    check_warp(case, in_dtype, theta_dtype, op=op)
