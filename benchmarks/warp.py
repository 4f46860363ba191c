"""Warp speed and memory: stnkit (numba and torch backends) vs PyTorch eager, kornia, OpenCV.

    python benchmarks/warp.py                 # the full table (a few minutes)
    python benchmarks/warp.py --quick         # fewer rounds, no kornia, no memory column
    THP_MEM_ALLOC_ENABLE=1 MALLOC_MMAP_THRESHOLD_=33554432 \\
        MALLOC_TRIM_THRESHOLD_=17179869184 python benchmarks/warp.py --threads 2

Every case is float32, bilinear, zeros padding, align_corners=False, a random similarity
transform per image (rotation up to +-0.3 rad, scale 0.9-1.1, small shift), output size =
input size. Methods:

- ``stnkit numba``: ``stnkit.ops.warp(backend="numba")`` (fused kernels, no grid);
- ``stnkit torch``: ``stnkit.ops.warp(backend="torch")`` (our grid + sampler in torch ops);
- ``PyTorch eager``: ``F.affine_grid`` + ``F.grid_sample``;
- ``kornia``: ``kornia.geometry.transform.warp_affine`` with the equivalent pixel matrix
  (skipped when kornia is not installed: ``pip install .[bench]``);
- ``OpenCV``: ``cv2.warpAffine`` (``WARP_INVERSE_MAP``), forward only, a loop over the batch
  on HWC float32 arrays prepared beforehand (2-D only).

Timing: all methods of a shape run in turn within each round (interleaved, so a slow spell
of the machine hits them alike); a measurement repeats the call until it spans >= 20 ms and
reports the time per call; the table shows the median over rounds. "fwd+bwd" computes the
gradients of input and theta (``out.backward(g)`` with a fixed g).

Peak extra memory (fwd+bwd, in units of the input's size): each (method, shape) runs in a
fresh subprocess with ``MALLOC_MMAP_THRESHOLD_=0`` (every allocation is its own mapping and
goes back to the system when freed, so the resident set tracks live memory exactly, whoever
allocates it: torch, numpy, Numba's runtime). It warms up on a tiny problem, builds the
full-size input, theta and output gradient, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), runs one fwd+bwd and reports ``VmHWM - VmRSS(before)``: the
output, grad_input, grad_theta, the grid and its gradient where there is one, and every
temporary. A fused op cannot go below output + grad_input, i.e. 2x the input for a
same-size one-channel warp.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from stnkit._machine import allocator_settings

SHAPES = [(256, 1, 28, 28), (256, 1, 60, 60), (32, 3, 224, 224), (8, 3, 512, 512),
          (1, 3, 2048, 2048), (2, 1, 96, 96, 96)]
SMOKE_SHAPES = [(4, 1, 8, 9), (2, 3, 16, 12), (1, 1, 4, 5, 6)]
METHODS = ["stnkit numba", "stnkit torch", "PyTorch eager", "kornia", "OpenCV"]


def _theta(shape, seed=0, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """(B, 2, 3) or (B, 3, 4) random similarity transforms (drawn in float32, then cast)."""
    g = torch.Generator().manual_seed(seed)
    B, nd = shape[0], len(shape) - 2
    angle = (torch.rand(B, generator=g) - 0.5) * 0.6
    scale = 0.9 + 0.2 * torch.rand(B, generator=g)
    theta = torch.zeros(B, nd, nd + 1)
    theta[:, 0, 0] = scale * torch.cos(angle)
    theta[:, 0, 1] = -scale * torch.sin(angle)
    theta[:, 1, 0] = scale * torch.sin(angle)
    theta[:, 1, 1] = scale * torch.cos(angle)
    if nd == 3:
        theta[:, 2, 2] = scale
    theta[:, :, nd] = (torch.rand(B, nd, generator=g) - 0.5) * 0.1
    return theta.to(dtype=dtype, device=device)


def _available(method: str, shape) -> bool:
    if method == "kornia":
        try:
            import kornia  # noqa: F401
        except ImportError:
            return False
        return len(shape) == 4
    if method == "OpenCV":
        try:
            import cv2  # noqa: F401
        except ImportError:
            return False
        return len(shape) == 4
    return True


def _make(method: str, shape, threads: int):
    """(forward(), forward_backward() or None) closures for one method and shape."""
    from stnkit.ops import warp
    from stnkit.ops.transforms import to_pixel

    torch.manual_seed(0)
    x = torch.rand(shape)
    theta = _theta(shape)
    g = torch.rand(shape)
    size = tuple(shape[2:])
    xg = x.clone().requires_grad_()
    tg = theta.clone().requires_grad_()

    if method.startswith("stnkit"):
        backend = method.split()[1]

        def fn(a, t):
            return warp(a, t, size=size, align_corners=False, backend=backend,
                        deterministic=False)
    elif method == "PyTorch eager":
        def fn(a, t):
            grid = F.affine_grid(t, list(a.shape[:2]) + list(size), align_corners=False)
            return F.grid_sample(a, grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False)
    elif method == "kornia":
        from kornia.geometry.transform import warp_affine
        M = to_pixel(theta, size, size, align_corners=False)  # input pixel -> output pixel

        def fn(a, t):  # kornia takes the pixel matrix; theta's gradient flows through M
            m = to_pixel(t, size, size, align_corners=False) if t.requires_grad else M
            return warp_affine(a, m, size, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
    elif method == "OpenCV":
        import cv2

        cv2.setNumThreads(threads)
        M = to_pixel(theta.double(), size, size, align_corners=False).numpy()
        imgs = [x[b].permute(1, 2, 0).contiguous().numpy() for b in range(shape[0])]
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        Minv = [cv2.invertAffineTransform(m) for m in M]  # output pixel -> input pixel
        H, W = size

        def forward():
            return [cv2.warpAffine(im, m, (W, H), flags=flags, borderMode=cv2.BORDER_CONSTANT)
                    for im, m in zip(imgs, Minv)]
        return forward, None
    else:
        raise ValueError(method)

    def forward():
        with torch.no_grad():
            return fn(x, theta)

    def forward_backward():
        xg.grad = None
        tg.grad = None
        fn(xg, tg).backward(g)

    return forward, forward_backward


def _time(call, min_s: float = 0.02) -> float:
    """Seconds per call, repeating the call until the measurement spans min_s."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        dt = time.perf_counter() - t0
        if dt >= min_s or n >= 1000:
            return dt / n
        n = max(n * 2, math.ceil(n * min_s / max(dt, 1e-9)))


