"""``stnkit data``: look at, download, pre-generate and inspect the MNIST datasets.

    stnkit data show VARIANT -o grid.png [--split test] [-n 64] [--seed 0]
                                         [--data-dir DIR|embedded] [--offline] [-q]
    stnkit data download [--data-dir DIR] [--split train test] [--mirror URL ...] [-q]
    stnkit data generate VARIANT... [--split ...] [--seed 0] [--data-dir DIR] [--workers N] [-q]
    stnkit data info [--data-dir DIR] [--verify]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from stnkit.cli import CommandError, add_quiet, wrote
from stnkit.cli.train import positive_int

HELP = "MNIST and the distorted-MNIST datasets: show a grid, download, generate, info"

_VARIANT_NAMES = ("R", "RTS", "P", "E", "T", "TC", "addition", "colocalisation")


def _count(text: str) -> int:
    n = positive_int(text)
    if n > 1024:
        raise argparse.ArgumentTypeError(f"expected an int in 1..1024, got {text!r}")
    return n


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
    show.add_argument("-o", "--out", "--output", dest="out", metavar="PNG", required=True,
                      help="output PNG file")
    show.add_argument("--split", choices=("train", "test"), default="test",
                      help="MNIST split (default: test)")
    show.add_argument("-n", "--num-samples", "--count", dest="count", type=_count, default=64,
                      metavar="N", help="number of samples, 1-1024 (default: 64)")
    show.add_argument("--cols", type=positive_int, default=None, metavar="N",
                      help="columns of the grid (default: ceil(sqrt(count)))")
    show.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    data_dir(show)
    show.add_argument("--offline", action="store_true", default=None,
                      help="never use the network (also: STNKIT_OFFLINE=1)")
    add_quiet(show)
    show.set_defaults(_parser=show)

    download = sub.add_parser("download", help="download and verify the MNIST files",
                              description="Download the MNIST files that are missing from "
                                          "the data directory, verified by checksum.")
    data_dir(download)
    download.add_argument("--split", nargs="+", choices=("train", "test"),
                          default=["train", "test"], help="splits (default: both)")
    download.add_argument("--mirror", action="append", metavar="URL", default=None,
                          help="base URL to try (repeatable; default: $STNKIT_MNIST_MIRRORS, "
                               "else the built-in list)")
    add_quiet(download, progress=True)
    download.set_defaults(_parser=download)

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
    generate.add_argument("--workers", type=positive_int, default=None, metavar="N",
                          help="generation threads (default: the available CPUs)")
    add_quiet(generate)
    generate.set_defaults(_parser=generate)

    info = sub.add_parser("info", help="where the data is, what is there, what is cached",
                          description="Show the data directory, the MNIST files, the embedded "
                                      "subset and the cached datasets.")
    data_dir(info)
    info.add_argument("--verify", action="store_true",
                      help="also read the MNIST files and check their checksums")
    info.set_defaults(_parser=info)


def run(args: argparse.Namespace) -> int:
    return {"show": _show, "download": _download, "generate": _generate,
            "info": _info}[args.data_command](args)


# --------------------------------------------------------------------------- show


def _show(args: argparse.Namespace) -> int:
    import numpy as np

    from stnkit.data import generate
    from stnkit.viz._deps import require
    from stnkit.viz.datasets import label_grid
    from stnkit.viz.images import save_png

    if not args.out.lower().endswith(".png"):
        raise CommandError(f"expected --out to be a .png file, got {args.out!r}")
    require("PIL.Image")  # before the data is generated
    images, labels, params = generate(args.variant, args.split, seed=args.seed,
                                      root=args.data_dir, offline=args.offline,
                                      indices=np.arange(args.count), progress=not args.quiet)
    pixels = label_grid(images, labels, params.get("boxes"), cols=args.cols,
                        title=f"{args.variant}, {args.split} split, seed {args.seed}: samples "
                              f"0-{args.count - 1}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png(out, pixels)
    wrote(args, out, f"{pixels.shape[1]}x{pixels.shape[0]}, {args.count} {args.variant} "
                     f"samples of the {args.split} split")
    return 0


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
