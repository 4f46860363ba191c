"""The model zoo: every model runs forward and backward, sizes and budgets, registry errors,
inspection, serialisation, torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stnkit import ops
from stnkit.models import (
    PARAM_BUDGET,
    CNNClassifier,
    FCNClassifier,
    create_model,
    default_st_output_size,
    list_models,
    model_spec,
    register_model,
)
from stnkit.models import registry as registry_module
from stnkit.nn import SpatialTransformer, inspect_transformers, localization_parameters

TABLE1 = ["fcn", "cnn", "st-fcn-aff", "st-fcn-proj", "st-fcn-tps", "st-cnn-aff", "st-cnn-proj",
          "st-cnn-tps"]
ADDITION = ["st-fcn-aff-x2", "st-fcn-proj-x2", "st-fcn-tps-x2"]
ALL = TABLE1 + ADDITION + ["stn-tutorial"]
TRANSFORMERS = {"fcn": 0, "cnn": 0, "stn-tutorial": 1, **{n: 1 for n in TABLE1[2:]},
                **{n: 2 for n in ADDITION}}


def _n(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _perturb_regressors(model, scale=0.05):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SpatialTransformer):
                w = m.regressor.linear.weight
                w.add_(torch.randn(w.shape, generator=g) * scale)


def test_list_models():
    assert list_models() == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    spec = model_spec(name)
    model = create_model(name, input_size=spec.default_input_size)
    x = torch.rand(3, *spec.default_input_size)
    logits = model(x)
    assert logits.shape == (3, spec.default_num_classes), logits.shape
    assert torch.isfinite(logits).all()
    _perturb_regressors(model)  # zero-initialised regressors pass no gradient to the loc net
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(x), torch.arange(3) % spec.default_num_classes)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    for pname, p in model.named_parameters():
        if "regressor" in pname or "localization" in pname:
            assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("size", [(1, 42, 42), (1, 60, 60)])
def test_table1_models_on_rts_and_cluttered_sizes(size):
    x = torch.rand(2, *size)
    for name in TABLE1:
        model = create_model(name, input_size=size)
        assert model(x).shape == (2, 10), name
        if model.transformer is not None:
            assert model.transformer.output_size == (size[1] // 2, size[2] // 2), name


@pytest.mark.parametrize("size", [(1, 28, 28), (1, 42, 42), (1, 60, 60), (2, 42, 42)])
def test_parameter_budget(size):
    names = TABLE1 + (ADDITION if size[0] == 2 else [])
    for name in names:
        n = _n(create_model(name, input_size=size))
        rel = abs(n - PARAM_BUDGET) / PARAM_BUDGET
        assert rel < 0.01, f"{name} at {size}: {n:,} parameters ({rel:.2%} off the budget)"


def test_explicit_widths_and_counts():
    model = create_model("fcn", input_size=(1, 28, 28), hidden=(100, 50))
    assert _n(model) == FCNClassifier.count((1, 28, 28), (100, 50), 10)
    assert _n(model) == 785 * 100 + 101 * 50 + 51 * 10
    model = create_model("cnn", input_size=(1, 28, 28), channels=(8, 16), num_classes=7)
    assert _n(model) == CNNClassifier.count((1, 28, 28), (8, 16), 7)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    small = create_model("st-cnn-aff", input_size=(1, 28, 28), param_budget=100_000)
    assert abs(_n(small) - 100_000) < 1_000


def test_tutorial_is_the_pytorch_tutorial():
    model = create_model("stn-tutorial", input_size=(1, 28, 28))
    assert _n(model) == 27_360  # localisation 5,520 + classifier 21,840
    assert sum(p.numel() for p in localization_parameters(model)) == 5_520
    assert model.classifier.net[8].in_features == 320


def test_st_output_size_default_and_override():
    assert default_st_output_size((1, 28, 28)) == (28, 28)
    assert default_st_output_size((1, 42, 42)) == (21, 21)
    assert default_st_output_size((1, 60, 60)) == (30, 30)
    model = create_model("st-cnn-aff", input_size=(1, 42, 42), st_output_size=(42, 42))
    assert model.transformer.output_size == (42, 42)
    rec = inspect_transformers(model, torch.rand(2, 1, 42, 42))
    assert rec[0]["output"].shape == (2, 1, 42, 42)


def test_transformer_first_and_identity_at_init():
    x = torch.rand(2, 1, 28, 28)
    model = create_model("st-cnn-tps", input_size=(1, 28, 28))
    baseline_logits = model.classifier(x)
    err = (model(x) - baseline_logits).abs().max().item()
    assert err < 1e-4, f"{err=}"


@pytest.mark.parametrize("name", ALL)
def test_inspect_transformers_on_every_model(name):
    spec = model_spec(name)
    model = create_model(name, input_size=spec.default_input_size).eval()
    x = torch.rand(2, *spec.default_input_size)
    records = inspect_transformers(model, x)
    assert len(records) == TRANSFORMERS[name]
    for rec in records:
        assert set(rec) == {"name", "module", "input", "output", "theta"}
        st = rec["module"]
        assert isinstance(st, SpatialTransformer)
        assert model.get_submodule(rec["name"]) is st
        assert torch.equal(rec["input"], x)
        assert torch.equal(rec["theta"], st.theta(x))
        assert rec["output"].shape[2:] == (st.output_size or x.shape[2:])
        assert not rec["theta"].requires_grad
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


def test_addition_models_warp_one_channel_each():
    model = create_model("st-fcn-aff-x2", input_size=(2, 42, 42))
    assert model.num_classes == 19
    _perturb_regressors(model, 0.01)
    x = torch.rand(2, 2, 42, 42)
    first, second = inspect_transformers(model, x)
    assert first["name"].endswith("transformers.0") and second["name"].endswith("transformers.1")
    for c, rec in enumerate((first, second)):
        assert rec["output"].shape == (2, 1, 21, 21)
        # the localisation net saw both channels; the warp read channel c only
        want = ops.warp(x[:, c:c + 1], rec["theta"], size=(21, 21))
        err = (rec["output"] - want).abs().max().item()
        assert err < 1e-6, f"{err=}"
    probe = x.clone()
    probe[:, 1] = 0  # channel 1 changes the first transformer's theta, not what it warps
    assert not torch.equal(inspect_transformers(model, probe)[0]["theta"], first["theta"])


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name):
    from safetensors.torch import load, save

    spec = model_spec(name)
    a = create_model(name, input_size=spec.default_input_size).eval()
    _perturb_regressors(a)
    b = create_model(name, input_size=spec.default_input_size).eval()
    b.load_state_dict(load(save(a.state_dict())))
    x = torch.rand(2, *spec.default_input_size)
    assert torch.equal(a(x), b(x))


def test_bad_input():
    with pytest.raises(ValueError, match=r"create_model: expected name one of 'cnn', .*"
                       r"got 'st-cnn-affine'"):
        create_model("st-cnn-affine", input_size=(1, 28, 28))
    with pytest.raises(ValueError, match="create_model: expected input_size to have 3 entries"):
        create_model("cnn", input_size=(28, 28))
    with pytest.raises(TypeError, match="create_model: expected overrides for 'cnn' among "
                       "channels, param_budget, got 'hidden'"):
        create_model("cnn", input_size=(1, 28, 28), hidden=(3, 3))
    with pytest.raises(ValueError, match="create_model: expected num_classes a positive int"):
        create_model("cnn", input_size=(1, 28, 28), num_classes=0)
    with pytest.raises(ValueError, match=r"st-fcn-aff-x2: expected input_size with 2 channels"):
        create_model("st-fcn-aff-x2", input_size=(1, 42, 42))
    with pytest.raises(ValueError, match=r"st-fcn-tps: expected param_budget large enough"):
        create_model("st-fcn-tps", input_size=(1, 28, 28), param_budget=20_000)
    with pytest.raises(ValueError, match=r"st-cnn-aff: expected st_output_size to have 2"):
        create_model("st-cnn-aff", input_size=(1, 28, 28), st_output_size=(1, 14, 14))
    with pytest.raises(ValueError, match=r"CNNLocalization: expected input_size large enough"):
        create_model("st-cnn-aff", input_size=(1, 20, 20))
    model = create_model("st-cnn-aff", input_size=(1, 28, 28))
    with pytest.raises(ValueError, match=r"st-cnn-aff: expected input of shape \(B, 1, 28, 28\), "
                       r"got \(2, 3, 28, 28\)"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"st-cnn-aff: expected input of shape \(B, 1, 28, 28\), "
                       r"got \(1, 28, 28\)"):
        model(torch.rand(1, 28, 28))


def test_register_model(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_model("tiny", default_input_size=(1, 8, 8), description="a linear model")
    def tiny(*, input_size, num_classes, bias=True):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes, bias=bias))

    assert "tiny" in list_models() and model_spec("tiny").overrides == ("bias",)
    assert create_model("tiny", input_size=(1, 8, 8), bias=False)[1].bias is None
    with pytest.raises(ValueError, match="register_model: expected name a name not registered"):
        register_model("tiny")(tiny)
    with pytest.raises(TypeError, match="register_model: expected factory to take the keyword "
                       "argument 'num_classes'"):
        register_model("broken")(lambda *, input_size: None)


# Warnings torch 2.13's dynamo raises about its own internals while tracing autograd.Functions
# (ours, in stnkit.ops) and inspecting non-leaf tensors; not about our code.
_DYNAMO_INTERNAL = [
    "ignore:<class 'torch.autograd.function.Function'> should not be instantiated"
    ":DeprecationWarning",
    "ignore:The .grad attribute of a Tensor that is not a leaf Tensor is being accessed"
    ":UserWarning",
]


@pytest.mark.filterwarnings(*_DYNAMO_INTERNAL)
def test_torch_compile_matches_eager():
    # "torch" warp backend: grid + sample, all traceable (the fused CPU kernel is opaque to
    # dynamo; the slow test below compiles the default backend with inductor).
    torch._dynamo.reset()
    model = create_model("st-cnn-aff", input_size=(1, 28, 28)).eval()
    model.transformer.backend = "torch"
    _perturb_regressors(model)
    x = torch.rand(4, 1, 28, 28)
    eager = model(x)
    eager.sum().backward()
    want = model.transformer.regressor.linear.weight.grad.clone()
    model.zero_grad()
    out = torch.compile(model, backend="aot_eager")(x)
    err = (out - eager).abs().max().item()
    assert err < 1e-5, f"{err=}"
    out.sum().backward()  # the compiled backward too
    got = model.transformer.regressor.linear.weight.grad
    err = ((got - want).abs().max() / want.abs().max()).item()
    assert err < 1e-4, f"{err=}"


@pytest.mark.slow
# torch's own inductor import trips over its deprecated torch.jit.script_method (torch 2.13).
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
                            *_DYNAMO_INTERNAL)
def test_torch_compile_inductor_matches_eager():
    torch._dynamo.reset()
    model = create_model("st-cnn-aff", input_size=(1, 28, 28)).eval()
    _perturb_regressors(model)
    x = torch.rand(4, 1, 28, 28)
    eager = model(x)
    out = torch.compile(model)(x)
    err = (out - eager).abs().max().item()
    assert err < 1e-5, f"{err=}"
