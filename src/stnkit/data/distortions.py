"""The distorted-MNIST generators of the paper's experiments (Jaderberg et al. 2015, appendix).

Every distortion is a warp by :func:`stnkit.ops.warp` (bilinear, zero padding,
``align_corners=False``, ``backend="auto"``: the fused C++ kernels where they are built,
see :func:`warp_backend`), computed in float32 under ``torch.no_grad()`` and stored
as uint8 (rounded ``255 * value``, like MNIST itself). The true transform of every sample is
recorded.

Pixel coordinates in the recorded parameters follow OpenCV / matplotlib's ``imshow``: pixel
(col, row) has its centre at (x, y) = (col, row), so an image of width W spans
[-0.5, W - 0.5]. A digit is the 28x28 MNIST image, centred at (13.5, 13.5); its ink box
(k0, r0, k1, r1) is the first and last column and row with a nonzero pixel.

Variants (``S`` is the output size; parameter names in brackets, all overridable):

- ``R`` (S=28): rotation by ``angle`` ~ U[-90, 90] degrees about the centre.
- ``RTS`` (S=42): rotation ``angle`` ~ U[-45, 45] degrees, scale ``scale`` ~ U[0.7, 1.2], both
  about the digit's centre, then the digit is placed uniformly at random where it stays
  inside the canvas with a ``margin`` (1 px) of empty border: the bilinear support of its
  ink (the ink box grown by 1 px, rotated and scaled) must lie within
  [-0.5 + margin, S - 0.5 - margin].
- ``P`` (S=28): the paper's "scaling a digit image randomly between 0.75 and 1.0, and then
  perturbing the four corners of the image with Gaussian noise (standard deviation of 5
  pixels) then projecting to the original size", read as: the corners of the digit's frame
  (pixel edges, (-0.5, -0.5) to (27.5, 27.5)) are scaled by ``scale`` ~ U[0.75, 1] about the
  canvas centre, then each is moved by N(0, ``corner_sigma`` = 5) output pixels per
  coordinate; the digit is warped forward, into the S x S canvas, by the homography taking
  the frame's corners to the moved ones (``cv2.getPerspectiveTransform(frame, corners)``;
  ``theta`` is its inverse, output -> input). Draws whose moved corners fold over (a
  non-convex quadrilateral: no view of a plane; 1.4 % of first draws) are redrawn. Noise
  this large on a 21-28 px square leaves about 19 % of the digits cut by the border, shrunk
  or squashed, as many as an independent OpenCV implementation of the same reading gives
  (``docs/results/p-distortion.md``, ``scripts/check_p_distortion.py``).
- ``E`` (S=28): scale ``scale`` ~ U[0.75, 1], then a thin-plate spline: the output's regular
  4x4 lattice of ``control_points`` samples the input at the scaled lattice point moved by
  N(0, ``control_sigma`` = 1.5) digit pixels per coordinate (the TPS source points).
- ``T`` (S=60): the digit translated by a whole number of pixels, uniformly among the
  positions where its ink stays inside with ``margin`` px of empty border.
- ``TC`` (S=60): ``T`` plus ``clutter`` = 6 crops of ``clutter_size`` = 6 px from other
  digits of the same split (crop centred in the source's ink box), pasted at uniform random
  positions (pixel-wise max).
- ``addition`` (S=42, 2 channels, 19 classes): channel 0 is digit i, channel 1 a partner
  digit j != i of the same split (uniform), each independently RTS-distorted; label
  ``label_i + label_j``.
- ``colocalisation`` (S=84): ``instances`` ~ U{2..6} digits of the class of digit i (digit i
  and others of that class from the split), at uniform random whole-pixel positions with
  non-overlapping ink boxes (>= 1 px apart) inside the canvas, plus ``clutter`` = 16 crops of
  6 px of other digits; label = the class. Whole-pixel placement is a copy, so instances are
  pasted directly (the same values a translation warp gives).

Recorded transforms (arrays per sample; ``matrix`` is the forward pixel map from digit to
canvas as ``cv2.warpAffine`` / ``cv2.warpPerspective`` take it, ``theta`` the normalised
output -> input matrix given to ``warp``):

- ``R``: ``angle`` (degrees), ``matrix`` (2, 3), ``theta`` (2, 3).
- ``RTS``: ``angle``, ``scale``, ``center`` (2,) where the digit's centre lands, ``matrix``,
  ``theta``, ``box`` (x0, y0, x1, y1) bounding the ink's bilinear support (every nonzero
  pixel centre lies strictly inside).
- ``P``: ``scale``, ``corner_offsets`` (4, 2) in pixels, ``corners`` (4, 2) the moved corners
  (top-left, top-right, bottom-right, bottom-left), ``matrix`` (3, 3), ``theta`` (3, 3).
- ``E``: ``scale``, ``offsets`` (K, 2) in digit pixels, ``src_points`` (K, 2), the TPS theta.
- ``T``: ``offset`` (2,) of the digit frame's top-left, ``matrix``, ``theta``, ``box`` the
  exact ink box (pixel edges). ``TC`` adds ``clutter_source`` (6,) digit indices,
  ``clutter_crop`` (6, 2) crop top-left (x, y) in the source, ``clutter_position`` (6, 2)
  top-left in the canvas.
- ``addition``: RTS's entries with a leading axis of 2 (the channels), and ``partner``.
- ``colocalisation``: ``count``, ``sources`` (6,) digit indices, ``offsets`` (6, 2),
  ``boxes`` (6, 4) exact ink boxes (padded with -1 / NaN past ``count``), ``clutter_*``.

Randomness: sample i draws everything from its own generator, seeded by
``SeedSequence([seed, crc32(variant), split id, i])``, so it can be regenerated alone and the
result does not depend on batching or on the number of workers. Changing a parameter
rescales the same draws. *Fresh distortions* (``distort(..., epoch=e)``, used by training
with ``fresh_distortions``) draw digit i's distortion of epoch e >= 1 from
``SeedSequence([seed, crc32(variant), split id, i, e])``; epoch 0 is the fixed dataset itself.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from stnkit._checks import check_choice, fail
from stnkit.ops import transforms, warp
from stnkit.ops.grids import tps_lattice
from stnkit.ops.warp import auto_backend

__all__ = [
    "GENERATOR_VERSION",
    "VARIANTS",
    "Variant",
    "check_seed",
    "distort",
    "ink_boxes",
    "resolve_params",
    "sample_rng",
    "warp_backend",
]

GENERATOR_VERSION = 1
"""Version of the generated data: bump it whenever the bytes a generator produces for the same
variant, split, seed and parameters change, whether the change is here or in the ops it
warps with (``stnkit.ops`` grids, samplers, kernels). It is part of the dataset cache key
(:mod:`stnkit.data.datasets`), so a bump invalidates every cache and nothing else does;
``tests/data/test_datasets.py::test_generated_bytes_are_pinned`` fails until it is bumped."""

_SPLIT_IDS = {"train": 0, "test": 1}
_DIGIT = 28
_DIGIT_CENTRE = (_DIGIT - 1) / 2  # 13.5


@dataclass(frozen=True)
class Variant:
    """A distorted-MNIST variant: its name, picture, classes and default parameters."""

    name: str
    description: str
    channels: int
    num_classes: int
    default_items: tuple[tuple[str, Any], ...]

    @property
    def defaults(self) -> dict[str, Any]:
        """The default parameters (a fresh dict)."""
        return dict(self.default_items)

    def image_size(self, params: Mapping[str, Any] | None = None) -> tuple[int, int, int]:
        """(C, S, S) for ``params`` (the defaults if None)."""
        size = (params or self.defaults)["size"]
        return (self.channels, size, size)


def _variant(name, description, defaults, channels=1, num_classes=10) -> Variant:
    return Variant(name, description, channels, num_classes, tuple(defaults.items()))


VARIANTS: Mapping[str, Variant] = MappingProxyType({v.name: v for v in (
    _variant("R", "rotated: angle ~ U[-90, 90] deg, 28x28",
             {"size": 28, "angle": (-90.0, 90.0)}),
    _variant("RTS", "rotated, scaled and translated: angle ~ U[-45, 45] deg, scale ~ "
             "U[0.7, 1.2], random position in 42x42",
             {"size": 42, "angle": (-45.0, 45.0), "scale": (0.7, 1.2), "margin": 1.0}),
    _variant("P", "projective: scale ~ U[0.75, 1], corners moved by N(0, 5 px), 28x28",
             {"size": 28, "scale": (0.75, 1.0), "corner_sigma": 5.0}),
    _variant("E", "elastic: scale ~ U[0.75, 1], TPS with 4x4 control points moved by "
             "N(0, 1.5 px), 28x28",
             {"size": 28, "scale": (0.75, 1.0), "control_points": 16, "control_sigma": 1.5}),
    _variant("T", "translated: random position in 60x60",
             {"size": 60, "margin": 1.0}),
    _variant("TC", "translated and cluttered: random position in 60x60 plus 6 random 6x6 "
             "crops of other digits",
             {"size": 60, "margin": 1.0, "clutter": 6, "clutter_size": 6}),
    _variant("addition", "two RTS digits as 2 channels of 42x42; label = their sum (19 "
             "classes)",
             {"size": 42, "angle": (-45.0, 45.0), "scale": (0.7, 1.2), "margin": 1.0},
             channels=2, num_classes=19),
    _variant("colocalisation", "2-6 digits of one class at random positions in 84x84 plus "
             "16 random 6x6 crops of other digits; boxes recorded",
             {"size": 84, "margin": 1.0, "instances": (2, 6), "clutter": 16,
              "clutter_size": 6}),
)})
"""Every distorted-MNIST variant by name (a read-only mapping of :class:`Variant`)."""

# parameter -> kind; checked by resolve_params.
_KINDS = {
    "size": "size", "angle": "range", "scale": "positive_range", "margin": "nonnegative",
    "corner_sigma": "nonnegative", "control_sigma": "nonnegative",
    "control_points": "square", "clutter": "count", "clutter_size": "crop",
    "instances": "int_range",
}


# --------------------------------------------------------------------------- arguments


def check_seed(seed: Any, *, fn: str, name: str = "seed") -> int:
    """``seed`` (or another stream key called ``name``) must be an int in [0, 2**63)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        fail(fn, name, "an int", f"{type(seed).__name__} ({seed!r})", error=TypeError)
    if not 0 <= int(seed) < 2**63:
        fail(fn, name, "an int in [0, 2**63)", int(seed))
    return int(seed)


