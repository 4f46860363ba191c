"""MNIST: the IDX reader, checksums, the downloader and the embedded subset.

The four IDX files (raw or gzipped) are read from a data directory (see
:mod:`stnkit.data.paths`) and the md5 of their *decompressed* content is checked against
the canonical values, so any gzip wrapper works. Missing files are downloaded from
:data:`MIRRORS` (tried in order; ``STNKIT_MNIST_MIRRORS`` or ``mirrors=`` override it)
unless offline mode is on (``offline=True`` or ``STNKIT_OFFLINE=1``), in which case the
network is never touched. A download goes to a temporary file in the target directory, is
verified, and only then renamed into place: a corrupt or partial download never stays.

Sizes are capped at the known MNIST sizes (:data:`SIZES`, the decompressed IDX files): a
download may not exceed its file's size plus gzip's overhead, a raw file on disk may not
exceed it, and a gzip stream is inflated in bounded steps and refused as soon as it would
produce more, so a decompression bomb is never inflated in memory.

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

from stnkit._checks import StnkitFileError, check_choice, fail, fail_file
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
    "MNISTNotFoundError",
    "MIRRORS",
    "MNISTFileError",
    "MNIST_MEAN",
    "MNIST_STD",
    "SIZES",
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
"""MNIST's splits: ``"train"`` (60,000 digits) and ``"test"`` (10,000)."""

# split -> (images file, labels file), without the optional ".gz".
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""MNIST's file names per split: ``{split: (images file, labels file)}`` (without ``.gz``)."""

# md5 of the decompressed canonical files (LeCun, Cortes, Burges).
MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
"""MD5 of each canonical MNIST file (gzipped), checked on every load."""

# bytes of the decompressed canonical files: 16-byte header + 28*28 per image; 8 + 1 per label
SIZES: dict[str, int] = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}
# a gzip of n bytes is at most n + 5 bytes per 16 KiB stored block + header and trailer
_GZIP_SLACK = 64 * 1024
READ_IDX_LIMIT = 2**31
"""Largest decompressed size :func:`read_idx` accepts (any IDX file, not only MNIST)."""

# Public mirrors of the gzipped files, tried in order (URL = mirror + name + ".gz").
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
"""Base URLs MNIST is downloaded from, tried in order."""

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


class MNISTFileError(StnkitFileError, ValueError):
    """An MNIST/IDX file is unreadable: wrong magic number, truncated, bad gzip, too large,
    mismatched (a :class:`~stnkit._checks.StnkitFileError`; also a ``ValueError``, as it was)."""


class ChecksumError(MNISTFileError):
    """A file's decompressed content does not have the expected md5."""


class MNISTNotFoundError(StnkitFileError, FileNotFoundError):
    """MNIST files that are not there (and were not downloaded); says where it looked."""


class DownloadError(StnkitFileError):
    """No mirror delivered a verified file (the message lists what each mirror did)."""


def _bad(fn: str, where: Any, problem: str):
    fail_file(fn, where, problem, error=MNISTFileError)


def _limit_of(name: str) -> int:
    """The decompressed size cap of the MNIST file ``name`` (with or without ``.gz``)."""
    return SIZES[name.removesuffix(".gz")]


# --------------------------------------------------------------------------- reading


def _decompress(raw: bytes, where: str, *, limit: int, fn: str) -> bytes:
    """The IDX bytes of a raw or gzipped file (gzip is recognised by its magic bytes), at most
    ``limit`` of them: a gzip stream is inflated in steps bounded by what is left of ``limit``
    and refused the moment it would exceed it (a bomb never reaches memory)."""
    if raw[:2] != b"\x1f\x8b":
        if len(raw) > limit:
            _bad(fn, where, f"{len(raw)} bytes, more than the {limit} an IDX file of this name "
                 "holds; delete the file and get it again")
        return raw
    out: list[bytes] = []
    total = 0
    data = raw
    try:
        while True:  # one gzip member per turn (a file may hold several, as gzip allows)
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, limit + 1 - total)
            total += len(chunk)
            if total > limit:
                _bad(fn, where, f"decompresses to more than {limit} bytes, the most an IDX "
                     "file of this name holds (a corrupt file or a decompression bomb); delete "
                     "it and get it again")
            out.append(chunk)
            if not inflater.eof:
                raise zlib.error("compressed data ended before the end-of-stream marker")
            data = inflater.unused_data
            if not data.strip(b"\x00"):  # the end, or zero padding (gzip allows it)
                return b"".join(out)
            if data[:2] != b"\x1f\x8b":
                raise zlib.error(f"{len(data)} bytes of trailing garbage after the gzip data")
    except zlib.error as e:
        _bad(fn, where, f"corrupt gzip data ({e}); delete the file and get it again")


