"""The data of a run, as tensors in memory, and the order it is read in.

Each split is materialised once as ``images`` (N, C, H, W) and ``labels`` (N,), so a batch is
one indexing operation, not a Python loop over samples. The order of training samples is a
pure function of ``(seed, step)``: epoch ``e`` is ``randperm(N)`` drawn from a generator
seeded with ``(seed, e)``, and step ``s`` reads positions ``s*B ... s*B + B - 1`` of the
concatenated epochs. Nothing about it has to be saved to resume exactly; under ``torchrun``
rank ``r`` of ``W`` takes the ``r``-th of ``W`` equal slices of the same global batch.

With *fresh distortions* the training split holds MNIST digits, not distorted images: each
batch is generated when it is read, digit ``i`` in epoch ``e`` distorted by its own random
stream ``(data seed, variant, "train", i, e)`` (:func:`stnkit.data.distort`; epoch 0 is the
fixed dataset itself). A batch is a pure function of ``(seed, step)`` as before, so resume
and torchrun need nothing more. A *validation* split is the fixed distortion of the last
``validation_size`` training digits, which then take no part in training (in fresh mode not
even as addition partners or clutter; the fixed training set draws those from every digit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from stnkit._checks import fail

__all__ = ["BatchOrder", "FreshDistortions", "Split", "load_split", "load_training"]


class FreshDistortions:
    """Distorts training digits on demand: sample ``i`` of epoch ``e`` is
    ``distort(variant, digits, labels, [i], seed=seed, epoch=e)``, bitwise the same however
    the samples are batched."""

    def __init__(self, variant: str, digits: Tensor, labels: Tensor, *, seed: int):
        from stnkit.data.distortions import _Source

        self.variant, self.seed = variant, seed
        self.source = _Source(digits.numpy(), labels.numpy())

    def __call__(self, idx: Tensor, epochs: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 images (B, C, S, S) and int64 labels (B,) of digits ``idx`` in ``epochs``."""
        from stnkit.data import distort

        images, labels = [None] * len(idx), [None] * len(idx)
        for e in torch.unique(epochs).tolist():
            where = torch.nonzero(epochs == e).flatten().tolist()
            x, y, _ = distort(self.variant, None, None, idx[where].numpy(), seed=self.seed,
                              split="train", epoch=int(e), _source=self.source)
            for k, w in enumerate(where):
                images[w], labels[w] = x[k], y[k]
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


