"""MNIST: the IDX reader, checksums, the downloader and the embedded subset.

The four IDX files (raw or gzipped) are read from a data directory (see
:mod:`stnkit.data.paths`) and the md5 of their *decompressed* content is checked against
the canonical values, so any gzip wrapper works. Missing files are downloaded from
:data:`MIRRORS` (tried in order; ``STNKIT_MNIST_MIRRORS`` or ``mirrors=`` override it)
unless offline mode is on (``offline=True`` or ``STNKIT_OFFLINE=1``), in which case the
network is never touched. A download goes to a temporary file in the target directory, is
verified, and only then renamed into place: a corrupt or partial download never stays.

IDX format: a big-endian header ``0x00 0x00 <type> <ndim>`` then ``ndim`` uint32 sizes, then
the data in C order. MNIST images are ``0x00000803`` (uint8, 3 dims: N, 28, 28), labels
``0x00000801`` (uint8, 1 dim: N).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stnkit._checks import check_choice, fail
from stnkit._io import atomic_path
from stnkit.data.paths import (
    EMBEDDED,
    MIRRORS_ENV,
    OFFLINE_ENV,
    is_offline,
    mnist_search_dirs,
    resolve_root,
)

__all__ = [
    "ChecksumError",
    "DownloadError",
    "FILES",
    "MD5",
    "MIRRORS",
    "MNISTFileError",
    "MNIST_MEAN",
    "MNIST_STD",
    "SPLITS",
    "download_mnist",
    "embedded_manifest",
    "find_mnist_files",
    "load_mnist",
    "mnist_mirrors",
    "read_idx",
    "source_md5",
]

MNIST_MEAN = 0.1307
"""Mean pixel value of the MNIST training images scaled to [0, 1]."""
MNIST_STD = 0.3081
"""Standard deviation of the MNIST training pixels scaled to [0, 1]."""

SPLITS = ("train", "test")

# split -> (images file, labels file), without the optional ".gz".
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# md5 of the decompressed canonical files (LeCun, Cortes, Burges).
MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# Public mirrors of the gzipped files, tried in order (URL = mirror + name + ".gz").
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_EMBEDDED_MANIFEST = "MANIFEST.json"
_HOW_TO_GET = (
    "run `stnkit data download --data-dir {root}` (or `stnkit.data.download_mnist()`), "
    "copy the four MNIST IDX files (raw or .gz) there, point STNKIT_DATA or --data-dir at a "
    "directory that has them, or use root='embedded' (--data-dir embedded) for the "
    "subset shipped with stnkit"
)


class MNISTFileError(ValueError):
    """An MNIST/IDX file is unreadable: wrong magic number, truncated, bad gzip, mismatched."""


class ChecksumError(MNISTFileError):
    """A file's decompressed content does not have the expected md5."""


class DownloadError(OSError):
    """No mirror delivered a verified file (the message lists what each mirror did)."""


# --------------------------------------------------------------------------- reading


def _decompress(raw: bytes, where: str) -> bytes:
    """The IDX bytes of a raw or gzipped file (gzip is recognised by its magic bytes)."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise MNISTFileError(
            f"{where}: corrupt gzip data ({e}); delete the file and get it again") from e


def _parse_idx(data: bytes, where: str, *, magic: int | None = None) -> np.ndarray:
    """Array from IDX bytes; ``magic`` (if given) must match exactly."""
    if len(data) < 4:
        raise MNISTFileError(f"{where}: truncated: {len(data)} bytes, shorter than an IDX "
                             "header; delete the file and get it again")
    got = int.from_bytes(data[:4], "big")
    kind = {_IMAGES_MAGIC: "MNIST images (uint8, 3 dims)",
            _LABELS_MAGIC: "MNIST labels (uint8, 1 dim)"}
    if magic is not None and got != magic:
        raise MNISTFileError(
            f"{where}: wrong magic number 0x{got:08x}, expected 0x{magic:08x} "
            f"({kind[magic]}); this is not the right IDX file (a label file named as an "
            "image file, or not IDX at all); delete it and get it again")
    code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise MNISTFileError(f"{where}: wrong magic number 0x{got:08x}, expected "
                             "0x0000TTDD (TT an IDX type code, DD >= 1 dims): not an IDX file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTFileError(f"{where}: truncated: {len(data)} bytes, shorter than its "
                             f"{header}-byte header; delete the file and get it again")
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    need = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < need:
        raise MNISTFileError(
            f"{where}: truncated: the header promises shape {shape} ({need} bytes) but the "
            f"file holds {len(data)} bytes (an interrupted download or copy?); delete the "
            "file and get it again")
    if len(data) > need:
        raise MNISTFileError(f"{where}: {len(data) - need} unexpected bytes after the "
                             f"{need} that shape {shape} needs: not a valid IDX file")
    out = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return out.astype(dtype.newbyteorder("="))  # a native-order, writable copy


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read any IDX file, raw or gzipped, into a native-order numpy array.

    Checks the header and the length (no checksum: use :func:`load_mnist` for MNIST).

    >>> read_idx("train-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
    (60000,)
    """
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        fail("read_idx", "path", "a str or os.PathLike", type(path).__name__, error=TypeError)
    path = Path(path)
    return _parse_idx(_decompress(path.read_bytes(), str(path)), str(path))


