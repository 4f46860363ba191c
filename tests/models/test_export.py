"""torch.export and TorchScript of the zoo models: the exported program holds the fused
kernels as ``torch.ops.stnkit.warp`` (affine / projective models) and equals eager;
``torch.jit.trace`` works, ``torch.jit.script`` stops with one clear error."""

from __future__ import annotations

import io

import pytest
import torch

from stnkit._checks import StnkitTypeError
from stnkit.models import create_model, list_models, model_spec
from stnkit.nn import SpatialTransformer
from stnkit.ops.kernels import numba_cpu  # noqa: F401  (registers the stnkit operators)

# A TPS transformer solves for (and caches) its TPS matrix on its first call; the solve's
# checks (``ops.grids._tps_matrix``: data-dependent ``if``s) cannot be traced, so a TPS model
# exports only after one eager call. Strict: the cold test fails once that is fixed.
TPS_COLD = pytest.mark.xfail(strict=True, reason="data-dependent checks in "
                             "ops.grids._tps_matrix, on a TPS model's first call")


def _model(name, seed=0):
    spec = model_spec(name)
    torch.manual_seed(seed)
    model = create_model(name, input_size=spec.default_input_size).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a fresh regressor outputs the identity: make theta interesting
        for m in model.modules():
            if isinstance(m, SpatialTransformer):
                w = m.regressor.linear.weight
                w.add_(torch.randn(w.shape, generator=g) * 0.05)
    return model, torch.rand(3, *spec.default_input_size, generator=g)


def _kernel_transformers(model) -> int:
    return sum(1 for m in model.modules() if isinstance(m, SpatialTransformer)
               and m._grid in ("affine", "projective"))


@pytest.mark.parametrize("name", list_models())
def test_export_every_model(name):
    model, x = _model(name)
    if "tps" in name:
        with torch.no_grad():
            model(x)  # caches the TPS matrix (see TPS_COLD)
    ep = torch.export.export(model, (x,))
    calls = sum(1 for n in ep.graph.nodes if n.target == torch.ops.stnkit.warp.default)
    want = _kernel_transformers(model)
    assert calls == want, f"{name}: {calls} stnkit::warp nodes, expected {want}"
    x2 = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    for inp in (x, x2):
        err = (ep.module()(inp) - model(inp)).abs().max().item()
        assert err < 1e-6, f"{name}: {err=}"


@TPS_COLD
def test_export_tps_model_on_its_first_call():
    model, x = _model("st-cnn-tps")
    torch.export.export(model, (x,))


def test_exported_program_saves_and_loads():
    model, x = _model("st-fcn-proj-x2")
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, (x,)), buf)
    buf.seek(0)
    ep = torch.export.load(buf)
    assert any(n.target == torch.ops.stnkit.warp.default for n in ep.graph.nodes)
    err = (ep.module()(x) - model(x)).abs().max().item()
    assert err < 1e-6, f"{err=}"


# torch 2.13 deprecates TorchScript (trace and script warn)
TORCHSCRIPT_DEPRECATED = "ignore:`torch.jit.[a-z_]+` is deprecated:DeprecationWarning"


# the shape checks read sizes as Python values: the trace holds for the traced input shape
@pytest.mark.filterwarnings(TORCHSCRIPT_DEPRECATED, "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", ["st-cnn-aff", "st-fcn-proj"])
def test_jit_trace(name):
    model, x = _model(name)
    traced = torch.jit.trace(model, (x,))
    assert "stnkit::warp" in str(traced.inlined_graph)
    x2 = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    err = (traced(x2) - model(x2)).abs().max().item()
    assert err < 1e-6, f"{err=}"


@pytest.mark.filterwarnings(TORCHSCRIPT_DEPRECATED)
@pytest.mark.parametrize("name", ["st-cnn-aff", "st-fcn-tps-x2", "stn-tutorial"])
def test_jit_script_says_what_to_use(name):
    model, _ = _model(name)
    with pytest.raises(StnkitTypeError, match=r"SpatialTransformer: expected a compiler other "
                       r"than torch.jit.script, .*use torch.compile or torch.export.export"):
        torch.jit.script(model)
