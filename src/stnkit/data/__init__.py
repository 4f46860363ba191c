"""MNIST and the paper's distorted-MNIST datasets, generated deterministically.

- :func:`load_mnist` reads MNIST (IDX, raw or gzipped; md5-verified; downloaded when missing
  unless offline), or the subset shipped inside the package with ``root="embedded"``.
- :class:`DistortedMNIST` is a ``torch.utils.data.Dataset`` of one of :data:`VARIANTS`
  (``R``, ``RTS``, ``P``, ``E``, ``T``, ``TC``, ``addition``, ``colocalisation``), generated
  with :func:`stnkit.ops.warp`, cached on disk, with the true transform of every sample.
- Data directory: ``root`` / ``--data-dir``, else ``STNKIT_DATA``, else the user cache.

Images are in [0, 1]; :data:`MNIST_MEAN` and :data:`MNIST_STD` are the training-set
statistics for whoever wants to normalise.
"""

from stnkit.data.datasets import CHUNK, DistortedMNIST, cached_datasets, generate
from stnkit.data.distortions import (
    GENERATOR_VERSION,
    VARIANTS,
    Variant,
    distort,
    ink_boxes,
    resolve_params,
    sample_rng,
)
from stnkit.data.mnist import (
    FILES,
    MD5,
    MIRRORS,
    MNIST_MEAN,
    MNIST_STD,
    SPLITS,
    ChecksumError,
    DownloadError,
    MNISTFileError,
    MNISTNotFoundError,
    download_mnist,
    embedded_manifest,
    find_mnist_files,
    load_mnist,
    mnist_mirrors,
    read_idx,
    source_md5,
)
from stnkit.data.paths import (
    DATA_ENV,
    EMBEDDED,
    MIRRORS_ENV,
    OFFLINE_ENV,
    default_data_dir,
    is_offline,
    resolve_root,
    user_cache_dir,
)

__all__ = [
    "CHUNK",
    "ChecksumError",
    "DATA_ENV",
    "DistortedMNIST",
    "DownloadError",
    "EMBEDDED",
    "FILES",
    "GENERATOR_VERSION",
    "MD5",
    "MIRRORS",
    "MIRRORS_ENV",
    "MNISTFileError",
    "MNISTNotFoundError",
    "MNIST_MEAN",
    "MNIST_STD",
    "OFFLINE_ENV",
    "SPLITS",
    "VARIANTS",
    "Variant",
    "cached_datasets",
    "default_data_dir",
    "distort",
    "download_mnist",
    "embedded_manifest",
    "find_mnist_files",
    "generate",
    "ink_boxes",
    "is_offline",
    "load_mnist",
    "mnist_mirrors",
    "read_idx",
    "resolve_params",
    "resolve_root",
    "sample_rng",
    "source_md5",
    "user_cache_dir",
]
