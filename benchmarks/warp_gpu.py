"""GPU warp speed and memory: stnkit's Triton kernels vs PyTorch eager, on one CUDA device.

    python benchmarks/warp_gpu.py                   # the full table (about a minute on an H100)
    python benchmarks/warp_gpu.py --rounds 3        # quicker
    python benchmarks/warp_gpu.py --dtype float64
    TRITON_INTERPRET=1 python benchmarks/warp_gpu.py --smoke   # CPU, interpreter: tiny shapes,
                                                               # checks the script, not speed

Every case: bilinear, zeros padding, align_corners=False, a random similarity transform per
image (rotation up to +-0.3 rad, scale 0.9-1.1, small shift), output size = input size.
Methods:

- ``triton fast``: ``stnkit.ops.warp(backend="triton", deterministic=False)`` (atomic
  grad_input);
- ``triton det``: the same with ``deterministic=True`` (sorted pull, no atomics);
- ``stnkit torch``: ``stnkit.ops.warp(backend="torch")`` (our grid + sampler in torch ops);
- ``PyTorch eager``: ``F.affine_grid`` + ``F.grid_sample`` (its backward uses atomics; it has
  no deterministic CUDA backward).

Timing: CUDA events around a batch of calls long enough to span >= ``--min-ms``; all methods
of a shape run in turn within each round (interleaved), the table shows the median over
rounds. "fwd+bwd" computes the gradients of input and theta (``out.backward(g)``). "peak"
is ``torch.cuda.max_memory_allocated`` during one fwd+bwd minus what was allocated before
(input, theta, g), in units of the input's size. "max |diff|" is the largest difference of
the output from PyTorch eager's; "det bits" says whether two deterministic backward runs gave
the same bits (grad_input and grad_theta).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

import torch
import torch.nn.functional as F
from warp import SHAPES, _theta  # the CPU benchmark's cases (same folder)

SMOKE_SHAPES = [(2, 1, 5, 6), (1, 2, 3, 4, 5)]
METHODS = ["triton fast", "triton det", "stnkit torch", "PyTorch eager"]


def _fn(method: str, size):
    from stnkit.ops import warp

    if method.startswith("triton"):
        det = method == "triton det"
        return lambda a, t: warp(a, t, size=size, align_corners=False, backend="triton",
                                 deterministic=det)
    if method == "stnkit torch":
        return lambda a, t: warp(a, t, size=size, align_corners=False, backend="torch")
    if method == "PyTorch eager":
        def eager(a, t):
            grid = F.affine_grid(t, list(a.shape[:2]) + list(size), align_corners=False)
            return F.grid_sample(a, grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False)
        return eager
    raise ValueError(method)


class _Case:
    """Inputs and closures of one (method, shape)."""

    def __init__(self, method, shape, dtype, device):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(shape, generator=gen, dtype=dtype).to(device)
        self.theta = _theta(shape, dtype=dtype, device=device)
        self.g = torch.rand(shape, generator=gen, dtype=dtype).to(device)
        self.xg = self.x.clone().requires_grad_()
        self.tg = self.theta.clone().requires_grad_()
        self.fn = _fn(method, tuple(shape[2:]))

    def forward(self):
        with torch.no_grad():
            return self.fn(self.x, self.theta)

    def forward_backward(self):
        self.xg.grad = None
        self.tg.grad = None
        self.fn(self.xg, self.tg).backward(self.g)
        return self.xg.grad, self.tg.grad


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(call, device, min_ms: float) -> float:
    """Milliseconds per call: CUDA events around n calls, n grown until they span min_ms."""
    import time

    n = 1
    while True:
        _sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                call()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:  # the interpreter smoke run: wall clock
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            ms = (time.perf_counter() - t0) * 1e3
        if ms >= min_ms or n >= 10000:
            return ms / n
        n = max(2 * n, int(n * min_ms / max(ms, 1e-3)) + 1)


def _peak(case: _Case, device) -> float | None:
    """Peak extra memory of one fwd+bwd, in units of the input's size (CUDA only)."""
    if device.type != "cuda":
        return None
    case.xg.grad = None
    case.tg.grad = None
    _sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    case.forward_backward()
    _sync(device)
    extra = torch.cuda.max_memory_allocated(device) - before
    return extra / (case.x.numel() * case.x.element_size())


def run_shape(shape, methods, dtype, device, rounds: int, min_ms: float):
    cases, res = {}, {}
    for m in methods:
        case = _Case(m, shape, dtype, device)
        out = case.forward()  # warm-up: Triton compiles here
        grads = case.forward_backward()
        cases[m] = case
        res[m] = {"fwd": [], "fb": [], "out": out, "peak": _peak(case, device),
                  "det": None}
        if m == "triton det":
            again = case.forward_backward()
            res[m]["det"] = all(torch.equal(a, b) for a, b in zip(grads, again))
    for _ in range(rounds):
        for m, case in cases.items():  # interleaved
            res[m]["fwd"].append(_time_ms(case.forward, device, min_ms))
            res[m]["fb"].append(_time_ms(case.forward_backward, device, min_ms))
    ref = res.get("PyTorch eager", {}).get("out")
    rows = {}
    for m, r in res.items():
        diff = None if ref is None else (r["out"] - ref).abs().max().item()
        rows[m] = {"fwd": statistics.median(r["fwd"]), "fb": statistics.median(r["fb"]),
                   "peak": r["peak"], "diff": diff, "det": r["det"]}
    return rows


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--min-ms", type=float, default=20.0,
                   help="each measurement repeats the call until it spans this long")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes, one round (runs on the CPU under TRITON_INTERPRET=1)")
    args = p.parse_args(argv)

    interpreted = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if torch.cuda.is_available() and not interpreted:
        device = torch.device("cuda")
    elif interpreted and args.smoke:
        device = torch.device("cpu")
    else:
        print("warp_gpu.py: needs a CUDA device (or TRITON_INTERPRET=1 with --smoke)",
              file=sys.stderr)
        return 1
    try:
        import triton
    except ImportError:
        print("warp_gpu.py: triton is not installed (pip install '.[gpu]')", file=sys.stderr)
        return 1
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    rounds = 1 if args.smoke else args.rounds
    min_ms = 1.0 if args.smoke else args.min_ms
    dtype = getattr(torch, args.dtype)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (interpreter)"
    print(f"device: {name}; torch {torch.__version__}, triton {triton.__version__}, "
          f"python {platform.python_version()}; {args.dtype}, bilinear, zeros, "
          f"align_corners=False; median of {rounds} interleaved rounds "
          f"({'CUDA events' if device.type == 'cuda' else 'wall clock'})")
    print()
    print("| shape | method | fwd ms | fwd+bwd ms | fwd+bwd vs PyTorch | peak (x input) "
          "| max \\|diff\\| | det bits |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        rows = run_shape(shape, args.methods, dtype, device, rounds, min_ms)
        base = rows.get("PyTorch eager", {}).get("fb")
        for m, r in rows.items():
            speed = None if base is None else base / r["fb"]
            det = "n/a" if r["det"] is None else ("same" if r["det"] else "DIFFER")
            print(f"| {shape} | {m} | {_fmt(r['fwd'], '.3f')} | {_fmt(r['fb'], '.3f')} "
                  f"| {_fmt(speed, '.2f')}x | {_fmt(r['peak'], '.2f')} "
                  f"| {_fmt(r['diff'], '.1e')} | {det} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
