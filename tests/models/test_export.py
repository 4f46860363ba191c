"""torch.export and TorchScript of the zoo models: the exported program holds the fused
kernels as the operator of the "auto" kernel (``torch.ops.stnkit.warp_cpu``; affine /
projective models) and equals eager;
``torch.jit.trace`` works, ``torch.jit.script`` stops with one clear error."""

from __future__ import annotations

import io

import pytest
import torch

from stnkit._checks import StnkitTypeError, StnkitValueError
from stnkit.models import create_model, list_models, model_spec
from stnkit.nn import SpatialTransformer
from stnkit.ops.kernels import cpp_cpu  # noqa: F401  (registers the stnkit operators)

from . import _auto_ops as auto_ops

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
    model, x = _model(name)  # never called before: a TPS model exports on its first call
    ep = torch.export.export(model, (x,))
    calls = sum(1 for n in ep.graph.nodes if n.target == auto_ops.FORWARD)
    want = _kernel_transformers(model)
    assert calls == want, f"{name}: {calls} {auto_ops.FORWARD} nodes, expected {want}"
    x2 = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    for inp in (x, x2):
        err = (ep.module()(inp) - model(inp)).abs().max().item()
        assert err < 1e-6, f"{name}: {err=}"


@pytest.mark.parametrize("name", ["st-cnn-aff", "st-cnn-proj", "st-cnn-tps", "st-fcn-tps-x2"])
def test_export_with_a_named_dynamic_batch(name):
    # a named Dim has no upper bound: nothing in the ops may guard on the batch size (the
    # torch sampler picked int32 indices by B * H * W < 2**31, which export refused)
    model, x = _model(name)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=2)},))
    x7 = torch.rand(7, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    err = (ep.module()(x7) - model(x7)).abs().max().item()
    assert err < 1e-6, f"{name}: {err=}"


def test_export_keeps_no_traced_tps_matrix():
    # the export traces a cast of the float64 matrix solved in __init__; what it traced (a
    # fake tensor) must never land in the transformer's caches for later eager calls
    model, x = _model("st-cnn-tps")
    st = next(m for m in model.modules() if isinstance(m, SpatialTransformer))
    assert list(st._tps_base) == [(28, 28)] and st._tps_matrices == {}  # solved in __init__
    base = st._tps_base[(28, 28)]
    assert base.dtype == torch.float64
    torch.export.export(model, (x,))
    assert st._tps_base == {(28, 28): base} and st._tps_matrices == {}
    model(x)  # the eager call keeps its float32 cast, a real tensor
    assert list(st._tps_matrices) == [((28, 28), torch.float32, "cpu")]
    assert type(st._tps_matrices[((28, 28), torch.float32, "cpu")]) is torch.Tensor


def test_export_tps_transformer_of_unknown_size_says_what_to_do():
    loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 8))
    st = SpatialTransformer(loc, "tps", features=8)  # output size = input's, unknown yet
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(StnkitValueError, match=r"SpatialTransformer: expected output_size to "
                       r"be known before torch.export traces a TPS transformer"):
        torch.export.export(st, (x,))
    st(x)  # one eager call solves it: the export then works
    ep = torch.export.export(st, (x,))
    assert (ep.module()(x) - st(x)).abs().max().item() < 1e-6


def test_exported_program_saves_and_loads():
    model, x = _model("st-fcn-proj-x2")
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, (x,)), buf)
    buf.seek(0)
    ep = torch.export.load(buf)
    assert any(n.target == auto_ops.FORWARD for n in ep.graph.nodes)
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
    assert f"stnkit::{auto_ops.FORWARD_NAME}" in str(traced.inlined_graph)
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