def _timings(shape, methods, rounds: int, threads: int, min_s: float):
    cases, outs = {}, {}
    for m in methods:
        fwd, fb = _make(m, shape, threads)
        out = fwd()  # warm-up (numba compiles / loads its cache here)
        if isinstance(out, list):  # OpenCV: HWC images (2-D HW for one channel)
            out = torch.stack([torch.from_numpy(o).reshape(*o.shape[:2], -1).permute(2, 0, 1)
                               for o in out])
        outs[m] = out
        if fb is not None:
            fb()
        cases[m] = (fwd, fb)
    ref = outs.get("PyTorch eager")
    res = {m: {"fwd": [], "fb": []} for m in methods}
    for _ in range(rounds):
        for m, (fwd, fb) in cases.items():  # interleaved
            res[m]["fwd"].append(_time(fwd, min_s))
            if fb is not None:
                res[m]["fb"].append(_time(fb, min_s))
    table = {m: {k: (statistics.median(v) if v else None) for k, v in r.items()}
             for m, r in res.items()}
    for m in methods:  # agreement with PyTorch
        table[m]["diff"] = None if ref is None else (outs[m] - ref).abs().max().item()
    return table


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(method: str, shape, threads: int) -> None:
    """Run in a subprocess: print the peak RSS increase of one fwd+bwd (bytes)."""
    torch.set_num_threads(threads)
    tiny = (1, shape[1]) + (4,) * (len(shape) - 2)
    _, fb = _make(method, tiny, threads)
    fb()
    _, fb = _make(method, shape, threads)  # builds x, theta, g at full size
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    before = _rss_kib("VmRSS")
    fb()
    peak = _rss_kib("VmHWM")
    print(json.dumps({"extra": (peak - before) * 1024}))