def _parse_idx(data: bytes, where: str, *, magic: int | None = None,
               fn: str = "read_idx") -> np.ndarray:
    """Array from IDX bytes; ``magic`` (if given) must match exactly."""
    if len(data) < 4:
        _bad(fn, where, f"truncated: {len(data)} bytes, shorter than an IDX header; delete "
             "the file and get it again")
    got = int.from_bytes(data[:4], "big")
    kind = {_IMAGES_MAGIC: "MNIST images (uint8, 3 dims)",
            _LABELS_MAGIC: "MNIST labels (uint8, 1 dim)"}
    if magic is not None and got != magic:
        _bad(fn, where, f"wrong magic number 0x{got:08x}, expected 0x{magic:08x} "
             f"({kind[magic]}); this is not the right IDX file (a label file named as an "
             "image file, or not IDX at all); delete it and get it again")
    code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        _bad(fn, where, f"wrong magic number 0x{got:08x}, expected 0x0000TTDD (TT an IDX "
             "type code, DD >= 1 dims): not an IDX file")
    header = 4 + 4 * ndim
    if len(data) < header:
        _bad(fn, where, f"truncated: {len(data)} bytes, shorter than its {header}-byte "
             "header; delete the file and get it again")
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    need = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < need:
        _bad(fn, where, f"truncated: the header promises shape {shape} ({need} bytes) but "
             f"the file holds {len(data)} bytes (an interrupted download or copy?); delete the "
             "file and get it again")
    if len(data) > need:
        _bad(fn, where, f"{len(data) - need} unexpected bytes after the {need} that shape "
             f"{shape} needs: not a valid IDX file")
    out = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return out.astype(dtype.newbyteorder("="))  # a native-order, writable copy


def read_idx(path: str | os.PathLike, *, max_bytes: int = READ_IDX_LIMIT) -> np.ndarray:
    """Read any IDX file, raw or gzipped, into a native-order numpy array.

    Checks the header and the length (no checksum: use :func:`load_mnist` for MNIST); a
    file whose content is (or decompresses to) more than ``max_bytes`` is refused.

    >>> from pathlib import Path
    >>> from stnkit.data import read_idx
    >>> header = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big")  # uint8, 1 dimension: 3
    >>> _ = Path("labels-idx1-ubyte").write_bytes(header + bytes([7, 2, 1]))
    >>> read_idx("labels-idx1-ubyte")
    array([7, 2, 1], dtype=uint8)
    """
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        fail("read_idx", "path", "a str or os.PathLike", type(path).__name__, error=TypeError)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        fail("read_idx", "max_bytes", "a positive int", repr(max_bytes))
    path = Path(path)
    raw = _read_capped(path, max_bytes + _GZIP_SLACK, fn="read_idx")
    return _parse_idx(_decompress(raw, str(path), limit=max_bytes, fn="read_idx"), str(path))


def _read_capped(path: Path, cap: int, *, fn: str) -> bytes:
    """The bytes of ``path``, refused without reading when it holds more than ``cap``."""
    try:
        size = path.stat().st_size
        if size > cap:
            _bad(fn, path, f"{size} bytes, more than the {cap} a file of this name may hold; "
                 "delete it and get it again")
        return path.read_bytes()
    except FileNotFoundError:
        fail_file(fn, path, "file does not exist", error=MNISTNotFoundError)
    except IsADirectoryError:
        _bad(fn, path, "is a directory, not an IDX file")
    except OSError as e:
        if isinstance(e, StnkitFileError):
            raise
        fail_file(fn, path, f"cannot read it ({e.strerror or e})")


