"""``DistortedMNIST``: a distorted-MNIST variant over a whole split, generated once and cached.

Generation runs in fixed chunks of :data:`CHUNK` consecutive samples on ``workers`` threads
(torch and numpy release the GIL in their kernels), each chunk on one thread with one torch
intra-op thread: the chunk boundaries and the arithmetic never depend on the number of
workers, and every sample draws from its own random generator, so the data is byte-identical
whatever ``workers`` is. (Threads, not processes: nothing to pickle, no ``__main__`` guard
needed in user scripts, works in notebooks and DataLoader workers.)

Cache: ``<cache dir>/<variant>-<split>-seed<seed>-<key>/`` holding ``images.npy`` (uint8
(N, C, S, S)), ``labels.npy`` (int64 (N,)), ``transforms.npz`` (the recorded transforms) and
``manifest.json``. The key hashes the manifest's ``key`` section (:func:`_cache_key`): the
cache format, variant, split, seed, every parameter, the md5s of the source MNIST content,
and what generates the bytes: :data:`~stnkit.data.distortions.GENERATOR_VERSION` (an
explicit constant, bumped whenever the generated data changes for the same parameters,
whether through the generators or the warps of :mod:`stnkit.ops` they call; a test pins
the bytes of a few generated samples so that such a change cannot go unnoticed), the chunk
size, the warp backend and the torch / numpy versions (their arithmetic may round
differently). Nothing is hashed from source files: editing a comment keeps every cache.
An entry is used only if its manifest matches exactly, so a changed parameter, seed, source
or generator never reuses stale data. Entries are written to a temporary directory and
renamed into place. The cache directory is ``ROOT/distorted`` for a data directory ROOT and
``<user cache dir>/distorted`` for the embedded subset (also the fallback when ROOT is not
writable); ``cache=False`` keeps everything in memory, ``cache=PATH`` uses PATH.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from stnkit._checks import check_choice, fail
from stnkit.data.distortions import (
    GENERATOR_VERSION,
    VARIANTS,
    _Source,
    check_seed,
    distort,
    resolve_params,
    warp_backend,
)
from stnkit.data.mnist import SPLITS, load_mnist, source_md5
from stnkit.data.paths import EMBEDDED, resolve_root, user_cache_dir

__all__ = ["CACHE_FORMAT", "CHUNK", "DistortedMNIST", "cached_datasets", "generate"]

CHUNK = 256
"""Samples per generation task (fixed, so results never depend on the worker count)."""

CACHE_FORMAT = 2
"""Layout of a cache entry and of its key (2: the key names GENERATOR_VERSION, no code hash)."""


# --------------------------------------------------------------------------- generation


_THREADS_LOCK = threading.Lock()
_threads_users = 0
_threads_saved = 1


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch (and so the C++ kernels) on one intra-op thread; nesting- and thread-safe:
    the first user saves the setting, the last one restores it."""
    global _threads_users, _threads_saved
    with _THREADS_LOCK:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_workers(workers: Any, n: int, fn: str) -> int:
    if workers is None:
        return 1 if n < 16 * CHUNK else max(1, min(_available_cpus(), 8))
    if isinstance(workers, bool) or not isinstance(workers, int):
        fail(fn, "workers", "None or an int", repr(workers), error=TypeError)
    if workers < 1:
        fail(fn, "workers", "an int >= 1", workers)
    return workers