def _read_mnist_file(raw: bytes, where: str, magic: int) -> tuple[np.ndarray, str]:
    """(array, md5 of the decompressed content), structure checked."""
    data = _decompress(raw, where)
    array = _parse_idx(data, where, magic=magic)
    if magic == _IMAGES_MAGIC and array.shape[1:] != (28, 28):
        raise MNISTFileError(f"{where}: images of size {array.shape[1:]}, expected (28, 28)")
    return array, hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- embedded


def _embedded_dir() -> Any:
    return resources.files("stnkit.data").joinpath("_embedded")


def embedded_manifest() -> dict[str, Any]:
    """The checksum manifest of the subset shipped in ``stnkit/data/_embedded``."""
    try:
        text = _embedded_dir().joinpath(_EMBEDDED_MANIFEST).read_text()
    except FileNotFoundError as e:
        raise FileNotFoundError(
            "the embedded MNIST subset is missing from this stnkit installation "
            f"(stnkit/data/_embedded/{_EMBEDDED_MANIFEST}); reinstall stnkit, or make it "
            "with scripts/make_embedded_mnist.py") from e
    return json.loads(text)


def _embedded_file(name: str) -> tuple[bytes, str]:
    where = f"stnkit/data/_embedded/{name}"
    try:
        return _embedded_dir().joinpath(name).read_bytes(), where
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{where} is missing from this stnkit installation; "
                                "reinstall stnkit") from e


# --------------------------------------------------------------------------- finding


def find_mnist_files(split: str, root: Any = None) -> dict[str, Path | None]:
    """For each IDX file name of ``split``, the first file found under ``root`` (or None).

    A raw file wins over a ``.gz`` beside it; directories are searched in the order of
    :func:`stnkit.data.paths.mnist_search_dirs`.
    """
    check_choice(split, SPLITS, name="split", fn="find_mnist_files")
    path = resolve_root(root, fn="find_mnist_files")
    if path == EMBEDDED:
        fail("find_mnist_files", "root", "a directory (the embedded subset has no files)",
             repr(root))
    found: dict[str, Path | None] = {}
    for name in FILES[split]:
        found[name] = next((d / n for d in mnist_search_dirs(path) for n in (name, name + ".gz")
                            if (d / n).is_file()), None)
    return found


def source_md5(split: str, root: Any = None) -> tuple[str, str]:
    """md5s of the (images, labels) content :func:`load_mnist` returns for ``split``.

    These are the canonical values for a data directory (load_mnist refuses anything else),
    and the manifest's for the embedded subset; no file is read except that manifest.
    """
    check_choice(split, SPLITS, name="split", fn="source_md5")
    if resolve_root(root, fn="source_md5") == EMBEDDED:
        files = embedded_manifest()["files"]
        return tuple(files[n + ".gz"]["md5"] for n in FILES[split])  # type: ignore[return-value]
    return MD5[FILES[split][0]], MD5[FILES[split][1]]


# --------------------------------------------------------------------------- loading


