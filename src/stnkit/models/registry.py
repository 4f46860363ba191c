"""The model registry (timm-style): ``@register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from stnkit._checks import check_size, fail

__all__ = ["ModelSpec", "create_model", "list_models", "model_spec", "register_model"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its factory and defaults."""

    name: str
    factory: Callable[..., nn.Module]
    default_input_size: tuple[int, int, int]
    default_num_classes: int
    description: str

    @property
    def overrides(self) -> tuple[str, ...]:
        """Keyword overrides the factory accepts besides input_size and num_classes."""
        params = inspect.signature(self.factory).parameters
        return tuple(n for n, p in params.items() if p.kind is p.KEYWORD_ONLY
                     and n not in ("input_size", "num_classes"))


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, default_input_size: Sequence[int] = (1, 28, 28),
                   default_num_classes: int = 10, description: str = ""):
    """Decorator registering ``factory(*, input_size, num_classes, **overrides) -> nn.Module``.

    >>> import math
    >>> from torch import nn
    >>> from stnkit.models import create_model, list_models, register_model
    >>> @register_model("my-net", description="a linear classifier")
    ... def my_net(*, input_size, num_classes):
    ...     return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_size), num_classes))
    >>> "my-net" in list_models()
    True
    >>> create_model("my-net", input_size=(1, 28, 28))
    Sequential(
      (0): Flatten(start_dim=1, end_dim=-1)
      (1): Linear(in_features=784, out_features=10, bias=True)
    )
    """
    fn = "register_model"
    if not isinstance(name, str) or not name:
        fail(fn, "name", "a non-empty str", repr(name), error=TypeError)
    size = check_size(default_input_size, 3, name="default_input_size", fn=fn)

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            fail(fn, "name", "a name not registered yet", repr(name))
        params = inspect.signature(factory).parameters
        for required in ("input_size", "num_classes"):
            if required not in params:
                fail(fn, "factory", f"to take the keyword argument {required!r}",
                     f"{factory.__name__}{inspect.signature(factory)}", error=TypeError)
        doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
        _REGISTRY[name] = ModelSpec(name, factory, size, default_num_classes, doc)
        return factory

    return decorator


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name`` (ValueError if unknown)."""
    if name not in _REGISTRY:
        fail("create_model", "name", "one of " + ", ".join(repr(n) for n in list_models()),
             repr(name))
    return _REGISTRY[name]


def create_model(name: str, *, input_size: Sequence[int], num_classes: int | None = None,
                 **overrides) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        input_size: (C, H, W) of the images the model takes (values in [0, 1]).
        num_classes: logits per image; None: the model's default (10 for the MNIST
            models, 19 for the MNIST-addition models, whose sums run 0..18).
        overrides: model-specific keyword options (see ``model_spec(name).overrides`` and
            each factory's docstring), e.g. ``st_output_size=(21, 21)``.
    Returns:
        a module mapping (B, C, H, W) to logits (B, num_classes).

    >>> import torch
    >>> from stnkit.models import create_model
    >>> model = create_model("st-cnn-aff", input_size=(1, 42, 42), st_output_size=(21, 21))
    >>> model(torch.rand(2, 1, 42, 42)).shape
    torch.Size([2, 10])
    >>> sum(p.numel() for p in model.parameters())
    398554
    """
    fn = "create_model"
    if not isinstance(name, str):
        fail(fn, "name", "a str", type(name).__name__, error=TypeError)
    spec = model_spec(name)
    input_size = check_size(input_size, 3, name="input_size", fn=fn)
    if num_classes is None:
        num_classes = spec.default_num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        fail(fn, "num_classes", "an int", repr(num_classes), error=TypeError)
    if num_classes < 1:
        fail(fn, "num_classes", "a positive int", repr(num_classes))
    allowed = spec.overrides
    for key in overrides:
        if key not in allowed:
            fail(fn, "overrides", f"for {name!r} among " + (", ".join(allowed) or "(none)"),
                 repr(key), error=TypeError)
    return spec.factory(input_size=input_size, num_classes=num_classes, **overrides)
