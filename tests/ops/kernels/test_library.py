"""The fused kernels as torch.library operators (``_library``): schemas, ``opcheck``, direct
calls, output masks, and second derivatives (the backward op's own autograd formula)
against ``F.grid_sample``.

The Triton operators run under Triton's CPU interpreter (imported as in test_triton_gpu.py);
there ``opcheck`` skips ``test_aot_dispatch_dynamic``: the interpreter runs a kernel at once
instead of recording it, so a traced graph cannot hold it.

Second derivatives (``test_gradgradcheck``, ``test_second_derivatives_match_grid_sample``)
go through the torch path (``stnkit.ops.sample``): they rely on its backward being twice
differentiable (issue 11a).
"""

import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

from stnkit._checks import StnkitValueError
from stnkit.ops import warp
from stnkit.ops.kernels import cpp_cpu  # registers stnkit::warp_cpu

from ._cases import F64, PADS, gen, theta_away_from_knots, transform_of


def _import_interpreted_triton():
    """triton_gpu under TRITON_INTERPRET=1, or the reason it cannot be."""
    if "triton" in sys.modules and "stnkit.ops.kernels._triton_2d" not in sys.modules:
        return None, "triton was imported before in compiled mode: run in its own process"
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401

        import stnkit.ops.kernels._triton_2d  # noqa: F401
        import stnkit.ops.kernels._triton_3d  # noqa: F401
        from stnkit.ops.kernels import triton_gpu
    except ImportError as e:
        return None, f"triton is not installed ({e})"
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved
    return triton_gpu, None


TRITON_GPU, NO_TRITON = (None, "a GPU is present") if torch.cuda.is_available() else \
    _import_interpreted_triton()
needs_triton = pytest.mark.skipif(TRITON_GPU is None, reason=str(NO_TRITON))
needs_cpp = pytest.mark.skipif(cpp_cpu._LIB is None, reason=str(cpp_cpu._WHY))

SCHEMA = ("(Tensor input, Tensor theta, SymInt[] size, str transform, str mode, "
          "str padding_mode, bool align_corners, bool deterministic) -> Tensor")
BACKWARD_SCHEMA = ("(Tensor grad_output, Tensor input, Tensor theta, SymInt[] size, "
                   "str transform, str mode, str padding_mode, bool align_corners, "
                   "bool deterministic, bool[] output_mask) -> (Tensor, Tensor)")
SHAPES = {"affine": ((2, 2, 5, 6), (4, 5)), "projective": ((2, 2, 5, 6), (4, 5)),
          "affine3d": ((2, 2, 3, 4, 5), (2, 3, 4))}


def _case(kind, seed=0, dtype=F64):
    shape, size = SHAPES[kind]
    x = torch.randn(shape, dtype=dtype, generator=gen(seed))
    theta = theta_away_from_knots(kind, shape[0], shape[2:], size, False, dtype, seed=seed,
                                  strength=0.15)
    g = torch.randn((*shape[:2], *size), dtype=dtype, generator=gen(seed + 1))
    return x, theta, list(size), g


@pytest.mark.parametrize("name", ["warp_cpu", "warp_triton"])
def test_schemas(name):
    if name == "warp_triton" and TRITON_GPU is None:
        pytest.skip(str(NO_TRITON))
    fwd = getattr(torch.ops.stnkit, name).default._schema
    bwd = getattr(torch.ops.stnkit, f"{name}_backward").default._schema
    assert str(fwd) == f"stnkit::{name}{SCHEMA}", str(fwd)
    assert str(bwd) == f"stnkit::{name}_backward{BACKWARD_SCHEMA}", str(bwd)


def _opcheck_cases():
    for kind in SHAPES:
        for mode, pad in [("bilinear", "zeros"), ("bilinear", "reflection"),
                          ("nearest", "border")]:
            yield kind, mode, pad


ALL_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor",
             "test_aot_dispatch_dynamic")


