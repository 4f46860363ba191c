"""Where the numba warp's time goes: its forward and backward against a gather floor.

    python benchmarks/warp_profile.py                 # 1 thread, the shapes of warp.py
    python benchmarks/warp_profile.py --threads 2 --shapes 256,1,60,60

For each shape (float32, bilinear, zeros padding, the random transforms of ``warp.py``) it
times, through ``stnkit.ops.warp(backend="numba")``:

- fwd: the forward (output allocation and Python included);
- bwd theta / bwd input / bwd both: fwd+bwd minus fwd, with gradients for theta only, for
  the input only, or for both;
- PyTorch fwd+bwd (``affine_grid`` + ``grid_sample``, both gradients), for scale;

and the *gather floor*: as many channel-samples through the innermost loop alone -- 4 (3-D:
8) loads of input, the weighted sum and 1 store per channel-sample, with offsets and weights
precomputed and every array in L1. A fused forward does at least that much work, so
fwd / floor is what everything else costs: source coordinates and weights, cache misses,
the output's first touch, the parallel launch. Numbers are ns per channel-sample per thread
(time x threads / (B * C * output pixels)); medians of interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numba
import numpy as np
import torch
import torch.nn.functional as F

from warp import SHAPES, _theta, _time, environment_lines  # the CPU benchmark (same folder)

from stnkit.ops import warp

N_FLOOR = 4096  # channel-samples per pass of the floor loop (offsets, weights, out: 64 KiB)


@numba.njit(nogil=True, error_model="numpy", boundscheck=False)
def _gather4(plane, off, w, out, passes):
    W = np.uint32(64)
    for _ in range(passes):
        for k in range(np.uint64(off.size)):
            o = off[k]
            out[k] = (w[k, 0] * plane[o] + w[k, 1] * plane[o + np.uint32(1)]
                      + w[k, 2] * plane[o + W] + w[k, 3] * plane[o + W + np.uint32(1)])


@numba.njit(nogil=True, error_model="numpy", boundscheck=False)
def _gather8(plane, off, w, out, passes):
    W = np.uint32(16)
    S = np.uint32(256)
    for _ in range(passes):
        for k in range(np.uint64(off.size)):
            o = off[k]
            out[k] = (w[k, 0] * plane[o] + w[k, 1] * plane[o + np.uint32(1)]
                      + w[k, 2] * plane[o + W] + w[k, 3] * plane[o + W + np.uint32(1)]
                      + w[k, 4] * plane[o + S] + w[k, 5] * plane[o + S + np.uint32(1)]
                      + w[k, 6] * plane[o + S + W] + w[k, 7] * plane[o + S + W + np.uint32(1)])


def _floor_ns(taps: int) -> float:
    """ns per channel-sample of the floor loop (one thread, L1-resident data)."""
    rng = np.random.default_rng(0)
    plane = rng.random(4096, dtype=np.float32)  # 64 x 64, or 16 x 16 x 16
    span = 4096 - 64 - 2 if taps == 4 else 4096 - 256 - 16 - 2
    off = rng.integers(0, span, N_FLOOR).astype(np.uint32)
    w = rng.random((N_FLOOR, taps), dtype=np.float32)
    out = np.empty(N_FLOOR, np.float32)
    kernel = _gather4 if taps == 4 else _gather8
    kernel(plane, off, w, out, 1)  # compile
    passes = 200
    return _time(lambda: kernel(plane, off, w, out, passes)) / (passes * N_FLOOR) * 1e9


def _cases(shape):
    """name -> call, for one shape."""
    x = torch.rand(shape)
    theta = _theta(shape)
    g = torch.randn(shape)

    def fwd():
        with torch.no_grad():
            warp(x, theta, backend="numba")

    def fwd_bwd(need_x, need_theta):
        xi = x.clone().requires_grad_(need_x)
        ti = theta.clone().requires_grad_(need_theta)

        def call():
            # no accumulation into .grad: that would be a torch (OpenMP) op between our
            # launches, whose spinning workers take a core from the next one for ms
            xi.grad = ti.grad = None
            warp(xi, ti, backend="numba").backward(g)
        return call

    xp, tp = x.clone().requires_grad_(), theta.clone().requires_grad_()

    def pytorch():
        xp.grad = tp.grad = None
        grid = F.affine_grid(tp, list(shape), align_corners=False)
        F.grid_sample(xp, grid, align_corners=False).backward(g)

    return {"fwd": fwd, "theta": fwd_bwd(False, True), "input": fwd_bwd(True, False),
            "both": fwd_bwd(True, True), "pytorch": pytorch}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch / numba threads (default 1)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--shapes", nargs="+", default=None, metavar="B,C,H,W",
                   help="shapes to run (default: those of warp.py)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    shapes = SHAPES if args.shapes is None else \
        [tuple(int(v) for v in s.split(",")) for s in args.shapes]

    print("# stnkit warp profile (numba backend)\n")
    print("\n".join(environment_lines(threads, opencv=False)))
    floors = {4: _floor_ns(4), 8: _floor_ns(8)}
    print(f"- gather floor, 1 thread: {floors[4]:.2f} ns (4 taps), {floors[8]:.2f} ns (8 taps) "
          f"per channel-sample")
    print(f"- ns per channel-sample per thread; median of {args.rounds} interleaved rounds\n")
    print("| shape | floor | fwd | fwd / floor | bwd theta | bwd input | bwd both | "
          "PyTorch fwd+bwd |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        cases = _cases(shape)
        for call in cases.values():
            call()  # warm-up (numba compiles or loads its cache)
        times = {k: [] for k in cases}
        for _ in range(args.rounds):
            for k, call in cases.items():
                times[k].append(_time(call))
        ns = {k: statistics.median(v) * threads * 1e9 / np.prod(shape)
              for k, v in times.items()}
        floor = floors[4 if len(shape) == 4 else 8]
        print(f"| {tuple(shape)} | {floor:.2f} | {ns['fwd']:.2f} | {ns['fwd'] / floor:.1f}x | "
              + " | ".join(f"{ns[k] - ns['fwd']:.2f}" for k in ("theta", "input", "both"))
              + f" | {ns['pytorch']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
