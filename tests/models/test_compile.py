"""torch.compile of every zoo model, training step included (forward, loss, backward,
optimizer step): no graph breaks (``fullgraph=True``), the fused kernels stay in the graphs as
the ``stnkit`` operators (forward and backward), and the results equal eager.

Fast tests compile with ``aot_eager`` (AOT autograd, no code generation); the slow one with
inductor. TPS models run the torch path (plain torch code, traced): no stnkit operator."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func

from stnkit.models import create_model, list_models, model_spec
from stnkit.nn import SpatialTransformer
from stnkit.ops.kernels import cpp_cpu  # noqa: F401  (registers the stnkit operators)

from . import _auto_ops as auto_ops

# dynamo's own internals trip these while tracing autograd.Functions and the optimizer
DYNAMO_INTERNAL = (
    "ignore:<class 'torch.autograd.function.Function'> should not be instantiated"
    ":DeprecationWarning",
    "ignore:The .grad attribute of a Tensor that is not a leaf Tensor is being accessed"
    ":UserWarning",
)
# torch's own inductor import trips over its deprecated torch.jit.script_method (torch 2.13).
INDUCTOR = "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"


def _kernel_transformers(model) -> int:
    """Spatial transformers whose warp the fused kernels run ("auto" on the CPU)."""
    return sum(1 for m in model.modules() if isinstance(m, SpatialTransformer)
               and m._grid in ("affine", "projective") and m.mode in ("bilinear", "nearest"))


def _model(name, seed=0):
    spec = model_spec(name)
    torch.manual_seed(seed)
    model = create_model(name, input_size=spec.default_input_size)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero-initialised regressors pass no gradient to the loc net
        for m in model.modules():
            if isinstance(m, SpatialTransformer):
                w = m.regressor.linear.weight
                w.add_(torch.randn(w.shape, generator=g) * 0.05)
        for m in model.modules():  # eager and compiled draw their dropout masks differently
            if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d)):
                m.p = 0.0
    x = torch.rand(4, *spec.default_input_size, generator=g)
    y = torch.arange(4) % spec.default_num_classes
    return model, x, y


class Recorder:
    """An aot_eager-like backend that keeps every forward and backward graph it compiles."""

    def __init__(self):
        self.frames = 0
        self.graphs = {"forward": [], "backward": []}

        def keep(kind):
            def compiler(gm, example_inputs):
                self.graphs[kind].append(gm)
                return make_boxed_func(gm.forward)
            return compiler

        self._aot = aot_autograd(fw_compiler=keep("forward"), bw_compiler=keep("backward"))

    def __call__(self, gm, example_inputs):
        self.frames += 1
        return self._aot(gm, example_inputs)

    def count(self, kind, op) -> int:
        return sum(1 for gm in self.graphs[kind] for n in gm.graph.nodes if n.target == op)


def _train(model, x, y, steps, compile_with=None, step_backend=None):
    """Losses of ``steps`` SGD steps and the parameters after the first: forward + loss
    compiled with ``compile_with`` in one graph (the backward is AOT autograd's compiled one),
    the optimizer step with ``step_backend`` if given (torch breaks its graph on purpose
    around ``opt.step``'s no_grad, so that one cannot be fullgraph).

    Later steps start from parameters that differ by rounding, and where rounding moves a
    sample point across a pixel boundary its gradient jumps (the sampler's is piecewise):
    measured on st-cnn-tps (AVX-512 CPU), the first step's gradients agree to 6e-7, the
    second step's parameters only to 2.8e-4."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def loss_fn(x, y):
        return F.cross_entropy(model(x), y)

    def step():
        opt.step()

    if compile_with is not None:
        loss_fn = torch.compile(loss_fn, backend=compile_with, fullgraph=True)
    if step_backend is not None:
        step = torch.compile(step, backend=step_backend)
    losses, first = [], None
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(x, y)
        loss.backward()
        step()
        losses.append(loss.detach())
        first = first or [p.detach().clone() for p in model.parameters()]
    return torch.stack(losses), first


def _check_equal(eager, compiled, name, tol):
    (l0, p0), (l1, p1) = eager, compiled
    err = (l1 - l0).abs().max().item()
    assert err < tol, f"{name} loss: {err=}"
    for i, (a, b) in enumerate(zip(p0, p1)):
        err = ((b - a).abs().max() / a.abs().max().clamp_min(1e-3)).item()
        assert err < tol, f"{name} parameter {i}: {err=}"


@pytest.mark.filterwarnings(INDUCTOR, *DYNAMO_INTERNAL)  # dynamo's optimizer support
@pytest.mark.parametrize("name", list_models())
def test_training_step_compiles_with_the_operators(name):
    torch._dynamo.reset()
    model, x, y = _model(name)  # never called before: a TPS model compiles on its first call
    eager = _train(copy.deepcopy(model), x, y, steps=2)
    rec = Recorder()
    # the optimizer step (which never touches a warp) compiled for one model only: it
    # doubles the compile time
    step_backend = "aot_eager" if name == "st-cnn-aff" else None
    compiled = _train(model, x, y, steps=2, compile_with=rec, step_backend=step_backend)
    _check_equal(eager, compiled, name, 1e-5)
    n = _kernel_transformers(model)
    fw = rec.count("forward", auto_ops.FORWARD)
    bw = rec.count("backward", auto_ops.BACKWARD)
    assert (fw, bw) == (n, n), f"{name}: {fw} {auto_ops.FORWARD}, {bw} backward, expected {n}"
    assert rec.frames == 1, f"{name}: forward + loss compiled {rec.frames} times, not once"


@pytest.mark.filterwarnings(*DYNAMO_INTERNAL)
@pytest.mark.parametrize("name", ["st-cnn-aff", "st-cnn-tps"])
def test_compile_with_a_dynamic_batch_compiles_once(name):
    torch._dynamo.reset()
    model, x, _ = _model(name)
    rec = Recorder()
    compiled = torch.compile(model, backend=rec, fullgraph=True, dynamic=True)
    g = torch.Generator().manual_seed(1)
    for b in (3, 5, 9):
        xb = torch.rand(b, *x.shape[1:], generator=g)
        err = (compiled(xb) - model(xb)).abs().max().item()
        assert err < 1e-5, f"{name}, batch {b}: {err=}"
    assert rec.frames == 1, f"{name}: compiled {rec.frames} times for 3 batch sizes"


@pytest.mark.filterwarnings(*DYNAMO_INTERNAL)
def test_compile_tps_transformer_of_unknown_size_on_its_first_call():
    # no size at construction: the matrix is solved eagerly while dynamo traces
    # (assume_constant_result), not in the graph
    torch._dynamo.reset()
    torch.manual_seed(0)
    loc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 8))
    st = SpatialTransformer(loc, "tps", features=8)
    with torch.no_grad():
        st.regressor.linear.weight.normal_(0, 0.05)
    assert st._tps_base == {} and st._tps_matrices == {}
    x, x2 = torch.rand(2, 2, 1, 28, 28)
    rec = Recorder()
    compiled = torch.compile(st, backend=rec, fullgraph=True)
    out, out2 = compiled(x), compiled(x2)
    assert rec.frames == 1, f"compiled {rec.frames} times, not once"  # nothing kept: no guard fails
    assert st._tps_base == {} and st._tps_matrices == {}
    assert (out - st(x)).abs().max().item() < 1e-6
    assert (out2 - st(x2)).abs().max().item() < 1e-6


@pytest.mark.filterwarnings(*DYNAMO_INTERNAL)
def test_compiled_model_module_keeps_the_operator():
    # torch.compile(model) (the module, not a function) with fullgraph
    torch._dynamo.reset()
    model, x, _ = _model("st-cnn-aff")
    rec = Recorder()
    out = torch.compile(model, backend=rec, fullgraph=True)(x)
    err = (out - model(x)).abs().max().item()
    assert err < 1e-5, f"{err=}"
    assert rec.count("forward", auto_ops.FORWARD) == 1


@pytest.mark.slow
@pytest.mark.filterwarnings(INDUCTOR, *DYNAMO_INTERNAL)
@pytest.mark.parametrize("name", ["st-cnn-aff", "st-fcn-proj-x2"])
def test_inductor_training_step(name):
    torch._dynamo.reset()
    model, x, y = _model(name)
    eager = _train(copy.deepcopy(model), x, y, steps=2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        compiled = _train(model, x, y, steps=2, compile_with="inductor",
                          step_backend="inductor")
    _check_equal(eager, compiled, name, 1e-4)
    names = {e.name for e in prof.events()}
    n = _kernel_transformers(model)
    for op in (f"stnkit::{auto_ops.FORWARD_NAME}", f"stnkit::{auto_ops.BACKWARD_NAME}"):
        assert (op in names) == (n > 0), f"{name}: {op} ran: {op in names}, expected {n > 0}"
