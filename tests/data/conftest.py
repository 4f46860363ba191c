"""Fixtures for the data tests: the real MNIST folder and an isolated environment."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST files (../shared/data/mnist from the repository root)."""
    if not (REAL_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST files not found in {REAL_MNIST} (the shared data folder is "
                    "absent on this machine)")
    return REAL_MNIST


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path_factory) -> Path:
    """No STNKIT_* variables from the caller; the user cache dir is a fresh temporary one."""
    for name in ("STNKIT_DATA", "STNKIT_OFFLINE", "STNKIT_MNIST_MIRRORS"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return cache


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch) -> None:
    """Any attempt to reach a host other than 127.0.0.1 fails the test loudly."""
    import urllib.parse
    import urllib.request

    real = urllib.request.urlopen

    def guarded(url, *args, **kwargs):
        full = url.full_url if isinstance(url, urllib.request.Request) else url
        host = urllib.parse.urlsplit(full).hostname
        if host not in ("127.0.0.1", "localhost"):
            pytest.fail(f"a test tried to reach the network: {full}")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
