"""numba_cpu runtime: threading layer next to torch's OpenMP, fork, threads, the first-compile
note, and the disk cache (including its fallback)."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numba
import pytest

from stnkit.ops.kernels import _numba_runtime as rt

SRC = Path(__file__).resolve().parents[3] / "src"

_TORCH_AND_NUMBA = textwrap.dedent("""
    import multiprocessing as mp
    import threading

    import numba
    import torch
    from stnkit.ops import warp

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 40, 50, generator=g)
    theta = torch.eye(2, 3) + 0.2 * torch.randn(4, 2, 3, generator=g)
    ref = warp(x, theta, backend="torch")

    def check(tag):
        a = torch.randn(300, 300) @ torch.randn(300, 300)  # torch's OpenMP pool
        out = warp(x, theta, backend="numba")
        b = torch.randn(300, 300) @ torch.randn(300, 300)
        err = (out - ref).abs().max().item()
        assert err < 1e-4 and torch.isfinite(a).all() and torch.isfinite(b).all(), (tag, err)

    check("parent")
    print("layer", numba.threading_layer(), flush=True)

    def child():
        # like a DataLoader worker: torch's OpenMP is not fork-safe, so torch runs on one
        # thread there; the numba pool (workqueue) must work with all its threads.
        torch.set_num_threads(1)
        check("child")
        from stnkit.ops.kernels import _numba_2d
        numba.set_num_threads(2)
        out = torch.empty(4, 3, 40 * 50)
        _numba_2d.forward(x.reshape(4, 3, -1).numpy(), 40, 50, theta_cf, out.numpy(), 40, 50,
                          False, 0, 0, False, 2**31 - 1, 512, 16)
        assert (out.reshape(ref.shape) - ref).abs().max().item() < 1e-4

    from stnkit.ops.kernels import numba_cpu
    from stnkit.ops.kernels._geometry import axis_coefficients
    axes = [axis_coefficients(50, 50, False), axis_coefficients(40, 40, False)]
    theta_cf = numba_cpu._coefficients(theta.double().numpy(), False, axes).astype("float32")
    ctx = mp.get_context("fork")  # a DataLoader worker after the parent used both pools
    p = ctx.Process(target=child)
    p.start()
    p.join(120)
    assert p.exitcode == 0, f"forked child exit code {p.exitcode}"

    errors = []
    def worker(i):
        try:
            for _ in range(5):
                check(f"thread {i}")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    [t.start() for t in ts]
    [t.join(120) for t in ts]
    assert not errors, errors
    print("ok", flush=True)
""")


def _run(code, env=None, timeout=300):
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=timeout, check=False)


def test_torch_and_numba_share_a_process():
    """Both thread pools in one process, a fork after both ran, concurrent Python threads."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    r = subprocess.run([sys.executable, "-c", _TORCH_AND_NUMBA], capture_output=True,
                       text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "layer workqueue" in r.stdout and "ok" in r.stdout, r.stdout


def test_user_threading_layer_is_respected():
    r = _run("import numba, stnkit.ops.kernels.numba_cpu; print(numba.config.THREADING_LAYER)",
             env={"NUMBA_THREADING_LAYER": "omp"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "omp"


def test_first_compile_note(monkeypatch, capsys):
    monkeypatch.setattr(rt, "NOTE_AFTER_S", 0.01)
    slow = lambda v: (time.sleep(0.3), v)[1]
    assert rt.launch(slow, "test-only kernel", 5) == 5
    err = capsys.readouterr().err
    assert "stnkit: compiling the numba test-only kernel" in err
    assert rt.launch(slow, "test-only kernel", 6) == 6  # once per kernel and process
    assert capsys.readouterr().err == ""
    assert rt.launch(lambda: 1, "fast test-only kernel") == 1  # quick: no note
    assert capsys.readouterr().err == ""


def test_cache_fallback(monkeypatch):
    """No writable cache directory: compile without the disk cache instead of failing."""
    real = numba.njit
    calls = []

    def njit(*args, cache=False, **kw):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(*args, cache=cache, **kw)

    monkeypatch.setattr(numba, "njit", njit)

    def f(a):
        return a + 1

    assert rt.jit()(f)(1) == 2
    assert calls[:2] == [True, False]  # (numba itself calls njit while compiling)


@pytest.mark.slow
def test_cache_from_an_installed_copy(tmp_path):
    """A copy of the package outside the repo (as pip installs it) writes its cache and
    loads it in the next process."""
    site = tmp_path / "site"
    shutil.copytree(SRC / "stnkit", site / "stnkit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    code = textwrap.dedent(f"""
        import torch
        import stnkit.ops.kernels.numba_cpu as K
        from stnkit.ops.kernels import _numba_2d
        assert K.__file__.startswith({str(site)!r}), K.__file__
        x = torch.rand(1, 1, 5, 6, dtype=torch.float64)
        K.warp(x, torch.eye(2, 3, dtype=torch.float64)[None], transform="affine", size=(5, 6),
               mode="bilinear", padding_mode="zeros", align_corners=False,
               deterministic=False)
        print("hits", _numba_2d.forward.stats.cache_hits)
    """)
    env = {"PYTHONPATH": str(site)}
    first = _run(code, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert list((site / "stnkit" / "ops" / "kernels" / "__pycache__").glob("*.nbi"))
    second = _run(code, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "hits 0" not in second.stdout and "compiling" not in second.stderr, second.stdout