def load_mnist(split: str, *, root: Any = None, download: bool = True,
               offline: bool | None = None, mirrors: Sequence[str] | None = None,
               progress: bool = True) -> tuple[Tensor, Tensor]:
    """MNIST's ``split`` as ``(images, labels)``: uint8 (N, 28, 28) and int64 (N,) tensors.

    Args:
        split: ``"train"`` (N = 60000) or ``"test"`` (N = 10000).
        root: data directory, ``"embedded"`` for the subset shipped with stnkit (its first
            6000 train / 2000 test digits), or None (``STNKIT_DATA``, else the user cache).
        download: fetch missing files from the mirrors (never in offline mode).
        offline: forbid network use; None reads ``STNKIT_OFFLINE``.
        mirrors: base URLs to try instead of :func:`mnist_mirrors`'s.
        progress: show a download progress bar.

    Raises:
        FileNotFoundError: files missing (and not downloaded); says where it looked.
        MNISTFileError: wrong magic number, truncated file, bad gzip, count mismatch.
        ChecksumError: content differs from canonical MNIST (or the embedded manifest).
    """
    fn = "load_mnist"
    check_choice(split, SPLITS, name="split", fn=fn)
    path = resolve_root(root, fn=fn)
    offline = is_offline(offline, fn=fn)
    img_name, lbl_name = FILES[split]
    if path == EMBEDDED:
        files = embedded_manifest()["files"]
        sources = [_embedded_file(n + ".gz") for n in (img_name, lbl_name)]
        expected = [files[n + ".gz"]["md5"] for n in (img_name, lbl_name)]
        fix = "the embedded subset is damaged: reinstall stnkit"
    else:
        path = Path(path)  # (a Path already; for the type checker)
        found = find_mnist_files(split, path)
        if None in found.values():
            if download and not offline:
                download_mnist(path, splits=(split,), mirrors=mirrors, progress=progress)
                found = find_mnist_files(split, path)
            if None in found.values():
                _raise_missing(split, path, found, offline=offline, download=download)
        sources = [(p.read_bytes(), str(p)) for p in found.values()]  # type: ignore[union-attr]
        expected = [MD5[img_name], MD5[lbl_name]]
        fix = ("delete it and run `stnkit data download --data-dir "
               f"{path}` to fetch a verified copy")
    images, img_md5 = _read_mnist_file(*sources[0], _IMAGES_MAGIC)
    labels, lbl_md5 = _read_mnist_file(*sources[1], _LABELS_MAGIC)
    if len(images) != len(labels):
        raise MNISTFileError(
            f"{fn}: {sources[0][1]} holds {len(images)} images but {sources[1][1]} holds "
            f"{len(labels)} labels; both files must be the same MNIST split: {fix}")
    for (_, where), got, want in zip(sources, (img_md5, lbl_md5), expected):
        if got != want:
            raise ChecksumError(f"{fn}: checksum mismatch for {where}: md5 of the "
                                f"decompressed content is {got}, expected {want}; the file "
                                f"is corrupt or not MNIST: {fix}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _raise_missing(split: str, root: Path, found: dict[str, Path | None], *, offline: bool,
                   download: bool) -> None:
    missing = [n for n, p in found.items() if p is None]
    looked = ", ".join(str(d) for d in mnist_search_dirs(root))
    why = (f" (offline mode: {OFFLINE_ENV} or --offline is set, so nothing was downloaded)"
           if offline else "" if download else " (download=False)")
    raise FileNotFoundError(
        f"load_mnist: MNIST {split} file(s) {', '.join(n + '[.gz]' for n in missing)} not "
        f"found{why}; looked in {looked}. To fix: " + _HOW_TO_GET.format(root=root))


# --------------------------------------------------------------------------- downloading


def mnist_mirrors(mirrors: Sequence[str] | None = None) -> tuple[str, ...]:
    """Base URLs to try, in order: ``mirrors``, else ``STNKIT_MNIST_MIRRORS`` (separated by
    commas or whitespace), else :data:`MIRRORS`."""
    if mirrors is None:
        env = os.environ.get(MIRRORS_ENV, "").strip()
        if not env:
            return MIRRORS
        mirrors = [m for m in re.split(r"[,\s]+", env) if m]
    if isinstance(mirrors, str) or not isinstance(mirrors, Sequence):
        fail("mnist_mirrors", "mirrors", "a sequence of URL strings",
             type(mirrors).__name__, error=TypeError)
    out = []
    for m in mirrors:
        if not isinstance(m, str) or not re.match(r"^(https?|file)://", m):
            fail("mnist_mirrors", "mirrors", "URLs starting with http://, https:// or file://",
                 repr(m))
        out.append(m if m.endswith("/") else m + "/")
    if not out:
        fail("mnist_mirrors", "mirrors", "at least one URL", "[]")
    return tuple(out)