@needs_cpp
@pytest.mark.parametrize("kind, mode, pad", list(_opcheck_cases()))
def test_opcheck_cpp(kind, mode, pad):
    x, theta, size, g = _case(kind)
    args = (transform_of(kind), mode, pad, False, False)
    opcheck(torch.ops.stnkit.warp_cpu, (x.requires_grad_(), theta.requires_grad_(), size, *args),
            test_utils=ALL_UTILS)
    # the backward op's own dynamic-shape trace is left out: its double backward runs the
    # torch path, whose size checks take plain ints only
    for mask in ([True, True], [False, True], [True, False]):
        opcheck(torch.ops.stnkit.warp_cpu_backward,
                (g, x.detach(), theta.detach(), size, *args, mask), test_utils=ALL_UTILS[:3])


@needs_triton
@pytest.mark.parametrize("det", [False, True])
@pytest.mark.parametrize("kind", list(SHAPES))
def test_opcheck_triton(kind, det, monkeypatch):
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    x, theta, size, g = _case(kind)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, theta, g = x.to(device), theta.to(device), g.to(device)
    utils = ALL_UTILS if torch.cuda.is_available() else ALL_UTILS[:3]
    args = (transform_of(kind), "bilinear", "zeros", False, det)
    opcheck(torch.ops.stnkit.warp_triton,
            (x.requires_grad_(), theta.requires_grad_(), size, *args), test_utils=utils)
    for mask in ([True, True], [False, True]):
        opcheck(torch.ops.stnkit.warp_triton_backward,
                (g, x.detach(), theta.detach(), size, *args, mask), test_utils=utils[:3])


@needs_cpp
def test_ops_warp_calls_the_operator(monkeypatch):
    calls = []
    real = torch.ops.stnkit.warp_cpu

    class Spy:
        def __call__(self, *args):
            calls.append(args[2:])
            return real(*args)

    monkeypatch.setattr(cpp_cpu, "warp_op", Spy())
    x, theta, size, _ = _case("affine")
    warp(x, theta, size=size, mode="nearest", padding_mode="border", backend="cpp")
    assert calls == [([4, 5], "affine", "nearest", "border", False, False)], calls


@needs_cpp
def test_output_mask_skips_unneeded_gradients():
    x, theta, size, g = _case("projective")
    args = (size, "projective", "bilinear", "zeros", False, False)
    gin, gtheta = torch.ops.stnkit.warp_cpu_backward(g, x, theta, *args, [True, True])
    only_theta = torch.ops.stnkit.warp_cpu_backward(g, x, theta, *args, [False, True])
    only_input = torch.ops.stnkit.warp_cpu_backward(g, x, theta, *args, [True, False])
    assert only_theta[0].shape == (0,) and only_input[1].shape == (0,)
    assert torch.equal(only_input[0], gin)
    # grad_theta alone is cut into other tasks (no scatter to keep apart): other sum order
    err = (only_theta[1] - gtheta).abs().max().item()
    assert err < 1e-12 * gtheta.abs().max().item(), f"{err=}"
    # nearest: the theta gradient is zero (and not computed)
    _, gt = torch.ops.stnkit.warp_cpu_backward(g, x, theta, size, "projective", "nearest", "zeros",
                                               False, False, [False, True])
    assert gt.shape == theta.shape and not gt.any()


@pytest.mark.parametrize("call, match", [
    (lambda x, t: torch.ops.stnkit.warp_cpu(x, t, [4, 5], "similarity", "bilinear", "zeros",
                                            False, False),
     r"stnkit::warp_cpu: expected transform one of"),
    (lambda x, t: torch.ops.stnkit.warp_cpu(x, t, [4, 5], "tps", "bilinear", "zeros", False,
                                            False),
     r"stnkit::warp_cpu: expected theta of shape \(\d+, K \+ 3, 2\)"),
    (lambda x, t: torch.ops.stnkit.warp_cpu(x, t, [4, 5], "affine", "bicubic", "zeros", False,
                                            False), r"stnkit::warp_cpu: expected mode one of"),
    (lambda x, t: torch.ops.stnkit.warp_cpu(x, t[:, :1], [4, 5], "affine", "bilinear", "zeros",
                                            False, False),
     r"stnkit::warp_cpu: expected theta of shape \(2, 2, 3\), got \(2, 1, 3\)"),
    (lambda x, t: torch.ops.stnkit.warp_cpu(x, t, [4], "affine", "bilinear", "zeros", False,
                                            False),
     r"stnkit::warp_cpu: expected size 2 output sizes"),
    (lambda x, t: torch.ops.stnkit.warp_cpu(x[..., None], t, [4, 5, 2], "projective", "bilinear",
                                            "zeros", False, False),
     r"stnkit::warp_cpu: expected input of shape \(B, C, H, W\) for transform='projective'"),
])
def test_direct_calls_are_checked(call, match):
    x, theta, _, _ = _case("affine")
    with pytest.raises(StnkitValueError, match=match):
        call(x, theta)