def _read_mnist_file(raw: bytes, where: str, name: str, *,
                     fn: str = "load_mnist") -> tuple[np.ndarray, str]:
    """(array, md5 of the decompressed content) of the MNIST file ``name``, structure and
    size checked."""
    magic = _IMAGES_MAGIC if "images" in name else _LABELS_MAGIC
    data = _decompress(raw, where, limit=_limit_of(name), fn=fn)
    array = _parse_idx(data, where, magic=magic, fn=fn)
    if magic == _IMAGES_MAGIC and array.shape[1:] != (28, 28):
        _bad(fn, where, f"images of size {array.shape[1:]}, expected (28, 28)")
    return array, hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- embedded


def _embedded_dir() -> Any:
    return resources.files("stnkit.data").joinpath("_embedded")


def embedded_manifest() -> dict[str, Any]:
    """The checksum manifest of the subset shipped in ``stnkit/data/_embedded``."""
    where = f"stnkit/data/_embedded/{_EMBEDDED_MANIFEST}"
    try:
        text = _embedded_dir().joinpath(_EMBEDDED_MANIFEST).read_text()
    except FileNotFoundError:
        fail_file("load_mnist", where, "the embedded MNIST subset is missing from this stnkit "
                  "installation; reinstall stnkit, or make it with "
                  "scripts/make_embedded_mnist.py", error=MNISTNotFoundError)
    try:
        return json.loads(text)
    except ValueError as e:
        _bad("load_mnist", where, f"corrupt manifest ({e}); reinstall stnkit")


def _embedded_file(name: str) -> tuple[bytes, str]:
    where = f"stnkit/data/_embedded/{name}"
    try:
        return _embedded_dir().joinpath(name).read_bytes(), where
    except FileNotFoundError:
        fail_file("load_mnist", where, "missing from this stnkit installation; reinstall "
                  "stnkit", error=MNISTNotFoundError)


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
        sources = [(_read_capped(p, _limit_of(n) + _GZIP_SLACK, fn=fn), str(p))  # type: ignore[arg-type]
                   for n, p in found.items()]
        expected = [MD5[img_name], MD5[lbl_name]]
        fix = ("delete it and run `stnkit data download --data-dir "
               f"{path}` to fetch a verified copy")
    images, img_md5 = _read_mnist_file(*sources[0], img_name, fn=fn)
    labels, lbl_md5 = _read_mnist_file(*sources[1], lbl_name, fn=fn)
    if len(images) != len(labels):
        _bad(fn, sources[0][1], f"holds {len(images)} images but {sources[1][1]} holds "
             f"{len(labels)} labels; both files must be the same MNIST split: {fix}")
    for (_, where), got, want in zip(sources, (img_md5, lbl_md5), expected):
        if got != want:
            fail_file(fn, where, f"checksum mismatch: md5 of the decompressed content is "
                      f"{got}, expected {want}; the file is corrupt or not MNIST: {fix}",
                      error=ChecksumError)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _raise_missing(split: str, root: Path, found: dict[str, Path | None], *, offline: bool,
                   download: bool) -> None:
    missing = [n for n, p in found.items() if p is None]
    looked = ", ".join(str(d) for d in mnist_search_dirs(root))
    why = (f" (offline mode: {OFFLINE_ENV} or --offline is set, so nothing was downloaded)"
           if offline else "" if download else " (download=False)")
    fail_file("load_mnist", root, f"MNIST {split} file(s) "
              f"{', '.join(n + '[.gz]' for n in missing)} not found{why}; looked in {looked}. "
              "To fix: " + _HOW_TO_GET.format(root=root), error=MNISTNotFoundError)


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
                _bad(fn, found, f"is not a valid copy of {name} and would be read instead of a "
                     f"download; delete it (the download goes to {dest})")
            todo.append((name, dest))
    if not todo:
        return target
    if is_offline(offline, fn=fn):
        fail_file(fn, target, f"offline mode ({OFFLINE_ENV} or --offline) forbids downloading "
                  f"{', '.join(n for n, _ in todo)}; unset it, or copy the files into "
                  f"{target} by hand", error=DownloadError)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail_file(fn, target, f"cannot create the directory ({e.strerror or e})")
    for name, dest in todo:
        _download_one(name, dest, urls, progress=progress, timeout=timeout)
    return target


