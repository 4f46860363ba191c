"""Fuzz the Triton kernels (``stnkit.ops.kernels.triton_gpu``) against the torch backend, on
CUDA or else under Triton's CPU interpreter (as ``tests/ops/kernels/test_triton_gpu.py``
does it). The interpreter runs every program in numpy, so this property runs only in the
long profile (``STNKIT_FUZZ_PROFILE=long``) and with tiny shapes."""

import os
import sys

import pytest
import torch
from hypothesis import assume, given

from tests.fuzz._oracle import PROFILE, check_sample_result, fuzz, theta_scale

if PROFILE != "long":
    pytest.skip("Triton interpreter fuzzing runs in the long profile only",
                allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":  # see test_triton_gpu.py: import triton and the kernels interpreted
    if "triton" in sys.modules and "stnkit.ops.kernels._triton_2d" not in sys.modules:
        pytest.skip("triton was imported before this module (compiled mode): run it in its "
                    "own process", allow_module_level=True)
    _saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        pytest.importorskip("triton")
        import stnkit.ops.kernels._triton_2d  # noqa: F401
    finally:
        if _saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = _saved
else:
    pytest.importorskip("triton")

from stnkit.ops.kernels import triton_gpu  # noqa: E402
from tests.fuzz.test_fuzz_warp import (make_input, make_theta, reference_warp,  # noqa: E402
                                       run_warp, warp_cases)

# the interpreter emulates GPU float arithmetic in numpy, which warns on NaN / Inf
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@fuzz(0.1)
@given(case=warp_cases())
def test_triton_matches_torch_backend(case):
    assume(case["transform"] != "tps" and case["mode"] != "bicubic"  # the kernels' scope
           and case["dtype"] in (torch.float32, torch.float64))
    shape, dtype = case["shape"], case["dtype"]
    size = tuple(case["size"] or shape[2:])
    x = make_input(shape, dtype, case["seed"], case["pixels"])
    theta = make_theta(case)
    grad_out = make_input((shape[0], shape[1], *size), dtype, case["seed"] + 2, [])
    xr = x.clone().to(DEVICE).requires_grad_()
    tr = theta.clone().to(DEVICE).requires_grad_()
    out = triton_gpu.warp(xr, tr, transform="affine" if case["transform"] == "affine3d"
                          else case["transform"], size=size, mode=case["mode"],
                          padding_mode=case["padding_mode"],
                          align_corners=case["align_corners"], deterministic=False)
    gx, _ = torch.autograd.grad(out, (xr, tr), grad_out.to(DEVICE))
    ref = run_warp(x, theta, grad_out, dict(case, backend="torch", x_layout="contiguous"))
    _, grid = reference_warp(x, theta, grad_out, case, size)
    check_sample_result((out.detach().cpu(), gx.cpu(), None), (ref[0], ref[1], None), x, grid,
                        grad_out, what="triton vs torch", mode=case["mode"],
                        p_extra=theta_scale(theta, shape[2:]),
                        padding_mode=case["padding_mode"], align_corners=case["align_corners"])
