"""Ready localisation networks: input (B, C, H, W) -> features (B, F).

Each ends at its last hidden layer (features after a ReLU) and exposes ``out_features`` = F;
:class:`~stnkit.nn.SpatialTransformer` adds the final regression layer, sized for the
transform and initialised to the identity.

Architectures (Jaderberg et al. 2015, Appendix A, distorted MNIST; the PyTorch tutorial):

- :class:`FCNLocalization` (ST-FCN): fully connected, three weight layers counting the
  regression layer the transformer adds: flatten -> fc 32 -> ReLU -> fc 32 -> ReLU
  (-> regression). The paper gives 32 units per layer.
- :class:`CNNLocalization` (ST-CNN): the input down-sampled by 2 (max-pool 2), then two 5x5
  convolutional layers of 20 filters with a 2x2 max-pool between them, then fc 20
  (-> regression). Convolutions unpadded (the paper states no padding), which needs inputs
  of at least 28 x 28; ``padding=2`` keeps sizes and works on small inputs.
- :class:`TutorialLocalization`: the PyTorch "Spatial Transformer Networks Tutorial":
  conv 8 k7 -> max-pool 2 -> ReLU -> conv 10 k5 -> max-pool 2 -> ReLU -> fc 32 -> ReLU
  (-> regression).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from stnkit._checks import check_shape, check_size, fail

__all__ = ["CNNLocalization", "FCNLocalization", "TutorialLocalization"]


def _positive_ints(value, *, name: str, fn: str) -> tuple[int, ...]:
    """Layer widths: an int or a non-empty sequence of positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    return check_size(value, None, name=name, fn=fn)


def _positive_int(value, *, name: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(fn, name, "a positive int", repr(value), error=TypeError)
    if value <= 0:
        fail(fn, name, "a positive int", repr(value))
    return value


def _input_spec(input_size: tuple[int, ...]) -> tuple:
    return ("B", *input_size)


def _conv_out(size: int, kernel: int, padding: int) -> int:
    return size + 2 * padding - kernel + 1


def _cnn_side(size: int, kernel: int, downsample: int, padding: int) -> int:
    """Side of CNNLocalization's last feature map (< 1: the input is too small)."""
    s = _conv_out(size // downsample, kernel, padding)
    if s < 2:
        return 0
    return _conv_out(s // 2, kernel, padding)


class FCNLocalization(nn.Module):
    """ST-FCN localisation: flatten -> [Linear -> ReLU] per hidden width.

    Args:
        input_size: (C, H, W) or (C, D, H, W) of the input.
        hidden: widths of the hidden layers; the last one is ``out_features``.

    Shapes: input (B, *input_size) -> (B, hidden[-1]).
    """

    def __init__(self, input_size: Sequence[int], hidden: Sequence[int] = (32, 32)):
        super().__init__()
        fn = "FCNLocalization"
        self.input_size = check_size(input_size, (3, 4), name="input_size", fn=fn)
        self.hidden = _positive_ints(hidden, name="hidden", fn=fn)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(self.input_size)
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, _input_spec(self.input_size), name="input", fn="FCNLocalization")
        return self.net(x)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden={self.hidden}"


class CNNLocalization(nn.Module):
    """ST-CNN localisation (paper, Appendix A).

    max-pool ``downsample`` -> conv k (channels[0]) -> ReLU -> max-pool 2 -> conv k
    (channels[1]) -> ReLU -> flatten -> fc ``fc`` -> ReLU.

    Args:
        input_size: (C, H, W).
        channels: filters of the two conv layers (paper: 20, 20).
        kernel_size: conv kernel (paper: 5).
        fc: width of the fully connected layer, ``out_features`` (paper: 20).
        downsample: max-pool factor applied to the input first (paper: 2; 1 = none).
        padding: conv zero padding (0 as in the paper; 2 keeps the size with 5x5 kernels).

    Shapes: input (B, *input_size) -> (B, fc).
    """

    def __init__(self, input_size: Sequence[int], *, channels: Sequence[int] = (20, 20),
                 kernel_size: int = 5, fc: int = 20, downsample: int = 2, padding: int = 0):
        super().__init__()
        fn = "CNNLocalization"
        self.input_size = check_size(input_size, 3, name="input_size", fn=fn)
        c1, c2 = check_size(channels, 2, name="channels", fn=fn)
        kernel_size = _positive_int(kernel_size, name="kernel_size", fn=fn)
        fc = _positive_int(fc, name="fc", fn=fn)
        downsample = _positive_int(downsample, name="downsample", fn=fn)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            fail(fn, "padding", "a non-negative int", repr(padding))
        C, H, W = self.input_size
        sizes = [_cnn_side(s, kernel_size, downsample, padding) for s in (H, W)]
        if min(sizes) < 1:
            fail(fn, "input_size", f"large enough for max-pool {downsample}, two {kernel_size}x"
                 f"{kernel_size} convs (padding {padding}) and a max-pool 2 between (at least "
                 f"{self.min_size(kernel_size, downsample, padding)} pixels a side)",
                 self.input_size)
        self.channels, self.kernel_size, self.fc = (c1, c2), kernel_size, fc
        self.downsample, self.padding = downsample, padding
        self.net = nn.Sequential(
            nn.MaxPool2d(downsample) if downsample > 1 else nn.Identity(),
            nn.Conv2d(C, c1, kernel_size, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size, padding=padding),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * sizes[0] * sizes[1], fc),  # (B, fc)
            nn.ReLU(),
        )
        self.out_features = fc

    @staticmethod
    def min_size(kernel_size: int = 5, downsample: int = 2, padding: int = 0) -> int:
        """The smallest input side the architecture accepts."""
        s = 1
        while _cnn_side(s, kernel_size, downsample, padding) < 1:
            s += 1
        return s

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, _input_spec(self.input_size), name="input", fn="CNNLocalization")
        return self.net(x)

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, channels={self.channels}, "
                f"kernel_size={self.kernel_size}, fc={self.fc}, downsample={self.downsample}, "
                f"padding={self.padding}")


class TutorialLocalization(nn.Module):
    """The PyTorch STN tutorial's localisation net.

    conv 8 k7 -> max-pool 2 -> ReLU -> conv 10 k5 -> max-pool 2 -> ReLU -> flatten ->
    fc 32 -> ReLU. On (1, 28, 28) the flattened size is 10 * 3 * 3 = 90, as in the tutorial.

    Args:
        input_size: (C, H, W), at least 18 pixels a side.
    """

    def __init__(self, input_size: Sequence[int]):
        super().__init__()
        fn = "TutorialLocalization"
        self.input_size = check_size(input_size, 3, name="input_size", fn=fn)
        C, H, W = self.input_size
        sizes = [(_conv_out(_conv_out(s, 7, 0) // 2, 5, 0)) // 2 for s in (H, W)]
        if min(sizes) < 1:
            fail(fn, "input_size", "at least 18 pixels a side", self.input_size)
        self.net = nn.Sequential(
            nn.Conv2d(C, 8, kernel_size=7),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(8, 10, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(10 * sizes[0] * sizes[1], 32),  # (B, 32)
            nn.ReLU(),
        )
        self.out_features = 32

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, _input_spec(self.input_size), name="input", fn="TutorialLocalization")
        return self.net(x)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}"