def _is_valid(path: Path, name: str) -> bool:
    try:
        raw = _read_capped(path, _limit_of(name) + _GZIP_SLACK, fn="download_mnist")
        _, md5 = _read_mnist_file(raw, str(path), name, fn="download_mnist")
    except MNISTFileError:
        return False
    return md5 == MD5[name]


# what a mirror that cannot be reached or does not serve the file raises
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


def _network_reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e) or type(e).__name__


def _download_one(name: str, dest: Path, urls: Sequence[str], *, progress: bool,
                  timeout: float) -> None:
    """Fetch ``name.gz`` from the first mirror that serves a verified copy into ``dest``.

    A mirror that cannot be reached, fails mid-way, serves more than the file's size or a
    file that does not verify is skipped; a local problem (``dest`` cannot be written) stops
    at once, since no other mirror would fix it."""
    fn = "download_mnist"
    cap = _limit_of(name) + _GZIP_SLACK  # a gzip is never much larger than its content
    errors = []
    for base in urls:
        url = base + name + ".gz"
        try:
            with atomic_path(dest) as tmp:
                with open(tmp, "wb") as f:
                    _fetch(url, f, desc=dest.name, progress=progress, timeout=timeout,
                           cap=cap, dest=dest)
                _, md5 = _read_mnist_file(tmp.read_bytes(), url, name, fn=fn)
                if md5 != MD5[name]:
                    fail_file(fn, url, f"checksum mismatch: md5 of the decompressed content "
                              f"is {md5}, expected {MD5[name]}", error=ChecksumError)
            return
        except (MNISTFileError, DownloadError) as e:  # served, but not a verified copy
            errors.append(f"{url}: {str(e).removeprefix(f'{fn}: {url}: ')}")
        except StnkitFileError:
            raise  # here, not at the mirror: dest cannot be written
        except _NETWORK_ERRORS as e:  # every OSError left: sockets, SSL, URLError
            errors.append(f"{url}: download failed ({_network_reason(e)})")
    root = dest.parent.parent
    fail_file(fn, dest, f"download failed: no mirror delivered a verified copy of {name}.gz ("
              + "; ".join(errors) + f"). To fix: check the network or set {MIRRORS_ENV} to a "
              f"reachable mirror and run `stnkit data download --data-dir {root}`, copy "
              f"{name}.gz into {dest.parent} by hand, or use the MNIST subset shipped with "
              "stnkit (--data-dir embedded)", error=DownloadError)


def _fetch(url: str, out: Any, *, desc: str, progress: bool, timeout: float, cap: int,
           dest: Path) -> None:
    """Stream ``url`` into the binary file ``out`` with a tqdm progress bar; refuse more than
    ``cap`` bytes (announced or received) and a connection closed early."""
    from tqdm import tqdm

    from stnkit import __version__

    fn = "download_mnist"
    request = urllib.request.Request(url, headers={"User-Agent": f"stnkit/{__version__}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > cap:
            fail_file(fn, url, f"the server announces {total} bytes, more than the {cap} a "
                      f"gzip of {desc} can take", error=DownloadError)
        done = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                  disable=None if progress else True, leave=False) as bar:
            while chunk := response.read(min(1 << 20, cap + 1 - done)):
                done += len(chunk)
                if done > cap:
                    fail_file(fn, url, f"sent more than {cap} bytes, more than a gzip of "
                              f"{desc} can take", error=DownloadError)
                try:
                    out.write(chunk)
                except OSError as e:
                    fail_file(fn, dest, f"cannot write it ({e.strerror or e})")
                bar.update(len(chunk))
    if total is not None and done != total:
        fail_file(fn, url, f"connection closed after {done} of {total} bytes",
                  error=DownloadError)
