"""
A spatial transformer in front of your own classifier
=====================================================

You have a classifier; its inputs are rotated, scaled and shifted. This tutorial puts a
:class:`stnkit.nn.SpatialTransformer` in front of it, trains both together on distorted
MNIST digits, and looks at what the transformer learned to do, with no supervision but the
class label.

Everything here is plain PyTorch around two stnkit names: ``SpatialTransformer`` and the
dataset :class:`stnkit.data.DistortedMNIST`. It runs offline on the MNIST digits shipped
inside the package (``root="embedded"``) and takes about a minute on two CPU cores.
"""

# %%
# The data: rotated, scaled and translated digits
# -----------------------------------------------
#
# ``RTS`` is the paper's hardest Table 1 variant: each digit is rotated by up to 45
# degrees, scaled by 0.7 to 1.2 and placed anywhere in a 42 x 42 canvas. The datasets are
# generated deterministically and cached, so the second run starts at once.

import os
import time

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.nn import functional as F

from stnkit import ops
from stnkit.data import DistortedMNIST
from stnkit.nn import SpatialTransformer
from stnkit.viz import grid_outline

# The budget: STNKIT_DOCS_QUICK=1 (what the documentation tests set) trains a few steps.
QUICK = os.environ.get("STNKIT_DOCS_QUICK") == "1"
ITERATIONS = 40 if QUICK else 500
torch.manual_seed(0)

train_set = DistortedMNIST("RTS", "train", root="embedded", progress=False)
test_set = DistortedMNIST("RTS", "test", root="embedded", progress=False)
print(f"{len(train_set)} training and {len(test_set)} test digits of shape "
      f"{train_set.image_size}")

# %%
# Your classifier
# ---------------
#
# Any ``nn.Module`` will do. This one is a small CNN written for **28 x 28** digits: it
# knows nothing about transformers, and it is not one of stnkit's zoo models.


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),   # 16 x 14 x 14
            nn.Conv2d(16, 32, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),  # 32 x 7 x 7
        )
        self.head = nn.Linear(32 * 7 * 7, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


# %%
# The spatial transformer
# -----------------------
#
# A transformer needs a *localisation network*: any module from the input ``(B, 1, 42,
# 42)`` to a feature vector ``(B, F)``. :class:`~stnkit.nn.SpatialTransformer` adds the
# final regression layer itself (features -> the 6 numbers of an affine theta),
# initialised to the identity, so the untrained transformer passes its input through and
# training starts from the plain classifier. ``output_size=(28, 28)`` makes it hand your
# classifier the 28 x 28 input it was written for, sampled from the 42 x 42 canvas;
# ``input_size`` lets it infer F by a dry run and check every input's shape.

localisation = nn.Sequential(
    nn.MaxPool2d(2),                                   # 21 x 21
    nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),    # 8 x 8 x 8
    nn.Conv2d(8, 16, 5), nn.ReLU(),                    # 16 x 4 x 4
    nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(),
)
transformer = SpatialTransformer(localisation, "affine", output_size=(28, 28),
                                 input_size=(1, 42, 42))
model = nn.Sequential(transformer, SmallCNN())
print(transformer)

# %%
# Baseline: the same classifier without a transformer sees the 42 x 42 canvas shrunk to
# 28 x 28 (``nn.Upsample``), so both see the same number of pixels.

baseline = nn.Sequential(nn.Upsample(size=(28, 28), mode="bilinear"), SmallCNN())

# %%
# Training
# --------
#
# An ordinary loop: nothing in it knows about the transformer. The gradient of the loss
# reaches the localisation network through the sampler (see :doc:`/mathematics`).


def train(net: nn.Module, iterations: int) -> float:
    loader = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    step, start = 0, time.perf_counter()
    while step < iterations:
        for images, labels in loader:
            loss = F.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == iterations:
                break
    return time.perf_counter() - start


@torch.no_grad()
def test_error(net: nn.Module) -> float:
    net.eval()
    loader = torch.utils.data.DataLoader(test_set, batch_size=500)
    wrong = sum(int((net(x).argmax(1) != y).sum()) for x, y in loader)
    return 100.0 * wrong / len(test_set)


for name, net in (("SmallCNN", baseline), ("ST + SmallCNN", model)):
    seconds = train(net, ITERATIONS)
    print(f"{name:14s} test error {test_error(net):6.2f} %  "
          f"({ITERATIONS} iterations of 64, {seconds:.0f} s)")

# %%
# With the same classifier and the same budget, the transformer version makes fewer
# errors (at the smallest budget, ``STNKIT_DOCS_QUICK=1``, neither has learnt much).
#
# What it learned
# ---------------
#
# ``return_theta=True`` returns the transform as well. Below, for eight test digits: the
# input with the region the transformer samples (red; :func:`stnkit.viz.grid_outline`
# draws the border of the sampling grid), and what the classifier sees.

images, labels = next(iter(torch.utils.data.DataLoader(test_set, batch_size=8)))
model.eval()
with torch.no_grad():
    outputs, theta = transformer(images, return_theta=True)
    grid = ops.affine_grid(theta, (28, 28))  # where each output pixel reads the input
    outline = grid_outline(grid, (42, 42))  # (8, points, 2) in input pixels

fig, axes = plt.subplots(2, 8, figsize=(11, 3.2))
for i in range(8):
    axes[0, i].imshow(images[i, 0].numpy(), cmap="gray")
    axes[0, i].plot(*outline[i].numpy().T, color="#d62728", lw=1.2)
    axes[0, i].set_xlim(-0.5, 41.5)  # the outline may leave the canvas: keep the canvas' frame
    axes[0, i].set_ylim(41.5, -0.5)
    axes[1, i].imshow(outputs[i, 0].numpy(), cmap="gray")
    axes[0, i].set_title(f"label {labels[i].item()}", fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 0].set_ylabel("input", fontsize=9)
axes[1, 0].set_ylabel("transformer\noutput", fontsize=9)
fig.tight_layout()

# %%
# The transformer has learned, from the class label alone, to find the digit in the
# canvas, zoom in on it and partly undo its rotation. theta tells the same story: its
# linear part is (roughly) a rotation times a scale below 1 (a zoom), and its translation
# is where the digit sits.

scale = theta[:, :, :2].det().abs().sqrt()
print("zoom (sqrt |det|):", [round(s, 2) for s in scale.tolist()])
print("centre read (x, y):", [tuple(round(v, 2) for v in t) for t in theta[:, :, 2].tolist()])

# %%
# Where to go from here
# ---------------------
#
# - Other families: ``"projective"``, ``"tps"`` (a thin-plate spline through 16 control
#   points), ``"attention"`` (zoom + shift), ``"similarity"``; the zoo's ST-CNN models use
#   the paper's localisation network, :class:`stnkit.nn.CNNLocalization`.
# - A lower learning rate for the localisation network:
#   ``torch.optim.Adam(stnkit.nn.param_groups(model, lr=1e-3, localization_lr_mult=0.1))``.
# - Several transformers on one input: :class:`stnkit.nn.ParallelSpatialTransformers`.
# - The whole experiment from the command line, with checkpoints and pictures:
#   ``stnkit train --model st-cnn-aff --data RTS --schedule cpu --data-dir embedded --out runs/rts``.