@dataclass
class Split:
    images: Tensor | None  # (N, C, H, W) uint8 (value * 255) or float32 in [0, 1]; None: fresh
    labels: Tensor  # (N,) int64 (with fresh distortions: the digits' own labels)
    num_classes: int
    image_size: tuple[int, int, int]  # (C, H, W)
    fresh: FreshDistortions | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: Tensor, device: torch.device, epochs: Tensor | None = None,
              ) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) float32 in [0, 1] and labels (B,) of the samples ``idx``
        (read in ``epochs``, which only fresh distortions look at; default epoch 0)."""
        if self.fresh is not None:
            x, y = self.fresh(idx, torch.zeros_like(idx) if epochs is None else epochs)
        else:
            x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
        x = x.to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255)  # as DistortedMNIST.__getitem__ does
        return x, y.to(device, non_blocking=True)

    def first(self, n: int) -> tuple[Tensor, Tensor]:
        """The first ``n`` samples (float32 images, labels) on CPU."""
        return self.batch(torch.arange(min(n, len(self))), torch.device("cpu"))


def resolve_root(data_dir: str | None):
    if data_dir == "embedded":
        from stnkit.data import EMBEDDED

        return EMBEDDED
    return data_dir


def load_split(variant: str, split: str, *, seed: int, data_dir: str | None,
               limit: int | None = None, progress: bool = False) -> Split:
    """The first ``limit`` samples (all when None) of ``DistortedMNIST(variant, split)``.

    Kept as uint8 (how the dataset stores them; a quarter of the memory of float32) and
    converted batch by batch. ``variant="mnist"`` is plain MNIST (28x28, undistorted).
    """
    if variant == "mnist":
        from stnkit.data import load_mnist

        images, labels = load_mnist(split, root=resolve_root(data_dir))
        n = len(labels) if limit is None else min(int(limit), len(labels))
        return Split(torch.as_tensor(images[:n]).unsqueeze(1).contiguous(),  # (N, 1, 28, 28)
                     torch.as_tensor(labels[:n]).to(torch.int64).contiguous(), 10, (1, 28, 28))
    from stnkit.data import DistortedMNIST

    ds = DistortedMNIST(variant, split, seed=seed, root=resolve_root(data_dir), progress=progress)
    n = len(ds) if limit is None else min(int(limit), len(ds))
    images = ds.data[:n].contiguous()  # (N, C, S, S) uint8
    labels = ds.targets[:n].to(torch.int64).contiguous()  # (N,)
    return Split(images, labels, int(ds.num_classes), tuple(int(s) for s in ds.image_size))


def load_training(variant: str, *, seed: int, data_dir: str | None, limit: int | None,
                  validation: int | None, fresh: bool, progress: bool = False,
                  ) -> tuple[Split, Split | None]:
    """The training split (the first ``limit`` of its samples) and, when ``validation`` is
    set, the validation split: the fixed samples of the last ``validation`` training digits,
    which are then left out of training. ``fresh`` distorts the training digits anew every
    epoch (plain MNIST has no distortion to redraw: there it changes nothing)."""
    fresh = fresh and variant != "mnist"
    if not validation and not fresh:
        return load_split(variant, "train", seed=seed, data_dir=data_dir, limit=limit,
                          progress=progress), None
    from stnkit.data import VARIANTS, generate, load_mnist

    root = resolve_root(data_dir)
    digits, labels = load_mnist("train", root=root)
    total = len(labels)
    if validation and validation >= total:
        fail("train", "config.validation_size", f"fewer than the {total} training digits",
             validation)
    n = total - (validation or 0)
    n = n if limit is None else min(int(limit), n)
    if fresh:
        kept = total - (validation or 0)  # partners and clutter come from these digits
        v = VARIANTS[variant]
        train = Split(None, labels[:n].to(torch.int64).contiguous(), v.num_classes,
                      v.image_size(), FreshDistortions(variant, digits[:kept], labels[:kept],
                                                       seed=seed))
    else:
        train = load_split(variant, "train", seed=seed, data_dir=data_dir, limit=n,
                           progress=progress)
    if not validation:
        return train, None
    held = np.arange(total - validation, total)
    if variant == "mnist":
        val = Split(digits[held].unsqueeze(1).contiguous(), labels[held].to(torch.int64),
                    10, (1, 28, 28))
    else:
        images, val_labels, _ = generate(variant, "train", seed=seed, root=root, indices=held)
        val = Split(torch.from_numpy(images), torch.from_numpy(val_labels), train.num_classes,
                    train.image_size)
    return train, val


class BatchOrder:
    """Indices of the samples of each step: a pure function of ``(seed, step)``."""

    def __init__(self, num_samples: int, batch_size: int, seed: int):
        if num_samples <= 0:
            fail("train", "the training split", "to be non-empty", f"{num_samples} samples")
        self.n = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        p = self._perms.get(epoch)
        if p is None:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
            p = torch.randperm(self.n, generator=g)
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = p
        return p

    def indices(self, step: int, *, rank: int = 0, world_size: int = 1) -> Tensor:
        """(B / world_size,) indices of step ``step`` (0-based) for ``rank``."""
        return self.draw(step, rank=rank, world_size=world_size)[0]

    def draw(self, step: int, *, rank: int = 0, world_size: int = 1) -> tuple[Tensor, Tensor]:
        """The indices of :meth:`indices` and the epoch each of them is read in."""
        share = self.batch_size // world_size
        start = step * self.batch_size + rank * share
        pos = torch.arange(start, start + share, dtype=torch.int64)
        epochs = pos // self.n
        out = torch.empty_like(pos)
        for e in torch.unique(epochs).tolist():
            m = epochs == e
            out[m] = self._perm(int(e))[pos[m] % self.n]
        return out, epochs
