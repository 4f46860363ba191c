"""``stnkit data``: look at, download, pre-generate and inspect the MNIST datasets.

    stnkit data show VARIANT -o grid.png [--split test] [--count 64] [--seed 0]
                                         [--data-dir DIR|embedded] [--offline]
    stnkit data download [--data-dir DIR] [--split train test] [--mirror URL ...]
    stnkit data generate VARIANT... [--split ...] [--seed 0] [--data-dir DIR] [--workers N]
    stnkit data info [--data-dir DIR] [--verify]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

from stnkit.cli import CommandError

HELP = "MNIST and the distorted-MNIST datasets: show a grid, download, generate, info"

_VARIANT_NAMES = ("R", "RTS", "P", "E", "T", "TC", "addition", "colocalisation")

# grid layout of `data show`, in pixels
_PAD = 4  # around and between cells
_LABEL_H = 14  # text band under each cell
_TITLE_H = 18  # title band at the top
_CHANNEL_GAP = 2  # between the two channels of an `addition` sample
_TARGET_CELL = 112  # images are zoomed by ceil(_TARGET_CELL / S)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", metavar="DIR", default=None,
                       help="MNIST data directory, or 'embedded' for the subset shipped with "
                            "stnkit (default: $STNKIT_DATA, else the user cache directory)")

    show = sub.add_parser("show", help="save a PNG grid of samples with their labels",
                          description="Save a PNG grid of the first COUNT samples of a "
                                      "variant, each with its label.")
    show.add_argument("variant", metavar="VARIANT", choices=_VARIANT_NAMES,
                      help="one of " + ", ".join(_VARIANT_NAMES))
    show.add_argument("-o", "--output", metavar="PNG", required=True, help="output PNG file")
    show.add_argument("--split", choices=("train", "test"), default="test",
                      help="MNIST split (default: test)")
    show.add_argument("--count", type=int, default=64, metavar="N",
                      help="number of samples, 1-1024 (default: 64)")
    show.add_argument("--cols", type=int, default=None, metavar="N",
                      help="columns of the grid (default: ceil(sqrt(count)))")
    show.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    data_dir(show)
    show.add_argument("--offline", action="store_true", default=None,
                      help="never use the network (also: STNKIT_OFFLINE=1)")

    download = sub.add_parser("download", help="download and verify the MNIST files",
                              description="Download the MNIST files that are missing from "
                                          "the data directory, verified by checksum.")
    data_dir(download)
    download.add_argument("--split", nargs="+", choices=("train", "test"),
                          default=["train", "test"], help="splits (default: both)")
    download.add_argument("--mirror", action="append", metavar="URL", default=None,
                          help="base URL to try (repeatable; default: $STNKIT_MNIST_MIRRORS, "
                               "else the built-in list)")
    download.add_argument("--quiet", action="store_true", help="no progress bar")

    generate = sub.add_parser("generate", help="generate and cache distorted datasets",
                              description="Generate distorted datasets into the cache and "
                                          "report how long each took.")
    generate.add_argument("variants", metavar="VARIANT", nargs="+",
                          choices=(*_VARIANT_NAMES, "all"), help="variants, or 'all'")
    generate.add_argument("--split", nargs="+", choices=("train", "test"),
                          default=["train", "test"], help="splits (default: both)")
    generate.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    data_dir(generate)
    generate.add_argument("--offline", action="store_true", default=None,
                          help="never use the network (also: STNKIT_OFFLINE=1)")
    generate.add_argument("--workers", type=int, default=None, metavar="N",
                          help="generation threads (default: the available CPUs)")
    generate.add_argument("--quiet", action="store_true", help="no progress bars")

    info = sub.add_parser("info", help="where the data is, what is there, what is cached",
                          description="Show the data directory, the MNIST files, the embedded "
                                      "subset and the cached datasets.")
    data_dir(info)
    info.add_argument("--verify", action="store_true",
                      help="also read the MNIST files and check their checksums")


def run(args: argparse.Namespace) -> int:
    return {"show": _show, "download": _download, "generate": _generate,
            "info": _info}[args.data_command](args)


# --------------------------------------------------------------------------- show


def _show(args: argparse.Namespace) -> int:
    from stnkit.data import generate

    if not 1 <= args.count <= 1024:
        raise CommandError(f"--count must be in [1, 1024], got {args.count}")
    if args.cols is not None and args.cols < 1:
        raise CommandError(f"--cols must be >= 1, got {args.cols}")
    if not args.output.lower().endswith(".png"):
        raise CommandError(f"--output must be a .png file, got {args.output!r}")
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as e:
        raise CommandError("`stnkit data show` needs Pillow: pip install 'stnkit[viz]'") from e
    images, labels, params = generate(args.variant, args.split, seed=args.seed,
                                      root=args.data_dir, offline=args.offline,
                                      indices=np.arange(args.count), progress=True)
    picture = _grid(images, labels, params.get("boxes"), cols=args.cols,
                    title=f"{args.variant}, {args.split} split, seed {args.seed}: samples "
                          f"0-{args.count - 1}",
                    Image=Image, ImageDraw=ImageDraw, ImageFont=ImageFont)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    from stnkit._io import atomic_path

    with atomic_path(out) as tmp:
        picture.save(tmp, format="PNG")
    print(f"wrote {out} ({picture.width}x{picture.height}, {args.count} {args.variant} "
          f"samples of the {args.split} split)")
    return 0


def _grid(images: np.ndarray, labels: np.ndarray, boxes: np.ndarray | None, *, cols, title,
          Image, ImageDraw, ImageFont):  # noqa: N803 - PIL modules passed in
    """An RGB grid: title band, then cells of zoomed images with the label underneath
    (and the instance boxes, for colocalisation).

    Cell width = C * S * zoom + (C - 1) * 2, height = S * zoom, zoom = ceil(112 / S);
    the picture is cols * cell_w + (cols + 1) * 4 wide and
    18 + rows * (cell_h + 14) + (rows + 1) * 4 high.
    """
    n, c, s, _ = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    zoom = math.ceil(_TARGET_CELL / s)
    cell_w, cell_h = c * s * zoom + (c - 1) * _CHANNEL_GAP, s * zoom
    width = cols * cell_w + (cols + 1) * _PAD
    height = _TITLE_H + rows * (cell_h + _LABEL_H) + (rows + 1) * _PAD
    picture = Image.new("RGB", (width, height), (48, 48, 48))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    draw.text((_PAD, 3), title, fill=(255, 255, 255), font=font)
    for k in range(n):
        r, q = divmod(k, cols)
        x0 = _PAD + q * (cell_w + _PAD)
        y0 = _TITLE_H + _PAD + r * (cell_h + _LABEL_H + _PAD)
        for ch in range(c):
            tile = Image.fromarray(images[k, ch]).resize((s * zoom, s * zoom), Image.NEAREST)
            picture.paste(tile.convert("RGB"), (x0 + ch * (s * zoom + _CHANNEL_GAP), y0))
        if boxes is not None:
            for box in np.asarray(boxes[k]).reshape(-1, 4):
                if np.isfinite(box).all():  # box edges in pixel coordinates, centres at ints
                    bx0, by0, bx1, by1 = ((box + 0.5) * zoom).tolist()
                    draw.rectangle((x0 + bx0, y0 + by0, x0 + bx1 - 1, y0 + by1 - 1),
                                   outline=(255, 64, 64))
        draw.text((x0 + 2, y0 + cell_h + 1), f"label {int(labels[k])}", fill=(255, 220, 120),
                  font=font)
    return picture


# --------------------------------------------------------------------------- download


def _download(args: argparse.Namespace) -> int:
    from stnkit.data import EMBEDDED, download_mnist, load_mnist, resolve_root

    root = resolve_root(args.data_dir, fn="stnkit data download")
    if root == EMBEDDED:
        raise CommandError("the embedded subset ships with stnkit: nothing to download "
                           "(give --data-dir a directory)")
    target = download_mnist(root, splits=args.split, mirrors=args.mirror,
                            progress=not args.quiet)
    for split in args.split:
        images, _ = load_mnist(split, root=root, download=False)
        print(f"{split}: {len(images)} digits, verified, in {root}")
    print(f"MNIST files in {target if target.is_dir() else root}")
    return 0


# --------------------------------------------------------------------------- generate


def _generate(args: argparse.Namespace) -> int:
    from stnkit.data import DistortedMNIST

    variants = _VARIANT_NAMES if "all" in args.variants else tuple(dict.fromkeys(args.variants))
    if args.workers is not None and args.workers < 1:
        raise CommandError(f"--workers must be >= 1, got {args.workers}")
    for variant in variants:
        for split in args.split:
            start = time.perf_counter()
            ds = DistortedMNIST(variant, split, seed=args.seed, root=args.data_dir,
                                workers=args.workers, progress=not args.quiet,
                                offline=args.offline)
            took = time.perf_counter() - start
            how = (f"cached ({took:.1f} s to load)" if ds.from_cache else
                   f"generated in {ds.manifest['seconds']:.1f} s on "
                   f"{ds.manifest['workers']} thread(s), {took:.1f} s in all")
            print(f"{variant:>14} {split:5} {len(ds):6d} samples {ds.image_size}: {how}; "
                  f"{ds.cache_path or 'not cached'}")
    return 0


# --------------------------------------------------------------------------- info


def _info(args: argparse.Namespace) -> int:
    from stnkit.data import (
        DATA_ENV,
        EMBEDDED,
        FILES,
        OFFLINE_ENV,
        SPLITS,
        VARIANTS,
        cached_datasets,
        embedded_manifest,
        find_mnist_files,
        is_offline,
        load_mnist,
        mnist_mirrors,
        resolve_root,
    )

    root = resolve_root(args.data_dir, fn="stnkit data info")
    why = ("--data-dir" if args.data_dir is not None else
           f"${DATA_ENV}" if os.environ.get(DATA_ENV, "").strip() else "default: user cache")
    print(f"data directory: {root} ({why})")
    print(f"offline: {'yes' if is_offline() else 'no'} (${OFFLINE_ENV})")
    print("mirrors: " + ", ".join(mnist_mirrors()))
    files = embedded_manifest()["files"]
    print("embedded subset: " + ", ".join(
        f"{files[FILES[s][0] + '.gz']['count']} {s}" for s in SPLITS) + " digits")
    if root != EMBEDDED:
        print("MNIST files:")
        for split in SPLITS:
            for name, path in find_mnist_files(split, root).items():
                print(f"  {name}: {path if path is not None else 'missing'}")
            if args.verify and None not in find_mnist_files(split, root).values():
                images, _ = load_mnist(split, root=root, download=False)
                print(f"  {split}: {len(images)} digits, checksums verified")
    entries = cached_datasets(args.data_dir)
    print(f"cached datasets: {len(entries)}")
    for e in entries:
        key = e.get("key", {})
        print(f"  {key.get('variant', '?'):>14} {key.get('split', '?'):5} seed "
              f"{key.get('seed', '?')}: {e.get('count', '?')} samples, "
              f"{e['bytes'] / 1e6:.1f} MB, {e['path']}")
    print("variants:")
    for name, spec in VARIANTS.items():
        print(f"  {name:>14}: {spec.description}")
    return 0
