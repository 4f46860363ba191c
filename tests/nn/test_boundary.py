"""Module boundaries (issue 12): an input that does not fit a module's declared input_size,
dtype or device is refused with a clear StnkitError before any layer sees it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stnkit._checks import StnkitTypeError, StnkitValueError
from stnkit.models.nets import CNNClassifier, FCNClassifier, TutorialClassifier
from stnkit.nn import ParallelSpatialTransformers, SpatialTransformer


def _st(input_size=(1, 8, 8), transform="affine"):
    loc = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8, 16), nn.ReLU())
    return SpatialTransformer(loc, transform, input_size=input_size)


@pytest.mark.parametrize("shape", [(2, 1, 10, 8), (2, 1, 8, 9), (3, 1, 64, 1)])
def test_spatial_size_against_input_size(shape):
    """The fuzz case: (2, 1, 10, 8) into input_size=(1, 8, 8) gave torch's 'mat1 and mat2
    shapes cannot be multiplied'."""
    with pytest.raises(StnkitValueError, match=r"SpatialTransformer: expected input of shape "
                                               r"\(B, 1, 8, 8\) \(input_size=\(1, 8, 8\)\), "
                                               rf"got \({', '.join(map(str, shape))}\)"):
        _st()(torch.rand(shape))


def test_theta_checks_the_input_too():
    with pytest.raises(StnkitValueError, match=r"SpatialTransformer.theta: expected input of "
                                               r"shape \(B, 1, 8, 8\)"):
        _st().theta(torch.rand(2, 1, 10, 8))


def test_matching_input_still_works():
    st = _st()
    assert st(torch.rand(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    assert st(torch.rand(0, 1, 8, 8)).shape == (0, 1, 8, 8)


def test_dtype_against_the_parameters():
    with pytest.raises(StnkitTypeError, match=r"SpatialTransformer: expected input to have "
                                              r"the module's dtype \(torch.float32"):
        _st()(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    st = _st().double()
    assert st(torch.rand(2, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_device_against_the_parameters():
    with pytest.raises(StnkitValueError, match=r"SpatialTransformer: expected input on the "
                                               r"module's device \(cpu\), got meta"):
        _st()(torch.empty(2, 1, 8, 8, device="meta"))


def test_parallel_transformers_check_through_their_members():
    par = ParallelSpatialTransformers([_st(), _st()])
    with pytest.raises(StnkitValueError, match=r"expected input of shape \(B, 1, 8, 8\)"):
        par(torch.rand(2, 1, 10, 8))
    with pytest.raises(StnkitTypeError, match="expected input to have the module's dtype"):
        par(torch.rand(2, 1, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("make", [
    lambda: FCNClassifier((1, 8, 8), (16, 16), 10),
    lambda: CNNClassifier((1, 28, 28), (4, 4), 10),
    lambda: TutorialClassifier((1, 28, 28), 10),
], ids=["fcn", "cnn", "tutorial"])
def test_classifiers_check_their_input_size(make):
    net = make()
    c, h, w = net.input_size
    with pytest.raises(StnkitValueError, match=rf"Classifier: expected input of shape \(B, "
                                               rf"{c}, {h}, {w}\), got \(2, {c}, {h + 2}, "
                                               rf"{w}\)"):
        net(torch.rand(2, c, h + 2, w))
    assert net(torch.rand(2, c, h, w)).shape[0] == 2
