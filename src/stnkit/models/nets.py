"""Building blocks of the zoo: classification networks and the transformer-first wrapper."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from stnkit._checks import check_shape, check_size, fail
from stnkit.nn import ParallelSpatialTransformers, SpatialTransformer

__all__ = ["CNNClassifier", "FCNClassifier", "STClassifier", "TutorialClassifier"]


class FCNClassifier(nn.Module):
    """Paper's FCN: flatten -> fc h1 -> ReLU -> fc h2 -> ReLU -> fc num_classes.

    Three weight layers (two hidden layers and the classifier). Input (B, *input_size).
    """

    def __init__(self, input_size: Sequence[int], hidden: Sequence[int], num_classes: int):
        super().__init__()
        self.input_size = check_size(input_size, 3, name="input_size", fn="FCNClassifier")
        self.hidden = check_size(hidden, 2, name="hidden", fn="FCNClassifier")
        h1, h2 = self.hidden
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(self.input_size), h1), nn.ReLU(),
            nn.Linear(h1, h2), nn.ReLU(),
            nn.Linear(h2, num_classes),  # (B, num_classes)
        )

    @staticmethod
    def count(input_size: Sequence[int], hidden: Sequence[int], num_classes: int) -> int:
        """Number of parameters, without building the net."""
        n, (h1, h2) = math.prod(input_size), hidden
        return (n + 1) * h1 + (h1 + 1) * h2 + (h2 + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, ("B", *self.input_size), name="input", fn="FCNClassifier")
        return self.net(x)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden={self.hidden}"


class CNNClassifier(nn.Module):
    """Paper's CNN: conv 9x9 -> max-pool 2 -> ReLU -> conv 7x7 -> max-pool 2 -> ReLU -> fc.

    Convolutions are zero-padded to keep their size ("same"; the paper states no padding),
    so the net takes any input of at least 4 x 4, including the 21 x 21 output of the
    transformer on RTS, where unpadded 9x9 and 7x7 convolutions would leave nothing.
    Three weight layers. Input (B, *input_size).
    """

    def __init__(self, input_size: Sequence[int], channels: Sequence[int], num_classes: int):
        super().__init__()
        fn = "CNNClassifier"
        self.input_size = check_size(input_size, 3, name="input_size", fn=fn)
        self.channels = check_size(channels, 2, name="channels", fn=fn)
        C, H, W = self.input_size
        if min(H, W) < 4:
            fail(fn, "input_size", "at least 4 pixels a side (two max-pools of 2)",
                 self.input_size)
        c1, c2 = self.channels
        self.net = nn.Sequential(
            nn.Conv2d(C, c1, 9, padding=4), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(c1, c2, 7, padding=3), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * (H // 4) * (W // 4), num_classes),  # (B, num_classes)
        )

    @staticmethod
    def count(input_size: Sequence[int], channels: Sequence[int], num_classes: int) -> int:
        """Number of parameters, without building the net."""
        (C, H, W), (c1, c2) = input_size, channels
        return (C * 81 + 1) * c1 + (c1 * 49 + 1) * c2 + (c2 * (H // 4) * (W // 4) + 1) * num_classes

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, ("B", *self.input_size), name="input", fn="CNNClassifier")
        return self.net(x)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, channels={self.channels}"


class TutorialClassifier(nn.Module):
    """The PyTorch STN tutorial's classifier (returns logits, not log-probabilities).

    conv 10 k5 -> max-pool 2 -> ReLU -> conv 20 k5 -> dropout2d -> max-pool 2 -> ReLU ->
    fc 50 -> ReLU -> dropout -> fc num_classes. On (1, 28, 28) the flattened size is 320.
    """

    def __init__(self, input_size: Sequence[int], num_classes: int):
        super().__init__()
        fn = "TutorialClassifier"
        self.input_size = check_size(input_size, 3, name="input_size", fn=fn)
        C, H, W = self.input_size
        sides = [((s - 4) // 2 - 4) // 2 for s in (H, W)]
        if min(sides) < 1:
            fail(fn, "input_size", "at least 16 pixels a side", self.input_size)
        self.net = nn.Sequential(
            nn.Conv2d(C, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(10, 20, kernel_size=5), nn.Dropout2d(), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(20 * sides[0] * sides[1], 50), nn.ReLU(),
            nn.Dropout(),
            nn.Linear(50, num_classes),  # (B, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, ("B", *self.input_size), name="input", fn="TutorialClassifier")
        return self.net(x)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}"


class STClassifier(nn.Module):
    """A zoo model: spatial transformer(s) first (optional), then a classification network.

    Args:
        name: the registry name (used in error messages).
        input_size: (C, H, W) the model takes; inputs are checked against it.
        classifier: maps the transformer's output (or the input) to logits.
        transformer: a SpatialTransformer, ParallelSpatialTransformers or None (baseline).
        num_classes: width of the logits.

    Shapes: (B, C, H, W) in [0, 1] -> logits (B, num_classes).
    """

    def __init__(self, name: str, input_size: Sequence[int], classifier: nn.Module,
                 transformer: SpatialTransformer | ParallelSpatialTransformers | None = None,
                 *, num_classes: int):
        super().__init__()
        self.name = name
        self.input_size = check_size(input_size, 3, name="input_size", fn=name)
        self.num_classes = num_classes
        self.transformer = transformer
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, ("B", *self.input_size), name="input", fn=self.name)
        if self.transformer is not None:
            x = self.transformer(x)
        return self.classifier(x)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, num_classes={self.num_classes}"
