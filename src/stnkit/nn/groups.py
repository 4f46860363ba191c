"""Optimizer parameter groups: localisation networks at their own learning rate.

The paper trains the localisation networks at a fraction of the base learning rate on SVHN
and CUB (e.g. 1e-4 of it on CUB); ``param_groups(model, lr=..., localization_lr_mult=...)``
gives any torch optimizer the two groups.
"""

from __future__ import annotations

from torch import nn

from stnkit._checks import check_finite_number, fail
from stnkit.nn.transformer import SpatialTransformer

__all__ = ["localization_parameters", "param_groups"]


def localization_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of every SpatialTransformer's localisation net and regression layer.

    Each parameter once, in ``model.named_parameters()`` order.
    """
    if not isinstance(model, nn.Module):
        fail("localization_parameters", "model", "to be an nn.Module", type(model).__name__,
             error=TypeError)
    loc = set()
    for m in model.modules():
        if isinstance(m, SpatialTransformer):
            loc.update(id(p) for p in m.localization.parameters())
            loc.update(id(p) for p in m.regressor.parameters())
    return [p for p in model.parameters() if id(p) in loc]


def param_groups(model: nn.Module, *, lr: float, localization_lr_mult: float = 1.0) -> list[dict]:
    """Optimizer parameter groups with the localisation nets at ``lr * localization_lr_mult``.

    Args:
        model: any module; every :class:`SpatialTransformer` inside it counts.
        lr: base learning rate, > 0.
        localization_lr_mult: >= 0 (0 freezes the transformers in plain SGD).
    Returns:
        ``[{"name": "main", "params": [...], "lr": lr},
        {"name": "localization", "params": [...], "lr": lr * localization_lr_mult}]``,
        leaving out an empty group; every parameter of ``model`` exactly once.

    >>> import torch
    >>> from stnkit.models import create_model
    >>> from stnkit.nn import param_groups
    >>> model = create_model("st-cnn-aff", input_size=(1, 28, 28))
    >>> groups = param_groups(model, lr=0.01, localization_lr_mult=0.1)
    >>> [(group["name"], group["lr"]) for group in groups]
    [('main', 0.01), ('localization', 0.001)]
    >>> opt = torch.optim.SGD(groups, lr=0.01)
    """
    fn = "param_groups"
    if not isinstance(model, nn.Module):
        fail(fn, "model", "to be an nn.Module", type(model).__name__, error=TypeError)
    lr = check_finite_number(lr, name="lr", fn=fn, positive=True)
    mult = check_finite_number(localization_lr_mult, name="localization_lr_mult", fn=fn)
    if mult < 0:
        fail(fn, "localization_lr_mult", "a number >= 0", repr(localization_lr_mult))
    loc_ids = {id(p) for p in localization_parameters(model)}
    main = [p for p in model.parameters() if id(p) not in loc_ids]
    loc = [p for p in model.parameters() if id(p) in loc_ids]
    groups = []
    if main:
        groups.append({"name": "main", "params": main, "lr": lr})
    if loc:
        groups.append({"name": "localization", "params": loc, "lr": lr * mult})
    return groups
