"""Process-wide set-up shared by the Numba kernels: threading layer, thread count, caching,
the first-compile note and the launch lock.

- Threading layer: Numba's threading layer is process-wide, so importing stnkit leaves it
  alone. The first launch of a stnkit kernel (:func:`launch`) selects ``"workqueue"``
  (Numba's own pthread pool), logged at INFO on the ``stnkit.kernels`` logger, unless the
  user chose a layer (``NUMBA_THREADING_LAYER``) or Numba already started one (then that one
  is used). Workqueue links no OpenMP runtime, so it cannot clash with PyTorch's OpenMP, and
  it is fork-safe (DataLoader workers). It is not re-entrant, so every launch goes through
  :data:`LOCK` (concurrent Python threads take turns; each launch itself uses all threads).
  To keep Numba's default choice, set ``NUMBA_THREADING_LAYER=default`` (or any layer).
- Threads: every launch uses ``torch.get_num_threads()`` threads (capped at Numba's pool size).
- Caching: kernels are compiled with ``cache=True`` (next to the source, or Numba's per-user
  cache dir when the package directory is read-only). Where no cache directory can be written,
  they are compiled without a disk cache (every new process compiles again).
- First use: compiling a kernel set takes seconds; a one-line note goes to stderr when a
  launch has not returned after :data:`NOTE_AFTER_S` seconds on its first call in a process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import numba
import torch

__all__ = ["LOCK", "NOTE_AFTER_S", "jit", "launch", "pin_threading_layer", "threading_layer"]

log = logging.getLogger("stnkit.kernels")

NOTE_AFTER_S = 1.0
LOCK = threading.RLock()

_OPTIONS = {"nogil": True, "fastmath": False, "error_model": "numpy", "boundscheck": False}


def pin_threading_layer() -> None:
    """Select "workqueue" as :func:`launch` does before the first kernel (see the module
    docstring); callable earlier by code that wants the layer fixed up front."""
    from numba.np.ufunc import parallel

    if "NUMBA_THREADING_LAYER" in os.environ or parallel._is_initialized:
        return  # the user's choice, or another library already started a layer
    if numba.config.THREADING_LAYER != "workqueue":
        log.info("selecting Numba's 'workqueue' threading layer for stnkit's kernels "
                 "(set NUMBA_THREADING_LAYER to choose another)")
        numba.config.THREADING_LAYER = "workqueue"


def jit(*, parallel: bool = False, reassoc: bool = False):
    """``numba.njit`` with the project's options, ``cache=True`` where a cache dir is writable.

    ``reassoc``: allow reassociating floating-point sums (only that fast-math flag), for
    reductions that should vectorise; the order is still fixed at compile time.

    Helpers called from the kernels are plain ``jit`` functions: LLVM inlines them (Numba's
    own ``inline="always"`` gave the same speed at twice the compile time).
    """

    def wrap(fn):
        opts = dict(_OPTIONS, parallel=parallel)
        if reassoc:
            opts["fastmath"] = {"reassoc"}
        try:
            return numba.njit(cache=True, **opts)(fn)
        except RuntimeError as e:  # "cannot cache function ...: no locator available"
            log.info("numba cache unavailable for %s (%s); compiling without it",
                     fn.__qualname__, e)
            return numba.njit(cache=False, **opts)(fn)

    return wrap


_seen: set = set()


def _note(what: str) -> None:
    print(f"stnkit: compiling the numba {what} kernel (first use; cached on disk afterwards)...",
          file=sys.stderr, flush=True)


def launch(kernel, what: str, *args):
    """Run ``kernel(*args)`` under the lock with torch's thread count.

    ``what`` names the kernel for the first-compile note ("2-D forward float32", ...).
    """
    with LOCK:
        if not _seen:
            pin_threading_layer()
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        if what in _seen:
            return kernel(*args)
        timer = threading.Timer(NOTE_AFTER_S, _note, (what,))
        timer.daemon = True
        timer.start()
        try:
            return kernel(*args)
        finally:
            timer.cancel()
            _seen.add(what)


def threading_layer() -> str | None:
    """The threading layer Numba uses (None before the first parallel launch)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None
