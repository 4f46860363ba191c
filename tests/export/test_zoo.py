"""Every zoo model exports to ONNX and onnxruntime reproduces it (max |diff| <= 1e-4)."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from stnkit.export import onnx_bytes, onnx_session, run_onnx, to_onnx  # noqa: E402
from stnkit.models import create_model, list_models, model_spec  # noqa: E402
from stnkit.nn import ThetaRegressor  # noqa: E402

TOL = 1e-4  # float32, the bound; measured differences are ~1e-6 (see the report)


def perturbed(name: str) -> nn.Module:
    """The model with random final localisation layers: theta is far from the identity, so
    the warp really matters (a fresh transformer is the identity)."""
    torch.manual_seed(0)
    model = create_model(name, input_size=model_spec(name).default_input_size).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ThetaRegressor):
                w = m.linear.weight
                w.copy_(torch.randn(w.shape, generator=g) * 2 / w.shape[1] ** 0.5)
                m.linear.bias.add_(0.1 * torch.randn(m.linear.bias.shape, generator=g))
    return model


class Warped(nn.Module):
    """(logits, warped images) of a zoo model: the transformer's output compared directly."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        warped = self.model.transformer(x)
        return self.model.classifier(warped), warped


# An affine and a projective model in the default run; the rest in the slow pass (two
# exports each: ~10 s on 2 cores, ~25 s for TPS, whose sampler exports as tensor code).
DEFAULT = ("st-cnn-aff", "st-fcn-proj")


@pytest.mark.parametrize("name", [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in list_models()])
def test_zoo_model_matches_onnxruntime(name, tmp_path):
    model = perturbed(name)
    size = model_spec(name).default_input_size
    g = torch.Generator().manual_seed(2)
    x_export, x = torch.rand(2, *size, generator=g), torch.rand(5, *size, generator=g)
    start = time.perf_counter()
    path = to_onnx(model, x_export, tmp_path / f"{name}.onnx")
    seconds = time.perf_counter() - start
    with torch.no_grad():
        want = model(x)
    got = run_onnx(onnx_session(path), x)  # another batch size than the export's
    err = (got - want).abs().max().item()
    assert got.shape == want.shape and err <= TOL, f"{name}: logits max |diff| {err:.3g}"
    print(f"{name}: export {seconds:.1f} s, logits max |diff| {err:.3g}")
    if getattr(model, "transformer", None) is None:
        return
    wrapped = Warped(model)
    session = onnx_session(onnx_bytes(wrapped, x_export))
    outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        logits, warped = wrapped(x)
    moved = (warped - x[:, :warped.shape[1]]).abs().max().item() if warped.shape == x.shape \
        else 1.0
    assert moved > 0.1, f"{name}: theta is near the identity (the warp moves pixels by {moved})"
    err = (torch.from_numpy(outputs[1]) - warped).abs().max().item()
    assert err <= TOL, f"{name}: warped images max |diff| {err:.3g}"
    print(f"{name}: warped max |diff| {err:.3g}")
