"""The data of a run, as tensors in memory, and the order it is read in.

Each split is materialised once as ``images`` (N, C, H, W) and ``labels`` (N,), so a batch is
one indexing operation, not a Python loop over samples. The order of training samples is a
pure function of ``(seed, step)``: epoch ``e`` is ``randperm(N)`` drawn from a generator
seeded with ``(seed, e)``, and step ``s`` reads positions ``s*B ... s*B + B - 1`` of the
concatenated epochs. Nothing about it has to be saved to resume exactly; under ``torchrun``
rank ``r`` of ``W`` takes the ``r``-th of ``W`` equal slices of the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stnkit._checks import fail

__all__ = ["BatchOrder", "Split", "load_split"]


@dataclass
class Split:
    images: Tensor  # (N, C, H, W) uint8 (value * 255) or float32 in [0, 1]
    labels: Tensor  # (N,) int64
    num_classes: int
    image_size: tuple[int, int, int]  # (C, H, W)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) float32 in [0, 1] and labels (B,) of the samples ``idx``."""
        x = self.images.index_select(0, idx).to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255)  # as DistortedMNIST.__getitem__ does
        return x, self.labels.index_select(0, idx).to(device, non_blocking=True)

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
        share = self.batch_size // world_size
        start = step * self.batch_size + rank * share
        pos = torch.arange(start, start + share, dtype=torch.int64)
        epochs = pos // self.n
        out = torch.empty_like(pos)
        for e in torch.unique(epochs).tolist():
            m = epochs == e
            out[m] = self._perm(int(e))[pos[m] % self.n]
        return out
