"""Image files: read PNG/JPEG (grey or colour) to float tensors, write them back atomically.

A read image is a float32 tensor (C, H, W) in [0, 1] whose channel count says what it is:
C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA. Writing maps the channel count back, so grey stays
grey and colour stays colour (JPEG, which has no alpha channel, drops it). Every file is
written to a temporary name in the target directory and renamed into place, so a failure
never leaves a partial file. Pillow is imported only when a function runs (``viz`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stnkit._checks import StnkitFileError, check_shape, fail
from stnkit._io import atomic_path
from stnkit.viz._deps import require

__all__ = [
    "FORMATS",
    "ImageReadError",
    "image_format",
    "read_image",
    "save_gif",
    "save_png",
    "to_uint8",
    "write_image",
]

# Output file suffix -> Pillow format name.
FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
_NO_ALPHA = {"JPEG", "BMP"}
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def image_format(path: str | os.PathLike, *, fn: str = "image_format") -> str:
    """The Pillow format written for ``path``, from its suffix (``.png`` -> ``"PNG"``).

    Raises ValueError for a suffix we do not write.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(sorted({s for s in FORMATS}))
        fail(fn, "path", f"to end in one of {known}", repr(str(path)))
    return FORMATS[suffix]


class ImageReadError(StnkitFileError, ValueError):
    """An image file that cannot be read; ``reason`` says why in a few words.

    A :class:`stnkit.StnkitError` (file problem, an OSError); also a ValueError, as it was.
    """

    def __init__(self, fn: str, what: str, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{fn}: expected path {what}, got {self.path!r} ({reason})")


def read_image(path: str | os.PathLike) -> Tensor:
    """Read an image file (PNG, JPEG or anything else Pillow opens) as a float tensor.

    Returns:
        float32 (C, H, W) in [0, 1]: C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA. 16-bit grey is
        scaled by 1/65535, 8-bit by 1/255. The EXIF orientation is applied (the image comes
        out as viewers show it); of an animation, the first frame is read.
    """
    fn = "read_image"
    Image = require("PIL.Image")
    ImageOps = require("PIL.ImageOps")
    p = Path(path)
    what = "an existing, readable image file (PNG, JPEG, ...)"
    if not p.is_file():
        raise ImageReadError(fn, what, path, "a directory" if p.is_dir() else "no such file")
    try:
        with Image.open(p) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except Image.UnidentifiedImageError:
        raise ImageReadError(fn, what, path, "not an image format Pillow reads") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(fn, what, path, f"too large: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data, permissions
        raise ImageReadError(fn, what, path, getattr(e, "strerror", None) or str(e)) from None
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(img, dtype=np.float64) / 65535.0  # (H, W)
    elif mode == "F":
        array = np.asarray(img, dtype=np.float64)
    else:
        if mode in ("1", "L"):
            img = img.convert("L")
        elif mode in ("LA", "La"):
            img = img.convert("LA")
        elif mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
        else:  # RGB, P, CMYK, YCbCr, LAB, HSV, ...
            img = img.convert("RGB")
        array = np.asarray(img, dtype=np.float64) / 255.0  # (H, W) or (H, W, C)
    if array.ndim == 2:
        array = array[:, :, None]
    array = np.clip(np.nan_to_num(array), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()  # (C, H, W)


def to_uint8(image: Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] (values outside are clipped) -> uint8 (H, W, C), rounded."""
    x = image.detach().to("cpu", torch.float64).nan_to_num(0.0).clamp(0.0, 1.0)
    return (x * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def write_image(path: str | os.PathLike, image: Tensor, *, quality: int = 95) -> Path:
    """Write ``image`` (C, H, W), float in [0, 1] or uint8, as an 8-bit file, atomically.

    The format follows the suffix of ``path`` (see :data:`FORMATS`); C = 1 grey, 2 grey + alpha,
    3 RGB, 4 RGBA. JPEG and BMP hold no alpha channel: it is dropped. ``quality`` is used for
    JPEG and WEBP. Returns ``path`` as a Path.
    """
    fn = "write_image"
    fmt = image_format(path, fn=fn)
    check_shape(image, (None, "H", "W"), name="image", fn=fn)
    if image.shape[0] not in _MODES:
        fail(fn, "image", "to have 1, 2, 3 or 4 channels", image.shape[0])
    if image.dtype == torch.uint8:
        array = image.permute(1, 2, 0).contiguous().cpu().numpy()
    elif image.is_floating_point():
        array = to_uint8(image)
    else:
        fail(fn, "image", "to be floating or uint8", image.dtype, error=TypeError)
    if fmt in _NO_ALPHA and array.shape[2] in (2, 4):
        array = array[:, :, :-1]
    return _save(path, array, fmt, quality=quality)


def save_png(path: str | os.PathLike, pixels: np.ndarray) -> Path:
    """Write uint8 pixels (H, W), (H, W, 3) or (H, W, 4) as a PNG, atomically."""
    fn = "save_png"
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        fail(fn, "pixels", "to be a uint8 numpy array", type(pixels).__name__, error=TypeError)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        fail(fn, "pixels", "of shape (H, W), (H, W, 3) or (H, W, 4)", pixels.shape)
    return _save(path, pixels, "PNG")


def save_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], *,
             duration_ms: int | Sequence[int] = 500, loop: int = 0) -> Path:
    """Write uint8 RGB frames, each (H, W, 3) of the same size, as an animated GIF, atomically.

    ``duration_ms``: display time of each frame (one int, or one per frame); ``loop=0``
    repeats forever.
    """
    fn = "save_gif"
    Image = require("PIL.Image")
    if len(frames) == 0:
        fail(fn, "frames", "at least one frame", 0)
    shape = frames[0].shape
    for f in frames:
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            fail(fn, "frames", "uint8 arrays of shape (H, W, 3)",
                 getattr(f, "shape", type(f).__name__))
        if f.shape != shape:
            fail(fn, "frames", f"all of shape {shape}", f.shape)
    images = [Image.fromarray(f, "RGB") for f in frames]
    # One shared palette (from all frames side by side) keeps colours steady across frames.
    strip = Image.fromarray(np.concatenate(frames, axis=0), "RGB")
    palette = strip.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    quantized = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]

    duration = duration_ms if isinstance(duration_ms, int) else list(duration_ms)

    def write(tmp: Path) -> None:
        quantized[0].save(tmp, format="GIF", save_all=True, append_images=quantized[1:],
                          duration=duration, loop=loop, optimize=False, disposal=1)

    return _write_atomic(path, write)


def _save(path: str | os.PathLike, array: np.ndarray, fmt: str, *, quality: int = 95) -> Path:
    """uint8 (H, W, C) -> file in ``fmt``, atomically."""
    Image = require("PIL.Image")
    if array.shape[2] == 1:
        array = array[:, :, 0]
    mode = _MODES[1 if array.ndim == 2 else array.shape[2]]
    img = Image.fromarray(np.ascontiguousarray(array), mode)
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    return _write_atomic(path, lambda tmp: img.save(tmp, format=fmt, **options))


def _write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)