def _memory(method: str, shape, threads: int) -> float | None:
    """Peak extra memory of fwd+bwd in units of the input's bytes (None if it failed)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path.insert(0, {here!r}); import warp as w; "
            f"w._memory_child({method!r}, {tuple(shape)!r}, {threads})")
    # Every malloc gets its own mapping, returned on free: RSS then tracks live (touched)
    # memory exactly, whoever allocates it (torch, numpy, Numba's runtime).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="0")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=900, env=env, check=False)
    if r.returncode != 0:
        print(f"memory run failed for {method} {shape}: {r.stderr.strip()[-300:]}",
              file=sys.stderr)
        return None
    extra = json.loads(r.stdout.strip().splitlines()[-1])["extra"]
    return extra / (math.prod(shape) * 4)


def environment_lines(threads: int, opencv: bool = True) -> list[str]:
    """The markdown bullets that head a run: machine, versions, threads, allocator env."""
    import numba

    import stnkit.ops.kernels._numba_runtime  # noqa: F401  (pins Numba's threading layer)

    lines = [f"- {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
             f"python {platform.python_version()}, torch {torch.__version__}, "
             f"numba {numba.__version__}",
             f"- threads: torch {threads}, numba {min(threads, numba.config.NUMBA_NUM_THREADS)} "
             f"(pool {numba.config.NUMBA_NUM_THREADS}, layer: "
             f"{numba.config.THREADING_LAYER})" + (f", OpenCV {threads}" if opencv else ""),
             "- allocator env: " + allocator_settings()]
    return lines


def _fmt_ms(s):
    return "-" if s is None else f"{s * 1e3:.3g}"


def _fmt_x(a, b):
    return "-" if a is None or b is None else f"{b / a:.2f}x"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="3 rounds, no kornia, no memory column (a smoke run)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes, 1 round, no memory (for the test suite)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch / numba / OpenCV threads (default: torch's current setting)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 9)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory column")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, metavar="M",
                   help=f"subset of {METHODS}")
    p.add_argument("--shapes", nargs="+", default=None, metavar="B,C,H,W",
                   help="shapes to run, e.g. 256,1,28,28 2,1,96,96,96")
    args = p.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    shapes = (SMOKE_SHAPES if args.smoke else SHAPES) if args.shapes is None else \
        [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    rounds = args.rounds or (1 if args.smoke else 3 if args.quick else 9)
    memory = not (args.no_memory or args.quick or args.smoke)
    methods = [m for m in args.methods if not (m == "kornia" and (args.quick or args.smoke))]
    min_s = 0.002 if args.smoke else 0.02

    print("# stnkit warp benchmark\n")
    print("\n".join(environment_lines(threads)))
    print(f"- float32, bilinear, zeros, align_corners=False; median of {rounds} interleaved "
          f"rounds; ms per call; speed-up = PyTorch eager time / method time")
    print()
    print("| shape | method | fwd ms | fwd+bwd ms | fwd speed-up | fwd+bwd speed-up | "
          "max diff |" + (" peak extra mem (x input) |" if memory else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if memory else ""))
    for shape in shapes:
        ms = [m for m in methods if _available(m, shape)]
        t = _timings(shape, ms, rounds, threads, min_s)
        base = t.get("PyTorch eager", {"fwd": None, "fb": None})
        for m in ms:
            row = (f"| {tuple(shape)} | {m} | {_fmt_ms(t[m]['fwd'])} | {_fmt_ms(t[m]['fb'])} | "
                   f"{_fmt_x(t[m]['fwd'], base['fwd'])} | {_fmt_x(t[m]['fb'], base['fb'])} | "
                   + ("-" if t[m]["diff"] is None else f"{t[m]['diff']:.1e}") + " |")
            if memory:
                mem = _memory(m, shape, threads) if t[m]["fb"] is not None else None
                row += " - |" if mem is None else f" {mem:.2f} |"
            print(row, flush=True)
    print("\nmax diff: largest |output - PyTorch eager output| of the forward.")
    if memory:
        print("peak extra mem: RSS peak increase of one fwd+bwd in a fresh process "
              "(MALLOC_MMAP_THRESHOLD_=0), in units of the input size; see the module docstring.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