def _number(value: Any, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        fail(fn, name, "a real number", repr(value), error=TypeError)
    if not math.isfinite(value):
        fail(fn, name, "a finite number", repr(value))
    return float(value)


def _integer(value: Any, name: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        fail(fn, name, "an int", repr(value), error=TypeError)
    return int(value)


def _check_param(kind: str, value: Any, name: str, fn: str) -> Any:
    if kind in ("range", "positive_range", "int_range"):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
            fail(fn, name, "a (low, high) pair", repr(value), error=TypeError)
        conv = _integer if kind == "int_range" else _number
        lo, hi = conv(value[0], name, fn), conv(value[1], name, fn)
        if lo > hi or (kind == "positive_range" and lo <= 0) or (kind == "int_range" and lo < 1):
            want = {"range": "low <= high", "positive_range": "0 < low <= high",
                    "int_range": "1 <= low <= high"}[kind]
            fail(fn, name, f"a (low, high) pair with {want}", repr(tuple(value)))
        return (lo, hi)
    if kind == "nonnegative":
        v = _number(value, name, fn)
        if v < 0:
            fail(fn, name, "a number >= 0", repr(value))
        return v
    v = _integer(value, name, fn)
    ok = {"size": 28 <= v <= 1024, "count": 0 <= v <= 1000, "crop": 1 <= v <= _DIGIT,
          "square": v >= 4 and math.isqrt(v) ** 2 == v}[kind]
    if not ok:
        want = {"size": "an int in [28, 1024]", "count": "an int in [0, 1000]",
                "crop": f"an int in [1, {_DIGIT}]", "square": "a perfect square >= 4"}[kind]
        fail(fn, name, want, repr(value))
    return v


def resolve_params(variant: str, params: Mapping[str, Any] | None = None, *,
                   fn: str = "resolve_params") -> dict[str, Any]:
    """The variant's default parameters updated by ``params``, checked.

    Ranges come back as tuples, numbers as float or int. Unknown names raise ValueError.
    """
    check_choice(variant, tuple(VARIANTS), name="variant", fn=fn)
    spec = VARIANTS[variant]
    out = dict(spec.defaults)
    if params is None:
        return out
    if not isinstance(params, Mapping):
        fail(fn, "params", "a mapping of parameter names to values", type(params).__name__,
             error=TypeError)
    for name, value in params.items():
        if name not in spec.defaults:
            fail(fn, "params", f"names among {', '.join(spec.defaults)} for variant "
                 f"{variant!r}", repr(name))
        out[name] = _check_param(_KINDS[name], value, f"params[{name!r}]", fn)
    if variant == "colocalisation":
        cells = (out["size"] // _DIGIT) ** 2
        if out["instances"][1] > cells:
            fail(fn, "params['instances']", f"at most {cells} instances in a {out['size']}"
                 f"x{out['size']} canvas", repr(out["instances"]))
    return out


# --------------------------------------------------------------------------- helpers


def sample_rng(seed: int, variant: str, split: str, index: int, epoch: int = 0,
               ) -> np.random.Generator:
    """The generator sample ``index`` draws all its randomness from (in ``epoch`` of fresh
    distortions; epoch 0 is the fixed dataset)."""
    key = [seed, zlib.crc32(variant.encode()), _SPLIT_IDS[split], int(index)]
    if epoch:
        key.append(int(epoch))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


def ink_boxes(images: np.ndarray) -> np.ndarray:
    """(k0, r0, k1, r1): first/last nonzero column and row of each (B, 28, 28) image.

    A blank image gets the whole frame (0, 0, 27, 27). Returns int64 (B, 4).
    """
    ink = images > 0
    cols, rows = ink.any(axis=1), ink.any(axis=2)  # (B, W), (B, H)
    blank = ~cols.any(axis=1)
    n = images.shape[-1]
    k0 = np.where(blank, 0, cols.argmax(axis=1))
    k1 = np.where(blank, n - 1, n - 1 - cols[:, ::-1].argmax(axis=1))
    r0 = np.where(blank, 0, rows.argmax(axis=1))
    r1 = np.where(blank, n - 1, n - 1 - rows[:, ::-1].argmax(axis=1))
    return np.stack([k0, r0, k1, r1], axis=1).astype(np.int64)


def _uniform(u: np.ndarray, lo_hi: tuple[float, float]) -> np.ndarray:
    return lo_hi[0] + u * (lo_hi[1] - lo_hi[0])


def _theta(matrix: np.ndarray, out_size: int) -> np.ndarray:
    """Normalised theta (float32) of forward pixel matrices (B, 2, 3) or (B, 3, 3)."""
    m = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float64))
    theta = transforms.from_pixel(m, (_DIGIT, _DIGIT), (out_size, out_size),
                                  align_corners=False)
    return theta.to(torch.float32).numpy()


def warp_backend() -> str:
    """The backend ``warp(backend="auto")`` runs here for the generators' warps of float32 CPU
    images (:func:`stnkit.ops.warp.auto_backend`): ``"cpp"`` where its kernels are built,
    else ``"torch"``. They agree to float rounding, so
    caches record which one ran."""
    return auto_backend(torch.zeros(1, 1, 2, 2), torch.eye(2, 3)[None])


def _warp(digits: np.ndarray, theta: np.ndarray, transform: str, size: int) -> np.ndarray:
    """Warp uint8 (B, 28, 28) digits by float32 theta; uint8 (B, size, size)."""
    if len(digits) == 0:
        return np.zeros((0, size, size), np.uint8)
    x = torch.from_numpy(digits.astype(np.float32) / 255)[:, None]  # (B, 1, 28, 28)
    with torch.no_grad():
        y = warp(x, torch.from_numpy(theta), transform=transform, size=(size, size),
                 mode="bilinear", padding_mode="zeros", align_corners=False, backend="auto")
    y = torch.round(y[:, 0].clamp(0, 1) * 255)  # (B, size, size)
    return y.to(torch.uint8).numpy()


def _linear(angle: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(B, 2, 2) forward pixel map: scale, then rotate the content by ``angle`` degrees
    counter-clockwise as displayed (y down), like ``cv2.getRotationMatrix2D``."""
    a = np.deg2rad(angle)
    cs, sn = scale * np.cos(a), scale * np.sin(a)
    return np.stack([np.stack([cs, sn], -1), np.stack([-sn, cs], -1)], -2)


def _place_similarity(ink: np.ndarray, angle: np.ndarray, scale: np.ndarray, u: np.ndarray,
                      size: int, margin: float) -> dict[str, np.ndarray]:
    """Rotate/scale digits about their centre and place them inside the canvas.

    Args:
        ink: (B, 4) ink boxes; angle (B,) degrees; scale (B,); u (B, 2) uniform draws.
    Returns:
        center (B, 2), matrix (B, 2, 3) forward pixel matrices, box (B, 4) bounds of the
        bilinear support of the ink in the canvas.
    """
    lin = _linear(angle, scale)  # (B, 2, 2)
    # bilinear support of the ink: (k0 - 1, k1 + 1) x (r0 - 1, r1 + 1), relative to the centre
    xs = np.stack([ink[:, 0] - 1, ink[:, 2] + 1], -1) - _DIGIT_CENTRE  # (B, 2)
    ys = np.stack([ink[:, 1] - 1, ink[:, 3] + 1], -1) - _DIGIT_CENTRE
    corners = np.stack([np.stack([xs[:, i], ys[:, j]], -1)
                        for i in (0, 1) for j in (0, 1)], 1)  # (B, 4, 2)
    rel = np.einsum("bij,bkj->bki", lin, corners)  # (B, 4, 2)
    rel_min, rel_max = rel.min(1), rel.max(1)  # (B, 2)
    lo = -0.5 + margin - rel_min
    hi = size - 0.5 - margin - rel_max
    center = np.where(lo <= hi, lo + u * (hi - lo), (lo + hi) / 2)  # (B, 2)
    shift = center - np.einsum("bij,j->bi", lin, np.full(2, _DIGIT_CENTRE))
    matrix = np.concatenate([lin, shift[:, :, None]], -1)  # (B, 2, 3)
    box = np.concatenate([center + rel_min, center + rel_max], -1)  # (B, 4)
    return {"center": center, "matrix": matrix, "box": box}


def _place_integer(ink: np.ndarray, u: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Whole-pixel offsets (B, 2) of the digit frame that keep the ink box inside.

    The ink box (k0 - 0.5, r0 - 0.5, k1 + 0.5, r1 + 0.5) + offset must lie within
    [-0.5 + margin, size - 0.5 - margin]; u (B, 2) uniform draws pick among the valid ones.
    """
    lo = np.ceil(margin - ink[:, :2]).astype(np.int64)  # (B, 2)
    hi = np.floor(size - margin - 1 - ink[:, 2:]).astype(np.int64)
    span = np.maximum(hi - lo + 1, 1)
    off = lo + np.minimum(np.floor(u * span).astype(np.int64), span - 1)
    return np.where(hi >= lo, off, (lo + hi) // 2)


def _ink_box_at(ink: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Exact ink boxes (x0, y0, x1, y1) of digits copied at whole-pixel ``offset`` (B, 2)."""
    return np.concatenate([ink[:, :2] - 0.5 + offset, ink[:, 2:] + 0.5 + offset], -1)


def _paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """canvas = max(canvas, patch) with patch's top-left at (x, y), clipped to the canvas."""
    h, w = patch.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x0 < x1 and y0 < y1:
        region = canvas[y0:y1, x0:x1]
        np.maximum(region, patch[y0 - y:y1 - y, x0 - x:x1 - x], out=region)


def _other_index(rng: np.random.Generator, n: int, exclude: int) -> int:
    """Uniform index in [0, n) other than ``exclude`` (``exclude`` itself if n == 1)."""
    if n == 1:
        return exclude
    j = int(rng.integers(n - 1))
    return j + (j >= exclude)


def _clutter(rngs, images: np.ndarray, ink_all: np.ndarray, canvases: np.ndarray,
             count: int, crop: int, avoid: list[set[int]]) -> dict[str, np.ndarray]:
    """Paste ``count`` crop x crop pieces of other digits into each canvas (in place)."""
    b, size = len(canvases), canvases.shape[-1]
    source = np.zeros((b, count), np.int64)
    crop_xy = np.zeros((b, count, 2), np.int64)
    position = np.zeros((b, count, 2), np.int64)
    n = len(images)
    for s, rng in enumerate(rngs):
        js = rng.integers(n, size=count)
        for c in range(count):  # other digits than the sample's own
            for _ in range(100):
                if int(js[c]) not in avoid[s] or len(avoid[s]) >= n:
                    break
                js[c] = rng.integers(n)
        u = rng.random((count, 4))
        ink = ink_all[js]  # (count, 4)
        cx = ink[:, 0] + u[:, 0] * (ink[:, 2] - ink[:, 0] + 1)  # crop centre in the ink box
        cy = ink[:, 1] + u[:, 1] * (ink[:, 3] - ink[:, 1] + 1)
        xy = np.clip(np.floor(np.stack([cx, cy], 1)) - crop // 2, 0, _DIGIT - crop)
        pos = np.floor(u[:, 2:] * (size - crop + 1))
        source[s], crop_xy[s], position[s] = js, xy, pos
        for j, (x, y), (px, py) in zip(js, crop_xy[s], position[s]):
            _paste(canvases[s], images[j, y:y + crop, x:x + crop], int(px), int(py))
    return {"clutter_source": source, "clutter_crop": crop_xy, "clutter_position": position}


# --------------------------------------------------------------------------- generators


def _gen_r(ctx, rngs, idx, p):
    b, size = len(idx), p["size"]
    angle = _uniform(np.array([r.random() for r in rngs]), p["angle"])
    centre = np.full((b, 2), (size - 1) / 2)  # the digit's centre goes to the canvas centre
    matrix = np.concatenate([_linear(angle, np.ones(b)), centre[:, :, None]], -1)
    matrix[:, :, 2] -= matrix[:, :, :2] @ np.full(2, _DIGIT_CENTRE)
    theta = _theta(matrix, size)
    return _warp(ctx.images[idx], theta, "affine", size)[:, None], {
        "angle": angle, "theta": theta, "matrix": matrix}


def _rts(ctx, rngs, idx, p):
    draws = np.array([r.random(4) for r in rngs]).reshape(-1, 4)  # angle, scale, x, y
    angle = _uniform(draws[:, 0], p["angle"])
    scale = _uniform(draws[:, 1], p["scale"])
    place = _place_similarity(ctx.ink[idx], angle, scale, draws[:, 2:], p["size"], p["margin"])
    theta = _theta(place["matrix"], p["size"])
    images = _warp(ctx.images[idx], theta, "affine", p["size"])
    return images, {"angle": angle, "scale": scale, "theta": theta, **place}


def _gen_rts(ctx, rngs, idx, p):
    images, params = _rts(ctx, rngs, idx, p)
    return images[:, None], params


def _gen_p(ctx, rngs, idx, p):
    b, size = len(idx), p["size"]
    frame = np.array([[-0.5, -0.5], [_DIGIT - 0.5, -0.5], [_DIGIT - 0.5, _DIGIT - 0.5],
                      [-0.5, _DIGIT - 0.5]])  # (4, 2) corners of the digit frame
    centre = (size - 1) / 2
    scale = np.zeros(b)
    offsets = np.zeros((b, 4, 2))
    for s, r in enumerate(rngs):
        scale[s] = _uniform(r.random(), p["scale"])
        for _ in range(100):  # redraw folded corners (a fold is no camera view of a plane)
            offsets[s] = r.normal(0.0, p["corner_sigma"], (4, 2))
            if _convex(centre + scale[s] * (frame - _DIGIT_CENTRE) + offsets[s]):
                break
        else:
            offsets[s] = 0.0
    dst = centre + scale[:, None, None] * (frame - _DIGIT_CENTRE) + offsets  # (B, 4, 2)
    matrix = _homographies(frame, dst)
    theta = _theta(matrix, size)
    return _warp(ctx.images[idx], theta, "projective", size)[:, None], {
        "scale": scale, "corner_offsets": offsets, "corners": dst, "theta": theta,
        "matrix": matrix}


def _convex(quad: np.ndarray) -> bool:
    """Whether corners (4, 2), in the frame's order, form a convex quadrilateral turning the
    same way as the frame (clockwise as displayed)."""
    edges = np.roll(quad, -1, axis=0) - quad  # (4, 2)
    following = np.roll(edges, -1, axis=0)
    turns = edges[:, 0] * following[:, 1] - edges[:, 1] * following[:, 0]  # z of the cross
    return bool((turns > 0).all())


def _homographies(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(B, 3, 3) homographies H (H[2, 2] = 1) with H src_k ~ dst_k; src (4, 2), dst (B, 4, 2)."""
    b = len(dst)
    a = np.zeros((b, 8, 8))
    for k in range(4):
        x, y = src[k]
        u, v = dst[:, k, 0], dst[:, k, 1]
        a[:, 2 * k, 0:3] = (x, y, 1)
        a[:, 2 * k, 6], a[:, 2 * k, 7] = -u * x, -u * y
        a[:, 2 * k + 1, 3:6] = (x, y, 1)
        a[:, 2 * k + 1, 6], a[:, 2 * k + 1, 7] = -v * x, -v * y
    rhs = dst.reshape(b, 8)  # u0, v0, u1, v1, ...
    h = np.linalg.solve(a, rhs[..., None])[..., 0] if b else np.zeros((0, 8))
    return np.concatenate([h, np.ones((b, 1))], 1).reshape(b, 3, 3)


def _gen_e(ctx, rngs, idx, p):
    b, size, k = len(idx), p["size"], p["control_points"]
    scale = _uniform(np.array([r.random() for r in rngs]), p["scale"])
    offsets = np.array([r.normal(0.0, p["control_sigma"], (k, 2)) for r in rngs]).reshape(b, k, 2)
    lattice = tps_lattice(k, dtype=torch.float64).numpy()  # (K, 2), output positions
    # output lattice point q samples the input at q * (size / 28) / scale + offset (normalised)
    src = lattice[None] * (size / _DIGIT) / scale[:, None, None] + offsets * (2 / _DIGIT)
    src_points = src.astype(np.float32)  # (B, K, 2)
    return _warp(ctx.images[idx], src_points, "tps", size)[:, None], {
        "scale": scale, "offsets": offsets, "src_points": src_points}


def _translate(ctx, rngs, idx, p):
    u = np.array([r.random(2) for r in rngs]).reshape(-1, 2)
    ink = ctx.ink[idx]
    offset = _place_integer(ink, u, p["size"], p["margin"])
    matrix = np.zeros((len(idx), 2, 3))
    matrix[:, 0, 0] = matrix[:, 1, 1] = 1
    matrix[:, :, 2] = offset
    theta = _theta(matrix, p["size"])
    images = _warp(ctx.images[idx], theta, "affine", p["size"])
    return images, {"offset": offset, "theta": theta, "matrix": matrix,
                    "box": _ink_box_at(ink, offset)}


def _gen_t(ctx, rngs, idx, p):
    images, params = _translate(ctx, rngs, idx, p)
    return images[:, None], params


def _gen_tc(ctx, rngs, idx, p):
    images, params = _translate(ctx, rngs, idx, p)
    params.update(_clutter(rngs, ctx.images, ctx.ink, images, p["clutter"], p["clutter_size"],
                           [{int(i)} for i in idx]))
    return images[:, None], params


def _gen_addition(ctx, rngs, idx, p):
    n = len(ctx.images)
    partner = np.array([_other_index(r, n, int(i)) for r, i in zip(rngs, idx)], np.int64)
    both = np.stack([idx, partner], 1).reshape(-1)  # (2B,): i0, j0, i1, j1, ...
    rngs2 = [r for r in rngs for _ in (0, 1)]  # each sample draws its two digits in turn
    images, params = _rts(ctx, rngs2, both, p)
    b = len(idx)
    params = {k: v.reshape(b, 2, *v.shape[1:]) for k, v in params.items()}
    params["partner"] = partner
    images = images.reshape(b, 2, p["size"], p["size"])
    return images, params, ctx.labels[idx] + ctx.labels[partner]


def _gen_colocalisation(ctx, rngs, idx, p):
    b, size = len(idx), p["size"]
    kmax = p["instances"][1]
    count = np.zeros(b, np.int64)
    sources = np.full((b, kmax), -1, np.int64)
    offsets = np.full((b, kmax, 2), -1, np.int64)
    boxes = np.full((b, kmax, 4), np.nan)
    canvases = np.zeros((b, size, size), np.uint8)
    for s, (rng, i) in enumerate(zip(rngs, idx)):
        i = int(i)
        k = int(rng.integers(p["instances"][0], p["instances"][1] + 1))
        pool = ctx.by_class[int(ctx.labels[i])]  # sorted indices of that class
        others = pool[pool != i]
        take = min(k - 1, len(others))
        chosen = [i] + [int(j) for j in rng.choice(others, take, replace=False)]
        ink = ctx.ink[chosen]
        off = _place_apart(rng, ink, size, p["margin"])
        count[s] = len(chosen)
        sources[s, :len(chosen)] = chosen
        offsets[s, :len(chosen)] = off
        boxes[s, :len(chosen)] = _ink_box_at(ink, off)
        for j, (x, y) in zip(chosen, off):
            _paste(canvases[s], ctx.images[j], int(x), int(y))
    avoid = [set(int(j) for j in row if j >= 0) for row in sources]
    params = {"count": count, "sources": sources, "offsets": offsets, "boxes": boxes}
    params.update(_clutter(rngs, ctx.images, ctx.ink, canvases, p["clutter"], p["clutter_size"],
                           avoid))
    return canvases[:, None], params


def _place_apart(rng: np.random.Generator, ink: np.ndarray, size: int,
                 margin: float) -> np.ndarray:
    """Whole-pixel offsets (k, 2) putting k digits inside with ink boxes >= 1 px apart.

    Digits are placed one after the other, each at a uniform random position that keeps it
    apart from those already placed (up to 100 tries, else the layout restarts; 20 layouts).
    The fallback puts the digits in distinct cells of a (size // 28)^2 grid, each inside
    its cell with the margin, which always works.
    """
    k = len(ink)

    def apart(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(a[2] + 1 <= b[0] or b[2] + 1 <= a[0] or a[3] + 1 <= b[1] or b[3] + 1 <= a[1])

    for _ in range(20):
        offsets: list[np.ndarray] = []
        boxes: list[np.ndarray] = []
        for d in range(k):
            for _ in range(100):
                off = _place_integer(ink[d:d + 1], rng.random((1, 2)), size, margin)[0]
                box = _ink_box_at(ink[d:d + 1], off[None])[0]
                if all(apart(box, other) for other in boxes):
                    offsets.append(off)
                    boxes.append(box)
                    break
            else:
                break
        if len(offsets) == k:
            return np.stack(offsets)
    n = size // _DIGIT
    cells = rng.choice(n * n, k, replace=False)
    origin = np.stack([cells % n, cells // n], 1) * _DIGIT + (size - n * _DIGIT) // 2
    return origin + _place_integer(ink, rng.random((k, 2)), _DIGIT, max(margin, 1.0))


_GENERATORS = {"R": _gen_r, "RTS": _gen_rts, "P": _gen_p, "E": _gen_e, "T": _gen_t,
               "TC": _gen_tc, "addition": _gen_addition, "colocalisation": _gen_colocalisation}


class _Source:
    """A split of MNIST with what the generators look up: ink boxes, indices by class."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ink = ink_boxes(self.images)
        self.by_class = {c: np.flatnonzero(self.labels == c) for c in range(10)}


def distort(variant: str, images: Any, labels: Any, indices: Any, *, seed: int = 0,
            split: str = "train", params: Mapping[str, Any] | None = None, epoch: int = 0,
            _source: _Source | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Generate samples ``indices`` of a distorted-MNIST variant.

    Args:
        variant: a key of :data:`VARIANTS`.
        images, labels: the source split, uint8 (N, 28, 28) and int (N,) (numpy or torch);
            partners and clutter are drawn from it.
        indices: (B,) sample indices in [0, N); sample i distorts digit i.
        seed, split: select the random stream (per sample, see the module docstring).
        params: overrides of the variant's parameters (see :func:`resolve_params`).
        epoch: 0 (the default) gives the fixed dataset's samples; epoch e >= 1 draws every
            sample's distortion (and partners, clutter) afresh, from its own stream
            ``(seed, variant, split, index, e)``: fresh distortions for training.
    Returns:
        images uint8 (B, C, S, S), labels int64 (B,), and the recorded transforms: a dict of
        arrays whose first dimension is B.
    """
    fn = "distort"
    p = resolve_params(variant, params, fn=fn)
    seed = check_seed(seed, fn=fn)
    check_choice(split, tuple(_SPLIT_IDS), name="split", fn=fn)
    if _source is None:
        images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (_DIGIT, _DIGIT):
            fail(fn, "images", "a uint8 array of shape (N, 28, 28)",
                 f"{images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            fail(fn, "labels", f"of shape ({len(images)},)", labels.shape)
        _source = _Source(images, labels)
    epoch = check_seed(epoch, fn=fn, name="epoch")
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        fail(fn, "indices", "a 1-D sequence of ints", f"{idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    n = len(_source.images)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        fail(fn, "indices", f"in [0, {n})", f"values in [{idx.min()}, {idx.max()}]")
    rngs = [sample_rng(seed, variant, split, i, epoch) for i in idx]
    out = _GENERATORS[variant](_source, rngs, idx, p)
    labels_out = out[2] if len(out) == 3 else _source.labels[idx]
    return out[0], labels_out.astype(np.int64), out[1]
