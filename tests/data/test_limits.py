"""Issue 12: sizes are capped at the known MNIST sizes (no decompression bomb is inflated),
and a download that cannot reach a mirror says so, from where, and what to do instead."""

from __future__ import annotations

import gzip
import socket
import tracemalloc
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest

from stnkit.data import DownloadError, MNISTFileError, download_mnist, load_mnist, read_idx
from stnkit.data.mnist import SIZES
from tests.data._helpers import http_server, idx_bytes, write_split

# what a bomb inflates to: far more than the file it poses as, though its gzip is smaller
# than the cap on compressed sizes (so that only the bounded inflation can catch it)
BOMB_BYTES = {"t10k-labels-idx1-ubyte.gz": 48 * 2**20, "t10k-images-idx3-ubyte.gz": 128 * 2**20}


def _gzip_of_zeros(n: int) -> bytes:
    """A gzip stream of ``n`` zero bytes (~1000:1), built without holding ``n`` bytes."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(2**20)
    parts = [comp.compress(block) for _ in range(n // len(block))]
    return b"".join(parts) + comp.flush()


def test_sizes_are_the_canonical_ones(mnist_dir):
    for name, size in SIZES.items():
        assert len(gzip.decompress((mnist_dir / (name + ".gz")).read_bytes())) == size, name


@pytest.mark.parametrize("name", ["t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"])
def test_a_decompression_bomb_is_refused_without_inflating_it(tmp_path, name):
    images, labels = np.zeros((10000, 28, 28), np.uint8), np.zeros(10000, np.uint8)
    write_split(tmp_path, "test", images, labels)
    bomb = _gzip_of_zeros(BOMB_BYTES[name])
    assert len(bomb) < SIZES[name.removesuffix(".gz")] + 2**16, "the bomb must pass the size cap"
    (tmp_path / name).write_bytes(bomb)
    limit = SIZES[name.removesuffix(".gz")]
    tracemalloc.start()
    try:
        with pytest.raises(MNISTFileError, match=rf"{name}: decompresses to more than {limit} "
                                                 r"bytes.*decompression bomb"):
            load_mnist("test", root=tmp_path, offline=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the bomb itself, the real images file and their inflated copies: ~2 x 7.5 MiB at most
    budget = len(bomb) + 3 * SIZES["t10k-images-idx3-ubyte"]
    assert peak < budget, f"peak {peak / 2**20:.1f} MiB: the bomb was inflated in memory"


def test_a_raw_file_larger_than_mnist_is_refused_unread(tmp_path):
    write_split(tmp_path, "test", np.zeros((10000, 28, 28), np.uint8), np.zeros(10000, np.uint8))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with open(tmp_path / "t10k-labels-idx1-ubyte", "wb") as f:  # sparse: nothing to read
        f.truncate(2**40)
    with pytest.raises(MNISTFileError, match=r"t10k-labels-idx1-ubyte: 1099511627776 bytes, "
                                             r"more than the"):
        load_mnist("test", root=tmp_path, offline=True)


def test_read_idx_caps_too(tmp_path):
    path = tmp_path / "big.idx.gz"
    path.write_bytes(_gzip_of_zeros(8 * 2**20))
    with pytest.raises(MNISTFileError, match=r"decompresses to more than 1000000 bytes"):
        read_idx(path, max_bytes=1_000_000)


@pytest.mark.parametrize("tail, match", [
    (lambda gz: gz[:-9], "corrupt gzip data .*ended before the end-of-stream"),
    (lambda gz: gz + b"junk", "corrupt gzip data .*trailing garbage"),
])
def test_damaged_gzip_streams(tmp_path, tail, match):
    path = tmp_path / "a.idx.gz"
    path.write_bytes(tail(gzip.compress(idx_bytes(np.arange(10, dtype=np.uint8)))))
    with pytest.raises(MNISTFileError, match=match):
        read_idx(path)


def test_several_gzip_members_and_zero_padding_still_read(tmp_path):
    data = idx_bytes(np.arange(100, dtype=np.uint8))
    path = tmp_path / "a.idx.gz"
    path.write_bytes(gzip.compress(data[:50]) + gzip.compress(data[50:]) + bytes(16))
    assert read_idx(path).tolist() == list(range(100))


def test_an_oversized_download_is_refused(tmp_path, mnist_dir):
    served = tmp_path / "mirror"
    served.mkdir()
    (served / "t10k-images-idx3-ubyte.gz").write_bytes(
        (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(np.random.default_rng(0).bytes(200_000))
    with http_server(served) as (url, _):
        with pytest.raises(DownloadError, match=r"the server announces \d+ bytes, more than the "
                                                r"75544 a gzip of t10k-labels-idx1-ubyte.gz"):
            download_mnist(tmp_path / "data", splits=["test"], mirrors=[url], progress=False)
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz"]  # the good file is kept, nothing of the bad one


def _no_dns(request, *args, **kwargs):
    raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))


def test_no_network_says_the_download_failed_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_dns)
    with pytest.raises(DownloadError) as info:
        load_mnist("train", root=tmp_path, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "cannot write" not in msg, msg
    dest = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    assert msg.startswith(f"download_mnist: {dest}: download failed: no mirror delivered"), msg
    assert ("https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz: download "
            "failed ([Errno -2] Name or service not known)") in msg, msg
    assert f"`stnkit data download --data-dir {tmp_path}`" in msg and "--data-dir embedded" in msg
    assert not list((tmp_path / "mnist").iterdir()), "a failed download left files behind"


def test_connection_refused_is_a_download_failure_too(tmp_path):
    with pytest.raises(DownloadError, match=r"http://127.0.0.1:1/t10k-images-idx3-ubyte.gz: "
                                            r"download failed \(.*refused"):
        download_mnist(tmp_path, splits=["test"], mirrors=["http://127.0.0.1:1/"],
                       progress=False, timeout=5)


def test_an_unwritable_target_is_not_blamed_on_the_mirror(tmp_path, mnist_dir, monkeypatch):
    target = tmp_path / "data"
    (target / "mnist").mkdir(parents=True)
    import stnkit._io as io

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "_fsync_file", no_space)
    with http_server(mnist_dir) as (url, requests):
        with pytest.raises(OSError, match=r"cannot write .*t10k-images-idx3-ubyte.gz.*No space"):
            download_mnist(target, splits=["test"], mirrors=[url, url], progress=False)
    assert len(requests) == 1, "a local write error must not be retried on other mirrors"
