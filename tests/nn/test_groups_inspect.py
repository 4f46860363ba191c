"""param_groups and inspect_transformers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stnkit.models import create_model
from stnkit.nn import (
    FCNLocalization,
    ParallelSpatialTransformers,
    SpatialTransformer,
    inspect_transformers,
    localization_parameters,
    param_groups,
)


def _st(transform="affine", **kw):
    return SpatialTransformer(FCNLocalization((1, 12, 10), (8,)), transform, **kw)


def test_param_groups_split_and_cover_every_parameter_once():
    model = create_model("st-cnn-aff", input_size=(1, 28, 28))
    groups = param_groups(model, lr=0.01, localization_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["main", "localization"]
    assert groups[0]["lr"] == 0.01 and groups[1]["lr"] == pytest.approx(0.001)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    loc_ids = {id(p) for p in groups[1]["params"]}
    want = {id(p) for p in model.transformer.parameters()}  # loc net + regression layer
    assert loc_ids == want
    assert {id(p) for p in localization_parameters(model)} == want
    opt = torch.optim.SGD(groups, lr=0.01)  # accepted as is by torch optimizers
    assert [g["lr"] for g in opt.param_groups] == [0.01, pytest.approx(0.001)]


def test_param_groups_baseline_and_nested():
    assert [g["name"] for g in param_groups(create_model("cnn", input_size=(1, 28, 28)),
                                             lr=1.0)] == ["main"]
    par = ParallelSpatialTransformers([_st(), _st("tps")])
    groups = param_groups(nn.Sequential(par, nn.Flatten()), lr=0.5, localization_lr_mult=0)
    assert [g["name"] for g in groups] == ["localization"] and groups[0]["lr"] == 0.0


def test_param_groups_a_shared_parameter_counted_once():
    st = _st()
    model = nn.Sequential(st, st)  # the same transformer twice
    groups = param_groups(model, lr=0.1)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_param_groups_bad_input():
    model = _st()
    with pytest.raises(ValueError, match="param_groups: expected lr a finite positive number"):
        param_groups(model, lr=0)
    with pytest.raises(ValueError, match="param_groups: expected localization_lr_mult a number"):
        param_groups(model, lr=0.1, localization_lr_mult=-1)
    with pytest.raises(TypeError, match="param_groups: expected model to be an nn.Module"):
        param_groups([torch.zeros(1)], lr=0.1)


def test_inspect_call_order_names_and_repeated_calls():
    a, b = _st("attention", output_size=(6, 5)), _st("affine")
    shared = _st("translation")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.second, self.first, self.shared = b, a, shared

        def forward(self, x):
            y = self.first(x)
            z = self.shared(self.shared(x))
            return self.second(x), y, z

    x = torch.rand(2, 1, 12, 10)
    records = inspect_transformers(Net(), x)
    assert [r["name"] for r in records] == ["first", "shared", "shared", "second"]
    assert records[0]["output"].shape == (2, 1, 6, 5)
    assert records[0]["theta"].shape == (2, 2, 3)
    assert torch.equal(records[2]["input"], records[1]["output"])
    assert inspect_transformers(a, x)[0]["name"] == ""
    assert inspect_transformers(nn.Identity(), x) == []


def test_inspect_leaves_no_hooks_after_an_error():
    st = _st()
    with pytest.raises(ValueError, match="expected input of shape"):
        inspect_transformers(st, torch.rand(12, 10))
    assert not st._forward_hooks and not st.regressor._forward_hooks
    with pytest.raises(TypeError, match="inspect_transformers: expected x to be a torch.Tensor"):
        inspect_transformers(st, [1.0])