# --------------------------------------------------------------------------------------------
# second derivatives (relies on issue 11a: stnkit.ops.sample twice differentiable)
# --------------------------------------------------------------------------------------------


def _cpp_warp(kind, size, pad, align=False):
    def f(x, t):
        return warp(x, t, transform=transform_of(kind), size=size, padding_mode=pad,
                    align_corners=align, backend="cpp")
    return f


def _grid_sample_warp(kind, size, pad, align=False):
    def f(x, t):
        grid = F.affine_grid(t, [x.shape[0], x.shape[1], *size], align_corners=align)
        return F.grid_sample(x, grid, padding_mode=pad, align_corners=align)
    return f


@needs_cpp
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("kind", ["affine", "affine3d"])
def test_gradgradcheck(kind, pad):
    shape = (1, 2, 4, 5) if kind == "affine" else (1, 1, 3, 3, 4)
    size = (3, 4) if kind == "affine" else (2, 3, 3)
    x = torch.randn(shape, dtype=F64, generator=gen(3)).requires_grad_()
    theta = theta_away_from_knots(kind, 1, shape[2:], size, False, F64, seed=5,
                                  strength=0.3).requires_grad_()
    assert torch.autograd.gradgradcheck(_cpp_warp(kind, size, pad), (x, theta)), kind


@needs_cpp
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("kind", ["affine", "affine3d"])
def test_second_derivatives_match_grid_sample(kind, pad):
    x, theta, size, g = _case(kind, seed=4)
    gg_x = torch.randn(x.shape, dtype=F64, generator=gen(8))
    gg_t = torch.randn(theta.shape, dtype=F64, generator=gen(9))
    res = []
    for fn in (_cpp_warp(kind, size, pad), _grid_sample_warp(kind, size, pad)):
        xi, ti, gi = (v.clone().requires_grad_() for v in (x, theta, g))
        dx, dt = torch.autograd.grad(fn(xi, ti), (xi, ti), gi, create_graph=True)
        res.append(torch.autograd.grad((dx, dt), (xi, ti, gi), (gg_x, gg_t)))
    for name, a, b in zip(("input", "theta", "grad_output"), *res):
        err = ((a - b).abs().max() / b.abs().max().clamp_min(1)).item()
        assert err < 1e-10, f"{kind} {pad} d2/d{name}: {err=}"


@needs_cpp
def test_double_backward_needs_only_what_is_asked():
    x, theta, size, g = _case("projective", seed=2)
    f = _cpp_warp("projective", size, "border")
    ti = theta.clone().requires_grad_()
    (dt,) = torch.autograd.grad(f(x, ti), ti, g, create_graph=True)  # input needs no grad
    (hvp,) = torch.autograd.grad(dt, ti, torch.ones_like(dt))
    xt = theta.clone().requires_grad_()
    (ref_dt,) = torch.autograd.grad(warp(x, xt, transform="projective", size=size,
                                         padding_mode="border", backend="torch"),
                                    xt, g, create_graph=True)
    (ref,) = torch.autograd.grad(ref_dt, xt, torch.ones_like(ref_dt))
    err = (hvp - ref).abs().max().item()
    assert err < 1e-9 * max(1.0, ref.abs().max().item()), f"{err=}"
