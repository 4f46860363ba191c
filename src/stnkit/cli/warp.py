"""``stnkit warp``: warp an image file by a given transform (the spatial transformer's forward
pass, without a network).

Transforms are given in pixels (OpenCV's convention, so a pixel matrix gives the same picture
as ``cv2.warpAffine`` / ``cv2.warpPerspective``) or as our normalised theta. Everything but
reading the flags is the library's: the simple flags are
:func:`stnkit.ops.transforms.pixel_affine`, every matrix passes
:func:`~stnkit.ops.transforms.check_invertible`, pixel matrices become theta with
:func:`~stnkit.ops.transforms.from_pixel`, and :func:`stnkit.ops.warp` warps. An output whose
warp would need more than the machine's physical memory is refused before anything is
allocated.
"""

from __future__ import annotations

import argparse
import math
import os
import re

from stnkit.cli import CommandError, add_quiet, wrote

HELP = "warp an image file (PNG/JPEG, grey or colour) by a rotation, matrix or homography"

_EPILOG = """\
transforms (pick one kind; without any, the identity):
  --rotate/--scale/--shear/--translate  combined in pixel space about the image centre
        c = ((W-1)/2, (H-1)/2), in this order: first shear, then scale, then rotate, then
        translate; the input centre lands on the output centre. As a pixel matrix (source to
        destination, OpenCV convention):
            M = T(c_out + (TX, TY)) . R(DEG) . S(S) . Sh(SX, SY) . T(-c_in)
        with R(DEG) = [[cos, sin], [-sin, cos]] (counter-clockwise as displayed, exactly
        cv2.getRotationMatrix2D(c, DEG, S) when the sizes agree), Sh = [[1, SX], [SY, 1]]
        (x' = x + SX*y, y' = y + SY*x), TX to the right and TY down, in pixels.
  --matrix m00,m01,m02,m10,m11,m12   2x3 pixel matrix from input to output pixels, as passed to
        cv2.warpAffine (pixel centres at integer coordinates).
  --homography h00,...,h22           3x3 pixel homography from input to output pixels, as passed
        to cv2.warpPerspective; output points it sends behind the camera read as padding.
  --theta a,b,c,d,e,f                our normalised theta (output -> input, coordinates in
        [-1, 1], see docs/conventions.md); --align-corners sets its meaning.
  Values that begin with '-' need '=': --theta=-1,0,0,0,-1,0.

examples:
  stnkit warp digit.png -o rotated.png --rotate 30
  stnkit warp photo.jpg -o out.jpg --rotate -15 --scale 1.2 --translate 10 0 --size 480x640
  stnkit warp photo.jpg -o zoom.png --theta 0.5,0,0,0,0.5,0 --mode bicubic
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("image", metavar="IMAGE", help="input image file (PNG, JPEG, ...)")
    parser.add_argument("-o", "--out", "--output", dest="out", metavar="OUT", required=True,
                        help="output file; its suffix picks the format (.png, .jpg, ...)")
    simple = parser.add_argument_group("simple transforms (pixel space, about the centre)")
    simple.add_argument("--rotate", metavar="DEG", type=_finite,
                        help="rotate DEG degrees counter-clockwise")
    simple.add_argument("--scale", metavar="S", type=_positive,
                        help="scale by S > 0 (2 doubles the size)")
    simple.add_argument("--translate", metavar=("TX", "TY"), nargs=2, type=_finite,
                        help="shift by TX pixels right and TY pixels down")
    simple.add_argument("--shear", metavar=("SX", "SY"), nargs=2, type=_finite,
                        help="shear: x' = x + SX*y, y' = y + SY*x (about the centre)")
    full = parser.add_argument_group("full transforms (instead of the simple ones)")
    full.add_argument("--theta", metavar="a,b,c,d,e,f", type=_numbers(6),
                      help="normalised 2x3 theta mapping output to input coordinates")
    full.add_argument("--matrix", metavar="m00,...,m12", type=_numbers(6),
                      help="2x3 pixel matrix, input to output (OpenCV warpAffine convention)")
    full.add_argument("--homography", metavar="h00,...,h22", type=_numbers(9),
                      help="3x3 pixel homography, input to output (OpenCV warpPerspective)")
    out = parser.add_argument_group("output")
    out.add_argument("--size", metavar="HxW", type=_size,
                     help="output size, e.g. 480x640 (default: the input's)")
    out.add_argument("--mode", choices=("bilinear", "nearest", "bicubic"), default="bilinear",
                     help="interpolation (default: bilinear)")
    out.add_argument("--padding", choices=("zeros", "border", "reflection"), default="zeros",
                     help="what is read outside the input (default: zeros)")
    out.add_argument("--align-corners", action="store_true",
                     help="-1 and 1 are the centres of the corner pixels (default: their outer "
                          "edges); changes the meaning of --theta and where reflection "
                          "padding mirrors (pixel centres, not edges)")
    out.add_argument("--quality", metavar="Q", type=_quality, default=95,
                     help="JPEG/WebP quality 1-100 (default: 95)")
    add_quiet(out, progress=False)


def run(args: argparse.Namespace) -> int:
    from stnkit.viz._deps import require

    require("PIL.Image")  # the viz extra
    import torch

    from stnkit.ops import transforms, warp
    from stnkit.viz.images import FORMATS, ImageReadError, read_image, write_image

    if os.path.splitext(args.out)[1].lower() not in FORMATS:
        raise CommandError(f"cannot write {args.out!r}: unknown image format; use a .png, "
                           ".jpg, .bmp, .tif or .webp name")
    kind = _transform_kind(args)
    try:
        image = read_image(args.image)  # (C, H, W)
    except ImageReadError as e:
        raise CommandError(f"cannot read image {args.image!r}: {e.reason}") from None
    C, H, W = image.shape
    size = args.size or (H, W)
    _check_fits_in_memory(size, C)

    if kind == "simple":
        matrix = transforms.pixel_affine(
            (H, W), size, degrees=args.rotate or 0.0, scale=args.scale or 1.0,
            translate=tuple(args.translate or (0.0, 0.0)), shear=tuple(args.shear or (0.0, 0.0)),
            dtype=torch.float64)  # (1, 2, 3)
        flag = "--rotate/--scale/--translate/--shear"
    else:
        rows = 3 if kind == "homography" else 2
        matrix = torch.tensor(getattr(args, kind), dtype=torch.float64).reshape(1, rows, 3)
        flag = "--" + kind
    transforms.check_invertible(matrix, name=flag, fn="stnkit warp")
    if kind == "theta":
        theta, transform = matrix, "affine"
    else:
        transform = "projective" if kind == "homography" else "affine"
        theta = transforms.from_pixel(matrix, (H, W), size, align_corners=args.align_corners)
        if transform == "projective":
            theta = _flip_to_front(theta)
    theta = theta.to(torch.float32)

    x = image[None]  # (1, C, H, W)
    alpha = C in (2, 4)
    if alpha:  # warp premultiplied colour, so transparent pixels do not bleed dark fringes
        x = torch.cat([x[:, :-1] * x[:, -1:], x[:, -1:]], dim=1)
    y = warp(x, theta, transform=transform, size=size, mode=args.mode,
             padding_mode=args.padding, align_corners=args.align_corners)[0]  # (C, h, w)
    if alpha:
        a = y[-1:].clamp(0.0, 1.0)
        colour = torch.where(a > 1e-6, y[:-1] / a.clamp_min(1e-6), torch.zeros_like(y[:-1]))
        y = torch.cat([colour, a], dim=0)
    write_image(args.out, y, quality=args.quality)
    wrote(args, args.out, f"{size[0]}x{size[1]}, {_CHANNELS[C]}, {kind} transform")
    return 0


_CHANNELS = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}

# Bytes per output pixel while warping, beyond the input: the sampling grid (2 float32), the
# output (C float32), its float64 copy while rounding and the uint8 result (C + 8 C + C): an
# upper bound, 8 + 16 C.
_BYTES_PER_PIXEL = (8, 16)


def total_memory() -> int | None:
    """Physical memory of this machine in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits_in_memory(size: tuple[int, int], channels: int) -> None:
    """Refuse, in one line, an output whose warp needs more than the machine's memory."""
    need = size[0] * size[1] * (_BYTES_PER_PIXEL[0] + _BYTES_PER_PIXEL[1] * channels)
    have = total_memory()
    if have is not None and need > have:
        raise CommandError(f"--size: a {size[0]}x{size[1]} output of {channels} channel(s) "
                           f"needs about {need / 2**30:.3g} GiB of memory; this machine has "
                           f"{have / 2**30:.3g} GiB")


