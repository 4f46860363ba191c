"""Helpers for the data tests: IDX writers and a local HTTP server."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """IDX encoding: 0x00 0x00 <type> <ndim>, big-endian uint32 sizes, big-endian data."""
    dtypes = {0x08: ">u1", 0x0D: ">f4"}
    header = bytes([0, 0, type_code, array.ndim])
    header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=dtypes[type_code]).tobytes()


def write_split(directory: Path, split: str, images: np.ndarray, labels: np.ndarray, *,
                gz: bool = True) -> tuple[Path, Path]:
    """Write images/labels as the MNIST files of ``split`` into ``directory``."""
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in zip(names, (images, labels)):
        data = idx_bytes(np.asarray(array, dtype=np.uint8))
        path = directory / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    return paths[0], paths[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):  # noqa: N802 - the base class's name
        self.requests.append(self.path)
        super().do_GET()


@contextmanager
def http_server(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``directory`` on 127.0.0.1 (free port) in a thread; yields (base URL, requests).

    Always shut down and joined on exit.
    """
    requests: list[str] = []

    class Handler(_QuietHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

    Handler.requests = requests
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