def download_mnist(root: Any = None, *, splits: Sequence[str] = SPLITS,
                   mirrors: Sequence[str] | None = None, offline: bool | None = None,
                   progress: bool = True, timeout: float = 60.0) -> Path:
    """Download the missing MNIST files of ``splits`` into ``ROOT/mnist``; returns that dir.

    Files already present and valid are kept. Each file is fetched from the mirrors in
    order into a temporary file beside its destination, verified (IDX structure and the
    canonical md5 of its decompressed content), then renamed into place; a mirror that
    fails or serves a bad file is skipped and nothing of it is kept.

    Raises:
        DownloadError: offline mode, or no mirror delivered a verified copy.
        MNISTFileError: an existing invalid file would shadow the download.
    """
    fn = "download_mnist"
    path = resolve_root(root, fn=fn)
    if path == EMBEDDED:
        fail(fn, "root", "a directory (the embedded subset ships with stnkit and needs no "
             "download)", repr(root))
    path = Path(path)  # (a Path already; for the type checker)
    if isinstance(splits, str) or not isinstance(splits, Sequence):
        fail(fn, "splits", "a sequence of split names", type(splits).__name__, error=TypeError)
    for split in splits:
        check_choice(split, SPLITS, name="splits entry", fn=fn)
    urls = mnist_mirrors(mirrors)
    target = path / "mnist"
    todo = []
    for split in splits:
        for name, found in find_mnist_files(split, path).items():
            if found is not None and _is_valid(found, name):
                continue
            dest = target / (name + ".gz")
            if found is not None and found != dest:
                raise MNISTFileError(
                    f"{fn}: {found} is not a valid copy of {name} and would be read instead of "
                    f"a download; delete it (the download goes to {dest})")
            todo.append((name, dest))
    if not todo:
        return target
    if is_offline(offline, fn=fn):
        raise DownloadError(f"{fn}: offline mode ({OFFLINE_ENV} or --offline) forbids "
                            f"downloading {', '.join(n for n, _ in todo)}; unset it, or "
                            f"copy the files into {target} by hand")
    target.mkdir(parents=True, exist_ok=True)
    for name, dest in todo:
        _download_one(name, dest, urls, progress=progress, timeout=timeout)
    return target


def _is_valid(path: Path, name: str) -> bool:
    magic = _IMAGES_MAGIC if "images" in name else _LABELS_MAGIC
    try:
        _, md5 = _read_mnist_file(path.read_bytes(), str(path), magic)
    except MNISTFileError:
        return False
    return md5 == MD5[name]


def _download_one(name: str, dest: Path, urls: Sequence[str], *, progress: bool,
                  timeout: float) -> None:
    errors = []
    for base in urls:
        url = base + name + ".gz"
        try:
            with atomic_path(dest) as tmp:
                with open(tmp, "wb") as f:
                    _fetch(url, f, desc=dest.name, progress=progress, timeout=timeout)
                magic = _IMAGES_MAGIC if "images" in name else _LABELS_MAGIC
                _, md5 = _read_mnist_file(tmp.read_bytes(), url, magic)
                if md5 != MD5[name]:
                    raise ChecksumError(f"checksum mismatch: md5 of the decompressed content "
                                        f"is {md5}, expected {MD5[name]}")
            return
        except (OSError, ValueError, http.client.HTTPException) as e:
            errors.append(f"{url}: {e}")
    raise DownloadError(
        f"download_mnist: could not get a verified copy of {name} from any mirror:\n  "
        + "\n  ".join(errors)
        + f"\nTo fix: check the network, set {MIRRORS_ENV} to a working mirror, or copy "
        f"{name}.gz into {dest.parent} by hand")


def _fetch(url: str, out: Any, *, desc: str, progress: bool, timeout: float) -> None:
    """Stream ``url`` into the binary file ``out`` with a tqdm progress bar."""
    from tqdm import tqdm

    from stnkit import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"stnkit/{__version__}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                  disable=None if progress else True, leave=False) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
    if total is not None and done != total:
        raise DownloadError(f"connection closed after {done} of {total} bytes")