# Flag values are checked by argparse (exit 2 with the usage, as in every command).


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _numbers(count: int):
    def parse(text: str) -> list[float]:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != count:
            raise argparse.ArgumentTypeError(
                f"expected {count} comma-separated numbers, got {len(parts)} ({text!r})")
        return [_finite(p) for p in parts]

    parse.__name__ = f"{count} numbers"
    return parse


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected HxW with two positive ints (e.g. 480x640), "
                                         f"got {text!r}")
    h, w = int(m.group(1)), int(m.group(2))
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive height and width, got {text!r}")
    return h, w


def _quality(text: str) -> int:
    try:
        q = int(text)
    except ValueError:
        q = 0
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"expected an int in 1..100, got {text!r}")
    return q


def _transform_kind(args: argparse.Namespace) -> str:
    """Which kind of transform was asked for: "simple", "theta", "matrix" or "homography"."""
    given = {
        "simple": [f for f in ("rotate", "scale", "translate", "shear")
                   if getattr(args, f) is not None],
        "theta": ["theta"] if args.theta is not None else [],
        "matrix": ["matrix"] if args.matrix is not None else [],
        "homography": ["homography"] if args.homography is not None else [],
    }
    kinds = [k for k, flags in given.items() if flags]
    if len(kinds) > 1:
        flags = ", ".join("--" + f for k in kinds for f in given[k])
        args._parser.error(f"expected one kind of transform, got {flags}: use the simple flags "
                           "(--rotate/--scale/--translate/--shear) or one of --theta, --matrix, "
                           "--homography")
    return kinds[0] if kinds else "simple"


def _flip_to_front(theta):
    """A homography and its negative are the same map, but only points with homogeneous
    coordinate w > 0 are sampled: choose the sign that puts the output centre in front."""
    import torch

    w_centre = theta[:, 2, 2]  # w at the normalised output centre (0, 0)
    return torch.where(w_centre[:, None, None] < 0, -theta, theta)
