"""The ready localisation nets: architecture (paper / tutorial), sizes, bad input."""

from __future__ import annotations

import pytest
import torch

from stnkit.nn import CNNLocalization, FCNLocalization, SpatialTransformer, TutorialLocalization


def _count(m) -> int:
    return sum(p.numel() for p in m.parameters())


def test_fcn_localization():
    loc = FCNLocalization((1, 28, 28))
    assert loc.out_features == 32
    assert loc(torch.rand(3, 1, 28, 28)).shape == (3, 32)
    assert _count(loc) == (784 + 1) * 32 + 33 * 32
    assert FCNLocalization((2, 3, 4, 5), (7, 9))(torch.rand(1, 2, 3, 4, 5)).shape == (1, 9)


def test_cnn_localization_is_the_papers():
    loc = CNNLocalization((1, 28, 28))
    # max-pool 2 -> 14 -> conv5 -> 10 -> pool -> 5 -> conv5 -> 1: 20 features of 1x1 -> fc 20
    convs = [m for m in loc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(20, (5, 5)), (20, (5, 5))]
    assert loc.out_features == 20
    assert _count(loc) == (25 + 1) * 20 + (20 * 25 + 1) * 20 + (20 + 1) * 20
    assert loc(torch.rand(2, 1, 28, 28)).shape == (2, 20)
    # 42x42 (RTS): 21 -> 17 -> 8 -> 4: 20 * 4 * 4 features into fc 20
    assert loc.net[7].in_features == 20 and CNNLocalization((1, 42, 42)).net[7].in_features == 320


def test_cnn_localization_size_limits():
    assert CNNLocalization.min_size() == 28
    CNNLocalization((1, 28, 28))
    with pytest.raises(ValueError, match=r"CNNLocalization: expected input_size large enough.*"
                       r"at least 28 pixels a side.*got \(1, 27, 28\)"):
        CNNLocalization((1, 27, 28))
    small = CNNLocalization((3, 16, 16), padding=2)
    assert small(torch.rand(2, 3, 16, 16)).shape == (2, 20)
    with pytest.raises(ValueError, match="expected channels to have 2 entries"):
        CNNLocalization((1, 28, 28), channels=(20,))


def test_tutorial_localization():
    loc = TutorialLocalization((1, 28, 28))
    assert loc.net[7].in_features == 90  # 10 * 3 * 3, as in the tutorial
    assert loc.out_features == 32
    st = SpatialTransformer(loc, "affine")
    assert _count(st) == 5520  # the tutorial's localisation + fc_loc
    with pytest.raises(ValueError, match="TutorialLocalization: expected input_size at least 18"):
        TutorialLocalization((1, 17, 20))


@pytest.mark.parametrize("make", [lambda: FCNLocalization((1, 28, 28)),
                                  lambda: CNNLocalization((1, 28, 28)),
                                  lambda: TutorialLocalization((1, 28, 28))])
def test_wrong_input(make):
    loc = make()
    name = type(loc).__name__
    with pytest.raises(ValueError, match=rf"{name}: expected input of shape \(B, 1, 28, 28\), "
                       r"got \(2, 3, 28, 28\)"):
        loc(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=rf"{name}: expected input of shape"):
        loc(torch.rand(28, 28))


def test_bad_arguments():
    with pytest.raises(ValueError, match="FCNLocalization: expected hidden to contain positive"):
        FCNLocalization((1, 4, 4), (0,))
    with pytest.raises(ValueError, match="FCNLocalization: expected input_size to have 3 or 4"):
        FCNLocalization((4, 4))
    with pytest.raises(TypeError, match="FCNLocalization: expected hidden a sequence"):
        FCNLocalization((1, 4, 4), "32")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"kernel_size": (5, 5)}, TypeError, r"CNNLocalization: expected kernel_size a positive int, got \(5, 5\)"),
    ({"fc": 0}, ValueError, r"CNNLocalization: expected fc a positive int, got 0"),
    ({"downsample": True}, TypeError, r"CNNLocalization: expected downsample a positive int, got True"),
])
def test_cnn_localization_scalar_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CNNLocalization((1, 28, 28), **kwargs)
