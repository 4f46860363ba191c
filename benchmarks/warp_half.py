"""16-bit images: stnkit's fused CPU kernel on bfloat16 / float16 against float32 and the rest.

    python benchmarks/warp_half.py                 # the table (a few minutes)
    python benchmarks/warp_half.py --rounds 3      # quicker
    python benchmarks/warp_half.py --smoke         # tiny shapes, one round (a check that it runs)

Every case: bilinear, zeros padding, align_corners=False, a random similarity transform per
image (``benchmarks/warp.py``'s), output size = input size, theta float32 (what a spatial
transformer's regression gives, also under autocast). Methods:

- ``cpp fp32``: ``stnkit.ops.warp(backend="cpp")`` on a float32 image (the baseline);
- ``cpp bf16`` / ``cpp fp16``: the same C++ kernels on a bfloat16 / float16 image (loaded as
  it is stored and computed in float32, no widened copy; the output and grad_input stored
  in the image's dtype);
- ``torch bf16``: ``stnkit.ops.warp(backend="torch")`` on the bfloat16 image (our grid +
  sampler in torch ops, float32 inside), where a 16-bit image went before;
- ``grid_sample fp32`` / ``grid_sample bf16``: ``F.affine_grid`` + ``F.grid_sample``, theta
  and image in that dtype (PyTorch's own bfloat16 path: coordinates in bfloat16 too).

Timing as in ``benchmarks/warp.py``: the methods of a shape run in turn within each round
(interleaved), a measurement repeats the call until it spans ``--min-ms``, the table shows
the median over rounds; "fwd+bwd" computes the gradients of image and theta. "max err" is
the largest |output - float64 warp of the same rounded image and theta|, in units of the
image's range (1): the price of each method's precision.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from warp import _theta, _time, cpp_build  # noqa: E402  (benchmarks/warp.py's transforms, timer)

SHAPES = [(256, 1, 28, 28), (64, 1, 60, 60), (32, 3, 224, 224)]
SMOKE_SHAPES = [(4, 1, 8, 9), (2, 3, 16, 12)]
METHODS = ["cpp fp32", "cpp bf16", "cpp fp16", "torch bf16", "grid_sample fp32",
           "grid_sample bf16"]
BASELINE = "cpp fp32"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_lines() -> list[str]:
    """CPU model (/proc/cpuinfo's model name), its bf16 / AMX flags, threads, versions."""
    from stnkit._machine import cpu_info, load_average

    model, flags = cpu_info()
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2") if f in flags]
    threads = torch.get_num_threads()
    load = load_average()
    return [f"- CPU: {model}, {os.cpu_count()} CPUs; flags: {' '.join(bf16) or 'none'} "
            "(of avx512_bf16 amx_bf16 amx_tile avx512f avx2)",
            f"- threads: torch {threads}",
            f"- torch {torch.__version__}, python {platform.python_version()}, stnkit cpp "
            f"build: {cpp_build()}",
            f"- load average (1, 5, 15 min) at start: {load} (other processes on the cores "
            "slow every multi-threaded region: compare methods within one run)"]


def _make(method: str, shape):
    """(forward(), forward_backward(), output) for one method and shape."""
    from stnkit.ops import warp

    kind, dt = method.split()
    dtype = DTYPES[dt]
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    theta = _theta(shape)  # float32
    g = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    size = tuple(shape[2:])
    if kind == "grid_sample":
        theta = theta.to(dtype)

        def fn(a, t):
            grid = F.affine_grid(t, list(a.shape[:2]) + list(size), align_corners=False)
            return F.grid_sample(a, grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False)
    else:
        def fn(a, t):
            return warp(a, t, size=size, align_corners=False, backend=kind,
                        deterministic=False)
    xg, tg = x.clone().requires_grad_(), theta.clone().requires_grad_()

    def forward():
        with torch.no_grad():
            return fn(x, theta)

    def forward_backward():
        xg.grad = tg.grad = None
        fn(xg, tg).backward(g)

    out = forward()
    ref = warp(x.double(), theta.double(), size=size, align_corners=False, backend="torch")
    return forward, forward_backward, (out.double() - ref).abs().max().item()


def measure(shape, rounds: int, min_s: float) -> dict:
    cases, errs = {}, {}
    for m in METHODS:
        fwd, fb, errs[m] = _make(m, shape)
        fb()  # warm-up
        cases[m] = (fwd, fb)
    times = {m: {"fwd": [], "fb": []} for m in METHODS}
    for _ in range(rounds):
        for m, (fwd, fb) in cases.items():  # interleaved
            times[m]["fwd"].append(_time(fwd, min_s))
            times[m]["fb"].append(_time(fb, min_s))
    return {m: {"fwd": statistics.median(t["fwd"]), "fb": statistics.median(t["fb"]),
                "err": errs[m]} for m, t in times.items()}


def table(shape, res: dict) -> list[str]:
    base = res[BASELINE]
    rows = [f"**{tuple(shape)}**", "",
            f"| method | fwd ms | fwd+bwd ms | fwd vs {BASELINE} | fwd+bwd vs {BASELINE} | "
            "max err |",
            "|---|---:|---:|---:|---:|---:|"]
    for m, r in res.items():
        rows.append(f"| {m} | {r['fwd'] * 1e3:.3g} | {r['fb'] * 1e3:.3g} | "
                    f"{base['fwd'] / r['fwd']:.2f}x | {base['fb'] / r['fb']:.2f}x | "
                    f"{r['err']:.1e} |")
    return rows + [""]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--min-ms", type=float, default=50.0, help="least time per measurement")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, one round")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shapes, rounds, min_s = ((SMOKE_SHAPES, 1, 0.001) if args.smoke
                             else (SHAPES, args.rounds, args.min_ms / 1e3))
    print("\n".join(cpu_lines()))
    print(f"- {rounds} interleaved rounds, median; speed-ups > 1 are faster than {BASELINE}\n")
    for shape in shapes:
        print("\n".join(table(shape, measure(shape, rounds, min_s))), flush=True)


if __name__ == "__main__":
    main()