def _generate(variant: str, split: str, seed: int, params: dict, images: np.ndarray,
              labels: np.ndarray, indices: np.ndarray, workers: int, progress: bool,
              ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Samples ``indices`` in chunks of CHUNK, on ``workers`` threads (1: this one)."""
    from tqdm import tqdm

    chunks = [indices[k:k + CHUNK] for k in range(0, len(indices), CHUNK)] or [indices]
    source = _Source(images, labels)

    def work(chunk: np.ndarray) -> tuple:
        return distort(variant, None, None, chunk, seed=seed, split=split, params=params,
                       _source=source)

    bar = dict(total=len(chunks), desc=f"generating {variant} {split}", unit="chunk",
               disable=None if progress else True, leave=False)
    workers = min(workers, len(chunks))
    with _one_thread():  # one torch thread per chunk: results independent of `workers`
        if workers == 1:
            results = [work(c) for c in tqdm(chunks, **bar)]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="stnkit-data") as pool:
                results = list(tqdm(pool.map(work, chunks), **bar))
    out_images = np.concatenate([r[0] for r in results])
    out_labels = np.concatenate([r[1] for r in results])
    out_params = {k: np.concatenate([r[2][k] for r in results]) for k in results[0][2]}
    return out_images, out_labels, out_params


def generate(variant: str, split: str, *, seed: int = 0, root: Any = None,
             params: Mapping[str, Any] | None = None, indices: Any = None,
             workers: int | None = None, progress: bool = False, offline: bool | None = None,
             download: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Generate samples of a variant without caching (``DistortedMNIST`` caches).

    Args:
        indices: sample indices (default: the whole split). Sample i is identical to
            ``DistortedMNIST(variant, split, seed=seed, root=root)[i]`` (same transform; the
            image may differ by float rounding when batched differently, at most 1/255).
        workers: threads (None: 1 for small jobs, else the available CPUs, at most 8).
    Returns:
        images uint8 (B, C, S, S), labels int64 (B,), recorded transforms {name: (B, ...)}.
    """
    fn = "generate"
    p = resolve_params(variant, params, fn=fn)
    check_choice(split, SPLITS, name="split", fn=fn)
    seed = check_seed(seed, fn=fn)
    images, labels = load_mnist(split, root=root, offline=offline, download=download,
                                progress=progress)
    n = len(images)
    idx = np.arange(n) if indices is None else np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        fail(fn, "indices", "a 1-D sequence of ints", f"{idx.dtype} {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        fail(fn, "indices", f"in [0, {n})", f"values in [{idx.min()}, {idx.max()}]")
    workers = _check_workers(workers, len(idx), fn)
    return _generate(variant, split, seed, p, images.numpy(), labels.numpy(),
                     idx.astype(np.int64), workers, progress)


# --------------------------------------------------------------------------- cache


def _cache_key(variant: str, split: str, seed: int, params: dict, root: Any) -> dict:
    """Everything the bytes of an entry depend on, and nothing else (see the module doc)."""
    images_md5, labels_md5 = source_md5(split, root)
    key = {
        "format": CACHE_FORMAT,
        "variant": variant,
        "split": split,
        "seed": seed,
        "params": params,
        "source": {"images_md5": images_md5, "labels_md5": labels_md5},
        "generator": {"version": GENERATOR_VERSION, "chunk": CHUNK, "backend": warp_backend(),
                      "torch": torch.__version__, "numpy": np.__version__},
    }
    return json.loads(json.dumps(key))  # canonical: tuples -> lists, as read back from disk


def _cache_dirs(root: Any, cache: Any, fn: str) -> list[Path]:
    if cache is False:
        return []
    if cache is not True:
        if not isinstance(cache, (str, os.PathLike)):
            fail(fn, "cache", "a bool or a directory path", type(cache).__name__,
                 error=TypeError)
        return [Path(cache).expanduser()]
    fallback = user_cache_dir() / "distorted"
    path = resolve_root(root, fn=fn)
    if path == EMBEDDED:
        return [fallback]
    return list(dict.fromkeys([path / "distorted", fallback]))  # type: ignore[operator]


def _entry_name(key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"{key['variant']}-{key['split']}-seed{key['seed']}-{digest}"


def _read_entry(path: Path, key: dict, mmap: bool = True) -> tuple | None:
    """(images, labels, transforms, manifest) of a valid cache entry, else None."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("key") != key:
            return None
        images = np.load(path / "images.npy", mmap_mode="r" if mmap else None)
        labels = np.load(path / "labels.npy")
        with np.load(path / "transforms.npz") as z:
            transforms = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    n = manifest.get("count")
    ok = (images.dtype == np.uint8 and images.shape[0] == n and labels.shape == (n,)
          and all(v.shape[:1] == (n,) for v in transforms.values()))
    return (images, labels, transforms, manifest) if ok else None


def _write_entry(cache_dir: Path, name: str, images: np.ndarray, labels: np.ndarray,
                 transforms: dict, manifest: dict) -> Path:
    """Write an entry atomically (temporary directory, then rename); returns its path."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=cache_dir))
    try:
        np.save(tmp / "images.npy", images)
        np.save(tmp / "labels.npy", labels)
        np.savez(tmp / "transforms.npz", **transforms)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o777 & ~_umask())
        if final.exists():
            if _read_entry(final, manifest["key"]) is not None:
                return final  # a concurrent writer finished the same entry first
            shutil.rmtree(final, ignore_errors=True)  # invalid: replace it
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():  # not a concurrent writer's finished entry
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cached_datasets(root: Any = None, *, cache: Any = True) -> list[dict[str, Any]]:
    """Cache entries found for ``root``: dicts with ``path``, ``bytes`` and the manifest."""
    entries = []
    for d in _cache_dirs(root, cache, "cached_datasets"):
        if not d.is_dir():
            continue
        for path in sorted(d.iterdir()):
            manifest_path = path / "manifest.json"
            if path.name.startswith(".") or not manifest_path.is_file():
                continue
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            entries.append({"path": path, "bytes": size, **manifest})
    return entries


# --------------------------------------------------------------------------- dataset


class DistortedMNIST(Dataset):
    """A distorted-MNIST variant of a whole MNIST split; sample i is MNIST digit i, distorted.

    Yields ``(image, label)``: image float32 (C, S, S) in [0, 1] (stored as uint8, so values
    are multiples of 1/255), label an int in [0, num_classes). Models take images in [0, 1];
    normalise with ``stnkit.data.MNIST_MEAN`` / ``MNIST_STD`` inside the model if wanted.

    Args:
        variant: ``"R"``, ``"RTS"``, ``"P"``, ``"E"``, ``"T"``, ``"TC"``, ``"addition"`` or
            ``"colocalisation"`` (see :mod:`stnkit.data.distortions`).
        split: ``"train"`` or ``"test"``.
        seed: int >= 0; the same seed gives byte-identical data.
        root: MNIST data directory, ``"embedded"``, or None (``STNKIT_DATA``, else the user
            cache directory); see :func:`stnkit.data.load_mnist`.
        params: overrides of the variant's parameters, e.g. ``{"angle": (-30, 30)}``.
        cache: True (default location), False (memory only) or a directory.
        workers: generation threads (None: automatic).
        progress: progress bars for download and generation.
        offline, download: as in :func:`stnkit.data.load_mnist`.

    >>> from stnkit.data import DistortedMNIST
    >>> ds = DistortedMNIST("RTS", "test", root="embedded", cache=False, progress=False)
    >>> image, label = ds[0]
    >>> image.shape, label, round(ds.transform_params(0)["angle"], 2)
    (torch.Size([1, 42, 42]), 7, 33.05)
    """

    def __init__(self, variant: str, split: str, *, seed: int = 0, root: Any = None,
                 params: Mapping[str, Any] | None = None, cache: Any = True,
                 workers: int | None = None, progress: bool = True,
                 offline: bool | None = None, download: bool = True):
        fn = "DistortedMNIST"
        check_choice(variant, tuple(VARIANTS), name="variant", fn=fn)
        check_choice(split, SPLITS, name="split", fn=fn)
        self.seed = check_seed(seed, fn=fn)
        self.params = resolve_params(variant, params, fn=fn)
        resolve_root(root, fn=fn)
        self.variant, self.split, self.root = variant, split, root
        key = _cache_key(variant, split, self.seed, self.params, root)
        name = _entry_name(key)
        dirs = _cache_dirs(root, cache, fn)
        self.cache_path: Path | None = None
        self.from_cache = False
        for d in dirs:
            entry = _read_entry(d / name, key)
            if entry is not None:
                self.cache_path, self.from_cache = d / name, True
                break
        else:
            entry = self._build(key, name, dirs, workers, progress, offline, download, fn)
        self._images, self._labels, self._transforms, self.manifest = entry

    def _build(self, key, name, dirs, workers, progress, offline, download, fn) -> tuple:
        images, labels = load_mnist(self.split, root=self.root, offline=offline,
                                    download=download, progress=progress)
        n = len(images)
        workers = _check_workers(workers, n, fn)
        start = time.perf_counter()
        out_images, out_labels, transforms = _generate(
            self.variant, self.split, self.seed, self.params, images.numpy(), labels.numpy(),
            np.arange(n), workers, progress)
        manifest = {"key": key, "count": n, "seconds": round(time.perf_counter() - start, 3),
                    "workers": workers, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        errors = []
        for d in dirs:
            try:
                self.cache_path = _write_entry(d, name, out_images, out_labels, transforms,
                                               manifest)
                break
            except OSError as e:
                errors.append(f"{d}: {e}")
        if dirs and self.cache_path is None:
            warnings.warn(f"DistortedMNIST: could not cache {name} ({'; '.join(errors)}); "
                          "keeping it in memory only", RuntimeWarning, stacklevel=3)
        return out_images, out_labels, transforms, manifest

    # -- Dataset protocol

    def __len__(self) -> int:
        return len(self._labels)

    def _index(self, i: Any) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            if isinstance(i, Tensor) and i.dim() == 0 and not i.is_floating_point():
                i = int(i)
            else:
                fail("DistortedMNIST", "index", "an int", type(i).__name__, error=TypeError)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"DistortedMNIST: index {i} out of range for {n} samples")
        return int(i) % n

    def __getitem__(self, i: Any) -> tuple[Tensor, int]:
        i = self._index(i)
        image = torch.from_numpy(np.array(self._images[i], dtype=np.float32)).div_(255)
        return image, int(self._labels[i])

    def __getitems__(self, indices: Sequence[Any]) -> list[tuple[Tensor, int]]:
        """Batched fetch (used by ``DataLoader``): one gather for the whole batch."""
        idx = np.array([self._index(i) for i in indices], dtype=np.int64)
        images = torch.from_numpy(self._images[idx].astype(np.float32)).div_(255)
        return list(zip(images.unbind(0), self._labels[idx].tolist()))

    # -- metadata

    @property
    def num_classes(self) -> int:
        """10, or 19 for ``addition``."""
        return VARIANTS[self.variant].num_classes

    @property
    def image_size(self) -> tuple[int, int, int]:
        """(C, S, S) of every image."""
        return VARIANTS[self.variant].image_size(self.params)

    @property
    def data(self) -> Tensor:
        """All images, uint8 (N, C, S, S) (a copy in memory)."""
        return torch.from_numpy(np.array(self._images))

    @property
    def targets(self) -> Tensor:
        """All labels, int64 (N,)."""
        return torch.from_numpy(self._labels.copy())

    def transform_params(self, i: int) -> dict[str, Any]:
        """The recorded true transform of sample i (see :mod:`stnkit.data.distortions`).

        Arrays are numpy copies; scalars python numbers. Pixel coordinates have pixel centres
        at integers (OpenCV / imshow); ``theta`` is the normalised output -> input matrix
        given to ``stnkit.ops.warp`` (``src_points`` for ``E``).
        """
        i = self._index(i)
        out: dict[str, Any] = {}
        for k, v in self._transforms.items():
            x = v[i]
            out[k] = x.item() if np.ndim(x) == 0 else np.array(x)
        return out

    def __repr__(self) -> str:
        c, s, _ = self.image_size
        where = self.cache_path if self.cache_path is not None else "memory"
        return (f"DistortedMNIST(variant={self.variant!r}, split={self.split!r}, "
                f"seed={self.seed}, n={len(self)}, image=({c}, {s}, {s}), "
                f"classes={self.num_classes}, cache={str(where)!r})")

    # -- pickling (DataLoader workers): reopen the cache instead of copying the arrays

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.cache_path is not None:
            state["_images"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._images is None:
            self._images = np.load(self.cache_path / "images.npy", mmap_mode="r")
