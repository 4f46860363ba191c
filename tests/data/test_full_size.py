"""Full-size generation from the real MNIST files (slow: run with ``pytest -m slow``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stnkit.data import VARIANTS, DistortedMNIST, generate, load_mnist

pytestmark = pytest.mark.slow


def test_rts_train_full(mnist_dir, tmp_path):
    ds = DistortedMNIST("RTS", "train", root=mnist_dir, cache=tmp_path, progress=False)
    _, labels = load_mnist("train", root=mnist_dir)
    assert len(ds) == 60000 and torch.equal(ds.targets, labels)
    images = ds.data.numpy()[:, 0]  # (N, 42, 42)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
    assert border.max() == 0, "ink cut at the border"
    boxes = ds._transforms["box"]
    assert boxes[:, :2].min() >= 0.5 - 1e-9 and boxes[:, 2:].max() <= 40.5 + 1e-9
    alone = generate("RTS", "train", root=mnist_dir, indices=[12345, 59999])
    for k, i in enumerate([12345, 59999]):
        assert np.abs(alone[0][k].astype(int) - ds.data[i].numpy()).max() <= 1
        assert alone[2]["angle"][k] == ds.transform_params(i)["angle"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_test_split_full_same_bytes_on_one_and_two_workers(mnist_dir, variant):
    one = generate(variant, "test", root=mnist_dir, workers=1)
    two = generate(variant, "test", root=mnist_dir, workers=2)
    assert one[0].shape[0] == 10000
    assert one[0].tobytes() == two[0].tobytes() and np.array_equal(one[1], two[1])
    for name in one[2]:
        assert one[2][name].tobytes() == two[2][name].tobytes(), name
