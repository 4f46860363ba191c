"""Make the MNIST subset shipped inside stnkit (``src/stnkit/data/_embedded``).

Run once, from the repository root, with the real MNIST files at hand:

    python scripts/make_embedded_mnist.py --source ../shared/data/mnist

It takes the first ``--train`` training and first ``--test`` test digits (so embedded sample
i is MNIST sample i), writes them as gzipped IDX files (gzip mtime 0 and level 9, so the
bytes are reproducible) and a ``MANIFEST.json`` with the md5 of every file's decompressed
content, which :func:`stnkit.data.load_mnist` verifies on each load. The source files are
verified against the canonical MNIST checksums first. Files are written atomically.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from stnkit._io import atomic_write_bytes
from stnkit.data.mnist import FILES, MD5, load_mnist

OUT = Path(__file__).resolve().parent.parent / "src" / "stnkit" / "data" / "_embedded"


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array (magic 0x000008DD, then big-endian uint32 sizes)."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="directory with the real MNIST files")
    parser.add_argument("--train", type=int, default=6000, help="first N training digits")
    parser.add_argument("--test", type=int, default=2000, help="first N test digits")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output dir (default {OUT})")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, count in (("train", args.train), ("test", args.test)):
        images, labels = load_mnist(split, root=args.source, download=False)
        if not 0 < count <= len(images):
            parser.error(f"--{split} must be in [1, {len(images)}], got {count}")
        for name, array in zip(FILES[split], (images[:count].numpy(), labels[:count].numpy())):
            raw = idx_bytes(array.astype(np.uint8))
            packed = gzip.compress(raw, compresslevel=9, mtime=0)
            atomic_write_bytes(args.out / (name + ".gz"), packed)
            files[name + ".gz"] = {"md5": hashlib.md5(raw).hexdigest(), "count": count,
                                   "source_md5": MD5[name]}
        print(f"{split}: first {count} digits, classes "
              f"{np.bincount(labels[:count].numpy(), minlength=10).tolist()}")
    manifest = {
        "format": 1,
        "description": "first N training and first N test digits of MNIST (LeCun, Cortes, "
                       "Burges; CC BY-SA 3.0), gzipped IDX; md5 of the decompressed content",
        "made_by": "scripts/make_embedded_mnist.py",
        "files": files,
    }
    atomic_write_bytes(args.out / "MANIFEST.json", (json.dumps(manifest, indent=2) + "\n").encode())
    total = sum((args.out / n).stat().st_size for n in files) / 1e6
    print(f"wrote {len(files)} files ({total:.2f} MB) and MANIFEST.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
