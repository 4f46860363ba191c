"""``stnkit warp``: warp an image file by a given transform (the spatial transformer's forward
pass, without a network).

Transforms are given in pixels (OpenCV's convention, so a pixel matrix gives the same picture
as ``cv2.warpAffine`` / ``cv2.warpPerspective``) or as our normalised theta, then converted to
theta with :func:`stnkit.ops.transforms.from_pixel` and applied with :func:`stnkit.ops.warp`.
"""

from __future__ import annotations

import argparse
import math
import re

import numpy as np
import torch

from stnkit.cli import CommandError

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
        [-1, 1], see README "Coordinate convention"); --align-corners sets its meaning.
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
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help="output file; its suffix picks the format (.png, .jpg, ...)")
    simple = parser.add_argument_group("simple transforms (pixel space, about the centre)")
    simple.add_argument("--rotate", metavar="DEG", help="rotate DEG degrees counter-clockwise")
    simple.add_argument("--scale", metavar="S", help="scale by S > 0 (2 doubles the size)")
    simple.add_argument("--translate", metavar=("TX", "TY"), nargs=2,
                        help="shift by TX pixels right and TY pixels down")
    simple.add_argument("--shear", metavar=("SX", "SY"), nargs=2,
                        help="shear: x' = x + SX*y, y' = y + SY*x (about the centre)")
    full = parser.add_argument_group("full transforms (instead of the simple ones)")
    full.add_argument("--theta", metavar="a,b,c,d,e,f",
                      help="normalised 2x3 theta mapping output to input coordinates")
    full.add_argument("--matrix", metavar="m00,...,m12",
                      help="2x3 pixel matrix, input to output (OpenCV warpAffine convention)")
    full.add_argument("--homography", metavar="h00,...,h22",
                      help="3x3 pixel homography, input to output (OpenCV warpPerspective)")
    out = parser.add_argument_group("output")
    out.add_argument("--size", metavar="HxW",
                     help="output size, e.g. 480x640 (default: the input's)")
    out.add_argument("--mode", choices=("bilinear", "nearest", "bicubic"), default="bilinear",
                     help="interpolation (default: bilinear)")
    out.add_argument("--padding", choices=("zeros", "border", "reflection"), default="zeros",
                     help="what is read outside the input (default: zeros)")
    out.add_argument("--align-corners", action="store_true",
                     help="-1 and 1 are the centres of the corner pixels (default: their outer "
                          "edges); changes the meaning of --theta and where reflection "
                          "padding mirrors (pixel centres, not edges)")
    out.add_argument("--quality", metavar="Q", type=int, default=95,
                     help="JPEG/WebP quality 1-100 (default: 95)")


def run(args: argparse.Namespace) -> int:
    from stnkit.viz._deps import require
    from stnkit.viz.images import ImageReadError, image_format, read_image, write_image

    try:
        require("PIL.Image")
    except ImportError as e:  # the viz extra is missing
        raise CommandError(str(e)) from None
    from stnkit.ops import transforms, warp

    try:
        image_format(args.output)
    except ValueError:
        raise CommandError(f"cannot write {args.output!r}: unknown image format; use a .png, "
                           ".jpg, .bmp, .tif or .webp name") from None
    if not 1 <= args.quality <= 100:
        raise CommandError(f"--quality: expected an int in 1..100, got {args.quality}")
    kind, matrix = _transform_from_args(args)
    size = _parse_size(args.size) if args.size else None
    try:
        image = read_image(args.image)  # (C, H, W)
    except ImageReadError as e:
        raise CommandError(f"cannot read image {args.image!r}: {e.reason}") from None
    C, H, W = image.shape
    size = size or (H, W)

    if kind == "theta":
        theta = matrix[None]  # (1, 2, 3)
        transform = "affine"
    else:
        if kind == "simple":
            matrix = _simple_matrix(args, (H, W), size)
        transform = "projective" if kind == "homography" else "affine"
        theta = transforms.from_pixel(matrix[None], (H, W), size,
                                      align_corners=args.align_corners)
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
    write_image(args.output, y, quality=args.quality)
    return 0


