"""The downloader, end to end against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import shutil
import urllib.request

import pytest
import torch

from stnkit.data import DownloadError, MNISTFileError, download_mnist, load_mnist, mnist_mirrors
from stnkit.data.mnist import MIRRORS
from tests.data._helpers import http_server

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture
def corrupt_dir(mnist_dir, tmp_path):
    """A mirror whose test labels gunzip fine but have one label changed (wrong md5), and
    whose test images are a truncated gzip stream."""
    d = tmp_path / "corrupt"
    d.mkdir()
    labels = bytearray(gzip.decompress((mnist_dir / TEST_FILES[1]).read_bytes()))
    labels[100] = (labels[100] + 1) % 10
    (d / TEST_FILES[1]).write_bytes(gzip.compress(bytes(labels)))
    (d / TEST_FILES[0]).write_bytes((mnist_dir / TEST_FILES[0]).read_bytes()[:50_000])
    return d


def _listing(directory):
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


def test_download_end_to_end(mnist_dir, tmp_path):
    target = tmp_path / "data"
    with http_server(mnist_dir) as (url, requests):
        out = download_mnist(target, splits=["test"], mirrors=[url], progress=False)
    assert out == target / "mnist"
    assert sorted(requests) == sorted("/" + f for f in TEST_FILES)
    assert _listing(target) == ["mnist", *TEST_FILES]  # nothing else, no temporary files
    for name in TEST_FILES:  # the verified bytes are kept as served
        assert (out / name).read_bytes() == (mnist_dir / name).read_bytes()
    x, y = load_mnist("test", root=target, offline=True)
    real_x, real_y = load_mnist("test", root=mnist_dir)
    assert torch.equal(x, real_x) and torch.equal(y, real_y)


def test_load_mnist_downloads_missing_files_from_env_mirror(mnist_dir, tmp_path, monkeypatch,
                                                            capsys):
    with http_server(mnist_dir) as (url, requests):
        monkeypatch.setenv("STNKIT_MNIST_MIRRORS", url)
        x, y = load_mnist("test", root=tmp_path, progress=True)
        assert len(x) == 10000 and len(requests) == 2
        load_mnist("test", root=tmp_path)  # now present: no second download
        assert len(requests) == 2
        download_mnist(tmp_path, splits=("test",))  # present and valid: nothing fetched
        assert len(requests) == 2


def test_corrupt_download_is_rejected_and_not_kept(corrupt_dir, tmp_path):
    target = tmp_path / "data"
    with http_server(corrupt_dir) as (url, requests):
        with pytest.raises(DownloadError) as info:
            download_mnist(target, splits=["test"], mirrors=[url], progress=False)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "corrupt gzip" in message
    assert "STNKIT_MNIST_MIRRORS" in message  # says how to fix
    assert requests == ["/" + TEST_FILES[0]]  # stops at the first file that cannot be had
    assert _listing(target) == ["mnist"], "a rejected download left files behind"


def test_checksum_mismatch_download_is_rejected(corrupt_dir, mnist_dir, tmp_path):
    (corrupt_dir / TEST_FILES[0]).unlink()
    shutil.copy(mnist_dir / TEST_FILES[0], corrupt_dir)  # good images, bad labels
    with http_server(corrupt_dir) as (url, _):
        with pytest.raises(DownloadError, match=r"t10k-labels-idx1-ubyte.gz: checksum "
                                                r"mismatch: md5 of the decompressed content"):
            download_mnist(tmp_path, splits=["test"], mirrors=[url], progress=False)
    assert _listing(tmp_path / "mnist") == [TEST_FILES[0]]  # the good file only


def test_next_mirror_is_tried_after_a_bad_or_missing_one(corrupt_dir, mnist_dir, tmp_path):
    with http_server(corrupt_dir) as (bad, bad_requests), \
            http_server(mnist_dir) as (good, good_requests):
        missing = good + "no/such/folder/"
        download_mnist(tmp_path, splits=["test"], mirrors=[bad, missing, good], progress=False)
    assert bad_requests == ["/" + f for f in TEST_FILES]
    assert good_requests == [p for f in TEST_FILES for p in ("/no/such/folder/" + f, "/" + f)]
    assert _listing(tmp_path / "mnist") == list(TEST_FILES)
    load_mnist("test", root=tmp_path, offline=True)


def test_offline_never_touches_the_network(mnist_dir, tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise AssertionError("offline mode opened a URL")

    with http_server(mnist_dir) as (url, requests):
        monkeypatch.setattr(urllib.request, "urlopen", explode)
        monkeypatch.setenv("STNKIT_MNIST_MIRRORS", url)
        with pytest.raises(FileNotFoundError, match="offline mode"):
            load_mnist("test", root=tmp_path, offline=True)
        with pytest.raises(DownloadError, match=r"offline mode .* forbids downloading"):
            download_mnist(tmp_path, offline=True)
        monkeypatch.setenv("STNKIT_OFFLINE", "1")
        with pytest.raises(FileNotFoundError, match="offline mode"):
            load_mnist("train", root=tmp_path)
        with pytest.raises(DownloadError, match="offline mode"):
            download_mnist(tmp_path)
    assert requests == []
    assert not (tmp_path / "mnist").exists()


def test_existing_invalid_file_that_would_shadow_the_download(mnist_dir, tmp_path):
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    with http_server(mnist_dir) as (url, requests):
        with pytest.raises(MNISTFileError, match=r"t10k-labels-idx1-ubyte: is not a valid copy.*"
                                                 r"delete it"):
            download_mnist(tmp_path, splits=["test"], mirrors=[url], progress=False)
    assert requests == []


def test_mirror_list():
    assert mnist_mirrors() == MIRRORS
    assert all(m.startswith("https://") and m.endswith("/") for m in MIRRORS)
    assert mnist_mirrors(["http://127.0.0.1:1/a"]) == ("http://127.0.0.1:1/a/",)
    with pytest.raises(ValueError, match=r"mnist_mirrors: expected mirrors URLs starting with "
                                         r"http://, https:// or file://, got 'ftp://x/'"):
        mnist_mirrors(["ftp://x/"])
    with pytest.raises(TypeError, match=r"expected mirrors a sequence of URL strings, got str"):
        mnist_mirrors("http://127.0.0.1/")
    with pytest.raises(ValueError, match=r"expected root a directory"):
        download_mnist("embedded")


def test_mirror_list_from_environment(monkeypatch):
    monkeypatch.setenv("STNKIT_MNIST_MIRRORS", "http://127.0.0.1:1/a, http://127.0.0.1:2/b/")
    assert mnist_mirrors() == ("http://127.0.0.1:1/a/", "http://127.0.0.1:2/b/")
