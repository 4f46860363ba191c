"""Look inside a model: what every spatial transformer saw, produced and predicted."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from stnkit._checks import check_tensor, fail
from stnkit.nn.transformer import SpatialTransformer

__all__ = ["inspect_transformers"]


def inspect_transformers(model: nn.Module, x: Tensor) -> list[dict[str, Any]]:
    """Run ``model(x)`` and report every SpatialTransformer call, in call order.

    Runs under ``torch.no_grad()`` in the model's current mode (call ``model.eval()`` first
    for deterministic dropout / batch norm); the model is left unchanged (hooks removed).

    Returns:
        one dict per transformer call: ``name`` (module path in ``model``, ``""`` if ``model``
        is itself the transformer), ``module``, ``input`` (what it received, (B, C, H, W)),
        ``output`` ((B, C', H_out, W_out)) and ``theta`` (as ``SpatialTransformer.theta``),
        tensors detached. A model without transformers gives ``[]``.
    """
    fn = "inspect_transformers"
    if not isinstance(model, nn.Module):
        fail(fn, "model", "to be an nn.Module", type(model).__name__, error=TypeError)
    check_tensor(x, name="x", fn=fn)
    records: list[dict[str, Any]] = []
    pending: dict[int, Tensor] = {}  # id(transformer) -> theta of the call in progress
    handles = []

    def on_theta(st: SpatialTransformer):
        def hook(module, args, output):
            pending[id(st)] = output.detach()
        return hook

    def on_output(name: str):
        def hook(module, args, kwargs, output):
            inp = args[0] if args else kwargs["x"]
            out = output[0] if isinstance(output, tuple) else output
            records.append({"name": name, "module": module, "input": inp.detach(),
                            "output": out.detach(), "theta": pending.pop(id(module))})
        return hook

    try:
        for name, m in model.named_modules():
            if isinstance(m, SpatialTransformer):
                handles.append(m.regressor.register_forward_hook(on_theta(m)))
                handles.append(m.register_forward_hook(on_output(name), with_kwargs=True))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return records