def _number(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"{flag}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise CommandError(f"{flag}: expected a finite number, got {text!r}")
    return value


def _numbers(text: str, count: int, flag: str) -> np.ndarray:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count:
        raise CommandError(f"{flag}: expected {count} comma-separated numbers, got {len(parts)} "
                           f"({text!r})")
    return np.array([_number(p, flag) for p in parts], dtype=np.float64)


def _parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if m is None:
        raise CommandError(f"--size: expected HxW with two positive ints (e.g. 480x640), "
                           f"got {text!r}")
    h, w = int(m.group(1)), int(m.group(2))
    if h <= 0 or w <= 0:
        raise CommandError(f"--size: expected a positive height and width, got {text!r}")
    if h * w > 1 << 28:
        raise CommandError(f"--size: expected at most 2**28 pixels, got {text!r}")
    return h, w


def _check_invertible(m: np.ndarray, flag: str) -> None:
    """m: (2, 3) affine or (3, 3) homography. Singular (or nearly) -> CommandError."""
    a = m[:2, :2] if m.shape == (2, 3) else m
    det = float(np.linalg.det(a))
    scale = float(np.abs(a).max()) ** a.shape[0]
    if not math.isfinite(det) or abs(det) <= 1e-12 * scale or scale == 0.0:
        raise CommandError(f"{flag}: expected an invertible matrix, got a singular one "
                           f"(determinant {det:.3g})")


def _transform_from_args(args: argparse.Namespace) -> tuple[str, torch.Tensor | None]:
    """Which kind of transform was asked for and, except for "simple", its matrix."""
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
        raise CommandError(f"expected one kind of transform, got {flags}: use the simple flags "
                           "(--rotate/--scale/--translate/--shear) or one of --theta, --matrix, "
                           "--homography")
    kind = kinds[0] if kinds else "simple"
    if kind == "simple":
        # Validate now, before reading the image; the matrix needs the sizes.
        _simple_parameters(args)
        return kind, None
    if kind == "homography":
        m = _numbers(args.homography, 9, "--homography").reshape(3, 3)
    else:
        m = _numbers(getattr(args, kind), 6, "--" + kind).reshape(2, 3)
    _check_invertible(m, "--" + kind)
    return kind, torch.from_numpy(m)


def _simple_parameters(args: argparse.Namespace) -> tuple[float, float, tuple, tuple]:
    """(degrees, scale, (tx, ty), (sx, sy)) of the simple flags, validated."""
    deg = _number(args.rotate, "--rotate") if args.rotate is not None else 0.0
    scale = _number(args.scale, "--scale") if args.scale is not None else 1.0
    if scale <= 0:
        raise CommandError(f"--scale: expected a positive number, got {args.scale!r}")
    t = tuple(_number(v, "--translate") for v in args.translate) if args.translate else (0.0, 0.0)
    sh = tuple(_number(v, "--shear") for v in args.shear) if args.shear else (0.0, 0.0)
    if abs(1.0 - sh[0] * sh[1]) <= 1e-12:
        raise CommandError(f"--shear: expected SX * SY != 1, got {args.shear[0]} {args.shear[1]} "
                           "(a singular matrix)")
    return deg, scale, t, sh


def simple_matrix(size_in: tuple[int, int], size_out: tuple[int, int], *, rotate: float = 0.0,
                  scale: float = 1.0, translate: tuple[float, float] = (0.0, 0.0),
                  shear: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The (2, 3) float64 pixel matrix (input to output, OpenCV convention) of the simple flags.

    ``M = T(c_out + translate) . R(rotate) . S(scale) . Sh(shear) . T(-c_in)`` with
    ``c = ((W - 1) / 2, (H - 1) / 2)``; ``rotate`` in degrees, counter-clockwise as displayed.
    """
    (h_in, w_in), (h_out, w_out) = size_in, size_out
    a = math.radians(rotate)
    cos, sin = math.cos(a), math.sin(a)
    rot = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])
    sca = np.diag([scale, scale, 1.0])
    she = np.array([[1.0, shear[0], 0.0], [shear[1], 1.0, 0.0], [0.0, 0.0, 1.0]])
    to_origin = np.array([[1.0, 0.0, -(w_in - 1) / 2], [0.0, 1.0, -(h_in - 1) / 2],
                          [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, (w_out - 1) / 2 + translate[0]],
                     [0.0, 1.0, (h_out - 1) / 2 + translate[1]], [0.0, 0.0, 1.0]])
    return (back @ rot @ sca @ she @ to_origin)[:2]


def _simple_matrix(args: argparse.Namespace, size_in: tuple[int, int],
                   size_out: tuple[int, int]) -> torch.Tensor:
    deg, scale, t, sh = _simple_parameters(args)
    m = simple_matrix(size_in, size_out, rotate=deg, scale=scale, translate=t, shear=sh)
    _check_invertible(m, "--rotate/--scale/--translate/--shear")
    return torch.from_numpy(m)


def _flip_to_front(theta: torch.Tensor) -> torch.Tensor:
    """A homography and its negative are the same map, but only points with homogeneous
    coordinate w > 0 are sampled: choose the sign that puts the output centre in front."""
    w_centre = theta[:, 2, 2]  # w at the normalised output centre (0, 0)
    return torch.where(w_centre[:, None, None] < 0, -theta, theta)
