"""MNIST reader: the real files, the embedded subset, data-directory resolution, errors."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from stnkit.data import (
    EMBEDDED,
    MNIST_MEAN,
    MNIST_STD,
    ChecksumError,
    MNISTFileError,
    default_data_dir,
    embedded_manifest,
    find_mnist_files,
    load_mnist,
    read_idx,
    resolve_root,
)
from stnkit.data import mnist as mnist_module
from tests.data._helpers import idx_bytes, write_split


def _digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


# --------------------------------------------------------------------------- real data


def test_real_mnist_shapes_counts_and_statistics(mnist_dir):
    train_x, train_y = load_mnist("train", root=mnist_dir, download=False)
    test_x, test_y = load_mnist("test", root=str(mnist_dir), download=False)
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == torch.uint8
    assert train_y.shape == (60000,) and train_y.dtype == torch.int64
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
    # the README's sanity figures
    assert int((train_y == 0).sum()) == 5923 and int((test_y == 0).sum()) == 980
    # exact statistics of the pixels / 255 from their histogram
    counts = np.bincount(train_x.numpy().ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert abs(mean - MNIST_MEAN) < 5e-5 and abs(std - MNIST_STD) < 5e-5, (mean, std)


def test_raw_files_read_like_gzipped(mnist_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((mnist_dir / (name + ".gz")).read_bytes()))
    raw = load_mnist("test", root=tmp_path, download=False)
    gz = load_mnist("test", root=mnist_dir, download=False)
    assert torch.equal(raw[0], gz[0]) and torch.equal(raw[1], gz[1])


def test_embedded_subset_is_the_first_real_digits(mnist_dir):
    manifest = embedded_manifest()["files"]
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = load_mnist(split, root=EMBEDDED)
        real_x, real_y = load_mnist(split, root=mnist_dir, download=False)
        n = manifest[f"{prefix}-images-idx3-ubyte.gz"]["count"]
        assert len(x) == len(y) == n
        assert torch.equal(x, real_x[:n]) and torch.equal(y, real_y[:n])


def test_embedded_subset_script_reproduces_the_shipped_bytes(mnist_dir, tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_embedded_mnist.py"
    spec = importlib.util.spec_from_file_location("make_embedded_mnist", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--source", str(mnist_dir), "--out", str(tmp_path)]) == 0
    shipped = Path(mnist_module.__file__).parent / "_embedded"
    names = sorted(p.name for p in shipped.iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in tmp_path.iterdir())
    for name in names:
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes(), name


# --------------------------------------------------------------------------- embedded


def test_embedded_loads_without_any_data_directory():
    x, y = load_mnist("test", root="embedded", offline=True)
    assert x.dtype == torch.uint8 and x.ndim == 3 and x.shape[1:] == (28, 28)
    assert y.dtype == torch.int64 and y.shape == (len(x),)
    assert 1000 <= len(x) and set(y.tolist()) == set(range(10))
    x_train, _ = load_mnist("train", root="embedded")
    assert len(x_train) >= 5000


def test_embedded_package_data_stays_small():
    shipped = mnist_module._embedded_dir()
    total = sum(shipped.joinpath(n).stat().st_size if hasattr(shipped.joinpath(n), "stat")
                else len(shipped.joinpath(n).read_bytes()) for n in embedded_manifest()["files"])
    assert total < 2_000_000, total


def test_embedded_checksum_is_verified(monkeypatch):
    manifest = embedded_manifest()
    manifest["files"]["t10k-labels-idx1-ubyte.gz"]["md5"] = "0" * 32
    monkeypatch.setattr(mnist_module, "embedded_manifest", lambda: manifest)
    with pytest.raises(ChecksumError, match=r"t10k-labels.*expected 0{32}.*reinstall stnkit"):
        load_mnist("test", root="embedded")


# --------------------------------------------------------------------------- data dir


def test_root_resolution_order(monkeypatch, tmp_path, isolated_env):
    assert resolve_root(None) == default_data_dir()
    assert str(default_data_dir()).startswith(str(isolated_env))  # platformdirs user cache
    monkeypatch.setenv("STNKIT_DATA", str(tmp_path / "env"))
    assert resolve_root(None) == tmp_path / "env"
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_root("embedded") == EMBEDDED
    monkeypatch.setenv("STNKIT_DATA", "embedded")
    assert resolve_root(None) == EMBEDDED


def test_root_from_environment_is_used_by_load_mnist(monkeypatch, tmp_path):
    images, labels = _digits(3)
    write_split(tmp_path / "mnist", "test", images, labels)
    monkeypatch.setenv("STNKIT_DATA", str(tmp_path))
    found = find_mnist_files("test")
    assert found["t10k-images-idx3-ubyte"] == tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    # the files are found (and then rejected: they are not MNIST)
    with pytest.raises(ChecksumError):
        load_mnist("test", offline=True)


@pytest.mark.parametrize("sub", ["", "mnist", "MNIST/raw"])
def test_files_are_found_in_each_search_directory(tmp_path, sub):
    images, labels = _digits(2)
    write_split(tmp_path / sub, "train", images, labels, gz=False)
    found = find_mnist_files("train", tmp_path)
    assert found["train-images-idx3-ubyte"] == tmp_path / sub / "train-images-idx3-ubyte"


# --------------------------------------------------------------------------- errors


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist("test", root=tmp_path, offline=True)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte[.gz]" in message and "offline" in message
    assert str(tmp_path) in message and str(tmp_path / "mnist") in message
    assert "stnkit data download" in message and "embedded" in message


def test_missing_files_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"download=False.*looked in"):
        load_mnist("train", root=tmp_path, download=False)


def test_offline_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STNKIT_OFFLINE", "1")
    monkeypatch.setenv("STNKIT_MNIST_MIRRORS", "http://127.0.0.1:9/never/")
    with pytest.raises(FileNotFoundError, match="offline mode"):
        load_mnist("test", root=tmp_path)


def test_wrong_magic_number(tmp_path):
    images, labels = _digits(4)
    img_path, lbl_path = write_split(tmp_path, "test", images, labels)
    shutil.copy(lbl_path, img_path)  # a label file under the image file's name
    with pytest.raises(MNISTFileError,
                       match=r"t10k-images-idx3-ubyte.gz: wrong magic number 0x00000801, "
                             r"expected 0x00000803"):
        load_mnist("test", root=tmp_path, offline=True)


def test_not_idx_at_all(tmp_path):
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"<html>not found</html>")
    images, labels = _digits(4)
    write_split(tmp_path, "test", images, labels)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MNISTFileError, match=r"wrong magic number 0x3c68746d"):
        load_mnist("test", root=tmp_path, offline=True)


def test_truncated_file(tmp_path):
    images, labels = _digits(4)
    img_path, _ = write_split(tmp_path, "test", images, labels, gz=False)
    img_path.write_bytes(img_path.read_bytes()[:-100])
    with pytest.raises(MNISTFileError, match=r"truncated: the header promises shape "
                                             r"\(4, 28, 28\) \(3152 bytes\) but the file "
                                             r"holds 3052 bytes"):
        load_mnist("test", root=tmp_path, offline=True)


def test_truncated_header(tmp_path):
    images, labels = _digits(4)
    _, lbl_path = write_split(tmp_path, "test", images, labels, gz=False)
    lbl_path.write_bytes(lbl_path.read_bytes()[:6])
    with pytest.raises(MNISTFileError, match=r"truncated: 6 bytes, shorter than its 8-byte"):
        load_mnist("test", root=tmp_path, offline=True)


def test_corrupt_gzip(tmp_path):
    images, labels = _digits(4)
    img_path, _ = write_split(tmp_path, "test", images, labels)
    img_path.write_bytes(img_path.read_bytes()[:-20])
    with pytest.raises(MNISTFileError, match=r"corrupt gzip data"):
        load_mnist("test", root=tmp_path, offline=True)


def test_image_label_count_mismatch(tmp_path):
    images, labels = _digits(5)
    write_split(tmp_path, "train", images, labels[:4])
    with pytest.raises(MNISTFileError, match=r"holds 5 images but .*train-labels-idx1-ubyte.gz "
                                             r"holds 4 labels"):
        load_mnist("train", root=tmp_path, offline=True)


def test_checksum_mismatch(tmp_path):
    images, labels = _digits(10000)
    write_split(tmp_path, "test", images, labels)
    expected = mnist_module.MD5["t10k-images-idx3-ubyte"]
    with pytest.raises(ChecksumError, match=rf"t10k-images-idx3-ubyte.gz: checksum mismatch"
                                            rf".*expected {expected}.*stnkit data download"):
        load_mnist("test", root=tmp_path, offline=True)


def test_checksum_mismatch_of_one_flipped_pixel(mnist_dir, tmp_path):
    data = bytearray(gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()))
    data[5000] ^= 0xFF
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(bytes(data))
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte: checksum mismatch: md5 of the decompressed"):
        load_mnist("test", root=tmp_path, offline=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"load_mnist: expected split one of 'train', 'test', "
                                         r"got 'val'"):
        load_mnist("val", root="embedded")
    with pytest.raises(TypeError, match=r"load_mnist: expected root None, 'embedded' or a "
                                        r"directory path.*got int"):
        load_mnist("test", root=3)
    with pytest.raises(TypeError, match=r"load_mnist: expected offline a bool or None, got str"):
        load_mnist("test", root="embedded", offline="yes")


# --------------------------------------------------------------------------- read_idx


def test_read_idx_any_type(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    (tmp_path / "x.idx").write_bytes(idx_bytes(values, 0x0D))
    out = read_idx(tmp_path / "x.idx")
    assert out.dtype == np.float32 and out.dtype.isnative and np.array_equal(out, values)
    (tmp_path / "y.idx.gz").write_bytes(gzip.compress(idx_bytes(values, 0x0D)))
    assert np.array_equal(read_idx(str(tmp_path / "y.idx.gz")), values)
    (tmp_path / "bad.idx").write_bytes(b"\x00\x00\x07\x01" + b"\x00" * 8)
    with pytest.raises(MNISTFileError, match=r"wrong magic number 0x00000701"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "long.idx").write_bytes(idx_bytes(values, 0x0D) + b"\x00")
    with pytest.raises(MNISTFileError, match=r"1 unexpected bytes after"):
        read_idx(tmp_path / "long.idx")
    with pytest.raises(TypeError, match=r"read_idx: expected path a str or os.PathLike, got int"):
        read_idx(3)
