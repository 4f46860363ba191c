"""Warp speed and memory, alone and in a network: stnkit's backends, PyTorch, kornia, OpenCV.

    python benchmarks/warp.py                 # both tables, both columns (several minutes)
    python benchmarks/warp.py --quick         # fewer rounds, no kornia, no memory column
    THP_MEM_ALLOC_ENABLE=1 MALLOC_MMAP_THRESHOLD_=33554432 \\
        MALLOC_TRIM_THRESHOLD_=17179869184 python benchmarks/warp.py --threads 2
    python benchmarks/warp.py --context alone # no (net) columns: the tables of earlier runs
    python benchmarks/warp.py --tps-shapes    # the affine table only

Every case is float32, bilinear, zeros padding, align_corners=False, output size = input size.
Two tables:

- affine: a random similarity transform per image (rotation up to +-0.3 rad, scale 0.9-1.1,
  small shift); speed-up = ``PyTorch eager`` time / method time;
- TPS: ``transform="tps"`` with 16 source control points (the default 4 x 4 lattice, each
  point moved by up to +-0.05); PyTorch has no TPS, so speed-up = ``stnkit torch`` time
  (``tps_grid`` + ``stnkit.ops.sample`` in torch ops) / method time.

Methods:

- ``stnkit <backend>``: ``stnkit.ops.warp(backend=...)`` for every backend of
  ``stnkit.ops.warp.BACKENDS`` but "auto" ("torch": our grid + sampler in torch ops; the
  others fused kernels). A kernel backend that cannot be imported or does not support the call
  (e.g. triton on CPU tensors) is skipped, and the reason printed under its table;
- ``PyTorch eager``: ``F.affine_grid`` + ``F.grid_sample``;
- ``kornia``: ``kornia.geometry.transform.warp_affine`` with the equivalent pixel matrix
  (skipped when kornia is not installed: ``pip install .[bench]``);
- ``OpenCV``: ``cv2.warpAffine`` (``WARP_INVERSE_MAP``), forward only, a loop over the batch
  on HWC float32 arrays prepared beforehand (2-D only).

Timing: all methods of a shape run in turn within each round (interleaved, so a slow spell
of the machine hits them alike); the table shows the median over rounds of the time per call.
"fwd+bwd" computes the gradients of input and theta (``out.backward(g)`` with a fixed g).
Two contexts (``--context``, both by default, side by side in the table):

- alone: the call repeated back to back until the measurement spans >= 20 ms; time per call;
- in a network, "(net)" columns: inside a network a warp follows a torch operator, whose
  OpenMP workers keep spinning for a while after it returns; a kernel on another thread pool
  (OpenCV's) then competes with them for the cores. So every call comes right after one:
  ``y = x * 1.0`` on the input, and the warp takes ``y`` (for fwd+bwd, a leaf that requires
  grad); before the backward, ``h = g * 1.0`` on the output gradient, then
  ``out.backward(h)``. OpenCV runs on its prepared arrays after the same ``x * 1.0``. What is
  timed: the warp's forward (and backward) only, from the moment the operator before it has
  returned to the moment the warp returns; the operators are untimed, the same for every
  method. Calls repeat until the timed parts add up to >= 20 ms; time per call.

Peak extra memory (fwd+bwd alone, in units of the input's size): each (method, shape) runs in
a fresh subprocess with ``MALLOC_MMAP_THRESHOLD_=0`` (every allocation is its own mapping and
goes back to the system when freed, so the resident set tracks live memory exactly, whoever
allocates it: torch, numpy, OpenCV). It warms up on a tiny problem, builds the full-size
input, theta and output gradient, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), runs one fwd+bwd and reports ``VmHWM - VmRSS(before)``: the
output, grad_input, grad_theta, the grid and its gradient where there is one, and every
temporary. A fused op cannot go below output + grad_input, i.e. 2x the input for a
same-size one-channel warp. Before the measured call the child hands glibc's free pages back
to the system (``malloc_trim``): a buffer allocated where one was freed must fault its pages
in, or some runs read as low as half the peak. It runs without the timing runs' allocator
settings (``THP_MEM_ALLOC_ENABLE``, ``MALLOC_TRIM_THRESHOLD_``), and the figure is the largest
of three fresh processes.
"""

from __future__ import annotations

import argparse
import ctypes
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

from stnkit._machine import allocator_settings, cpu_info, load_average
from stnkit.ops.warp import BACKENDS

SHAPES = [(256, 1, 28, 28), (64, 1, 60, 60), (256, 1, 60, 60), (32, 3, 224, 224),
          (8, 3, 512, 512), (1, 3, 2048, 2048), (2, 1, 96, 96, 96)]
SMOKE_SHAPES = [(4, 1, 8, 9), (2, 3, 16, 12), (1, 1, 4, 5, 6)]
TPS_SHAPES = [(256, 1, 28, 28), (64, 1, 60, 60), (32, 3, 224, 224)]
SMOKE_TPS_SHAPES = [(4, 1, 8, 9), (2, 3, 16, 12)]
TPS_POINTS = 16  # the paper's 4 x 4 lattice
# every backend of stnkit.ops.warp but "auto" (an alias): whatever backends exist are measured
STNKIT_METHODS = [f"stnkit {b}" for b in BACKENDS if b != "auto"]
METHODS = STNKIT_METHODS + ["PyTorch eager", "kornia", "OpenCV"]
BASELINE = {"affine": "PyTorch eager", "tps": "stnkit torch"}  # speed-up = baseline / method
CONTEXTS = ("alone", "network")
# SIMD extensions that decide how fast a compiled kernel can be (compile_step.py's list)
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


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


def _tps_points(shape, seed=0) -> torch.Tensor:
    """(B, TPS_POINTS, 2) source points: the default lattice, each point moved by <= 0.05."""
    from stnkit.ops.grids import tps_lattice

    g = torch.Generator().manual_seed(seed)
    noise = (torch.rand(shape[0], TPS_POINTS, 2, generator=g) - 0.5) * 0.1
    return tps_lattice(TPS_POINTS, dtype=torch.float32)[None] + noise


def _available(method: str, shape, transform: str = "affine") -> bool:
    """Whether a method runs this case at all (a kernel backend that cannot is skipped later,
    with its reason, by ``_timings``)."""
    if transform != "affine":
        return method.startswith("stnkit ")
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


def _make(method: str, shape, threads: int, transform: str = "affine"):
    """The timed calls of one method and shape: {(context, "fwd" | "fb"): call or None}.

    ``("alone", k)`` calls run the warp and return nothing (``_time`` times them);
    ``("network", k)`` calls run a torch operator first and return the seconds of the warp
    alone (``_time_steps`` sums them); see the module docstring.
    """
    from stnkit.ops import warp
    from stnkit.ops.transforms import to_pixel

    torch.manual_seed(0)
    x = torch.rand(shape)
    theta = _tps_points(shape) if transform == "tps" else _theta(shape)
    g = torch.rand(shape)
    size = tuple(shape[2:])
    xg = x.clone().requires_grad_()
    tg = theta.clone().requires_grad_()

    if method.startswith("stnkit "):
        backend = method.split()[1]

        def fn(a, t):
            return warp(a, t, transform=transform, size=size, align_corners=False,
                        backend=backend, deterministic=False)
    elif transform != "affine":
        raise ValueError(f"{method} has no {transform!r} warp")
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

        def net_forward():
            with torch.no_grad():
                x * 1.0  # the torch operator before the call (its result is not used)
            t0 = time.perf_counter()
            forward()
            return time.perf_counter() - t0
        return {("alone", "fwd"): forward, ("alone", "fb"): None,
                ("network", "fwd"): net_forward, ("network", "fb"): None}
    else:
        raise ValueError(method)

    def forward():
        with torch.no_grad():
            return fn(x, theta)

    def forward_backward():
        xg.grad = None
        tg.grad = None
        fn(xg, tg).backward(g)

    def net_forward():
        with torch.no_grad():
            y = x * 1.0  # the torch operator before the call
            t0 = time.perf_counter()
            fn(y, theta)
            return time.perf_counter() - t0

    def net_forward_backward():
        tg.grad = None
        with torch.no_grad():
            y = x * 1.0  # the torch operator before the forward
        y.requires_grad_()
        t0 = time.perf_counter()
        out = fn(y, tg)
        t1 = time.perf_counter()
        with torch.no_grad():
            h = g * 1.0  # the torch operator before the backward
        t2 = time.perf_counter()
        out.backward(h)
        return (t1 - t0) + (time.perf_counter() - t2)

    return {("alone", "fwd"): forward, ("alone", "fb"): forward_backward,
            ("network", "fwd"): net_forward, ("network", "fb"): net_forward_backward}


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


def _time_steps(step, min_s: float = 0.02) -> float:
    """Seconds per call of a ``step`` that returns its own timed seconds, repeating it until
    the timed seconds add up to min_s (or 1000 calls)."""
    total, n = 0.0, 0
    while total < min_s and n < 1000:
        total += step()
        n += 1
    return total / n


TIMERS = {"alone": _time, "network": _time_steps}


def _skippable(method: str) -> bool:
    """A fused-kernel backend, which may be absent or decline a call; everything else must run."""
    return method.startswith("stnkit ") and method != "stnkit torch"


def _timings(shape, methods, rounds: int, threads: int, min_s: float, contexts,
             transform: str = "affine"):
    """({method: {(context, kind): median s or None, "diff": float or None}},
    {method: why it was skipped}) for one shape."""
    cases, outs, skipped = {}, {}, {}
    for m in methods:
        try:
            case = _make(m, shape, threads, transform)
            out = case["alone", "fwd"]()  # warm-up (a kernel library loads here)
        except Exception as e:  # noqa: BLE001 (a kernel backend that cannot run: say why)
            if not _skippable(m):
                raise
            why = (str(e).strip().splitlines() or [""])[0]
            skipped[m] = why if isinstance(e, ValueError) else f"{type(e).__name__}: {why}"
            continue
        if isinstance(out, list):  # OpenCV: HWC images (2-D HW for one channel)
            out = torch.stack([torch.from_numpy(o).reshape(*o.shape[:2], -1).permute(2, 0, 1)
                               for o in out])
        outs[m] = out
        if case["alone", "fb"] is not None:
            case["alone", "fb"]()
        if "network" in contexts:
            case["network", "fwd"]()
        cases[m] = case
    ref = outs.get(BASELINE[transform])
    keys = [(ctx, kind) for kind in ("fwd", "fb") for ctx in contexts]
    res = {m: {k: [] for k in keys} for m in cases}
    for _ in range(rounds):
        for m, case in cases.items():  # interleaved
            for ctx, kind in keys:
                if case[ctx, kind] is not None:
                    res[m][ctx, kind].append(TIMERS[ctx](case[ctx, kind], min_s))
    table = {m: {k: (statistics.median(v) if v else None) for k, v in r.items()}
             for m, r in res.items()}
    for m in cases:  # agreement with the baseline
        table[m]["diff"] = None if ref is None else (outs[m] - ref).abs().max().item()
    return table, skipped


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(method: str, shape, threads: int, transform: str = "affine") -> None:
    """Run in a subprocess: print the peak RSS increase of one fwd+bwd (bytes)."""
    torch.set_num_threads(threads)
    tiny = (1, shape[1]) + (4,) * (len(shape) - 2)
    _make(method, tiny, threads, transform)["alone", "fb"]()
    fb = _make(method, shape, threads, transform)["alone", "fb"]  # x, theta, g at full size
    _release_free_memory()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    before = _rss_kib("VmRSS")
    fb()
    peak = _rss_kib("VmHWM")
    print(json.dumps({"extra": (peak - before) * 1024}))


MEMORY_RUNS = 3  # fresh processes per figure (the largest reading is kept)


def _release_free_memory() -> None:
    """Give glibc's free pages back to the system (malloc_trim), so that a buffer the fwd+bwd
    allocates where one was freed before faults its pages in and counts (without it, some
    runs read as low as half the peak); no-op where the C library has no malloc_trim."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _memory(method: str, shape, threads: int, transform: str = "affine") -> float | None:
    """Peak extra memory of fwd+bwd in units of the input's bytes: the largest reading of
    MEMORY_RUNS fresh processes (None if one failed)."""
    readings = [_memory_once(method, shape, threads, transform) for _ in range(MEMORY_RUNS)]
    return None if None in readings else max(readings)


def _memory_once(method: str, shape, threads: int, transform: str = "affine") -> float | None:
    """One fresh process's reading of _memory (None if it failed)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path.insert(0, {here!r}); import warp as w; "
            f"w._memory_child({method!r}, {tuple(shape)!r}, {threads}, {transform!r})")
    # Every malloc gets its own mapping, returned on free: RSS then tracks live (touched)
    # memory exactly, whoever allocates it (torch, numpy, OpenCV). The timing runs' allocator
    # settings are dropped: with THP_MEM_ALLOC_ENABLE or MALLOC_TRIM_THRESHOLD_ set as well,
    # freed buffers came back still resident and the peak read as low as half the truth.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "THP_MEM_ALLOC_ENABLE"}
    env["MALLOC_MMAP_THRESHOLD_"] = "0"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=900, env=env, check=False)
    if r.returncode != 0:
        print(f"memory run failed for {method} {shape}: {r.stderr.strip()[-300:]}",
              file=sys.stderr)
        return None
    extra = json.loads(r.stdout.strip().splitlines()[-1])["extra"]
    return extra / (math.prod(shape) * 4)


def cpp_build() -> str:
    """Which build of the C++ kernels runs (cpp_cpu.VARIANT), or why none does."""
    from stnkit.ops.kernels import cpp_cpu

    return cpp_cpu.VARIANT if cpp_cpu._LIB is not None else f"none ({cpp_cpu._WHY})"


def environment_lines(threads: int, opencv: bool = True) -> list[str]:
    """The markdown bullets that head a run: CPU and its vector flags, versions, threads,
    allocator and OpenMP env, load average."""
    model, flags = cpu_info()
    simd = [f for f in VECTOR_FLAGS if f in flags]
    omp = ", ".join(f"{k}={os.environ.get(k, 'unset')}"
                    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))
    return [f"- CPU: {model}, {os.cpu_count()} CPUs; vector flags: {' '.join(simd) or 'none'} "
            f"(of {' '.join(VECTOR_FLAGS)})",
            f"- python {platform.python_version()}, torch {torch.__version__}; torch CPU "
            f"capability {torch.backends.cpu.get_cpu_capability()}, stnkit cpp build: "
            f"{cpp_build()}",
            f"- threads: torch {threads}" + (f", OpenCV {threads}" if opencv else ""),
            "- allocator env: " + allocator_settings(),
            f"- OpenMP env: {omp}",
            f"- load average (1, 5, 15 min) at start: {load_average()}"]


def _fmt_ms(s):
    return "-" if s is None else f"{s * 1e3:.3g}"


def _fmt_x(a, b):
    return "-" if a is None or b is None else f"{b / a:.2f}x"


def _columns(contexts, memory: bool) -> list[str]:
    """The table's header cells: each quantity alone, then in a network "(net)"."""
    tag = {"alone": "", "network": " (net)"}
    cols = ["shape", "method"]
    for quantity in ("fwd ms", "fwd+bwd ms", "fwd speed-up", "fwd+bwd speed-up"):
        cols += [quantity + tag[ctx] for ctx in contexts]
    return cols + ["max diff"] + (["peak extra mem (x input)"] if memory else [])


def _table(shapes, methods, *, transform: str, rounds: int, threads: int, min_s: float,
           contexts, memory: bool) -> None:
    """Print one markdown table (a row per shape and method that ran), then what was skipped."""
    cols = _columns(contexts, memory)
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    skipped = {}  # (method, reason) -> shapes
    for shape in shapes:
        ms = [m for m in methods if _available(m, shape, transform)]
        t, why = _timings(shape, ms, rounds, threads, min_s, contexts, transform)
        for m, reason in why.items():
            skipped.setdefault((m, reason), []).append(tuple(shape))
        base = t.get(BASELINE[transform], {})
        for m in ms:
            if m not in t:
                continue
            cells = [str(tuple(shape)), m]
            for kind in ("fwd", "fb"):
                cells += [_fmt_ms(t[m][ctx, kind]) for ctx in contexts]
            for kind in ("fwd", "fb"):
                cells += [_fmt_x(t[m][ctx, kind], base.get((ctx, kind))) for ctx in contexts]
            cells.append("-" if t[m]["diff"] is None else f"{t[m]['diff']:.1e}")
            if memory:
                mem = _memory(m, shape, threads, transform) \
                    if t[m]["alone", "fb"] is not None else None
                cells.append("-" if mem is None else f"{mem:.2f}")
            print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\nmax diff: largest |output - {BASELINE[transform]} output| of the forward.")
    if memory:
        print("peak extra mem: RSS peak increase of one fwd+bwd in a fresh process "
              "(MALLOC_MMAP_THRESHOLD_=0), the largest of 3, in units of the input size; see the "
              "module docstring.")
    if skipped:
        print()
    for (m, reason), where in skipped.items():
        print(f"- skipped: {m} at {', '.join(map(str, where))}: {reason}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="3 rounds, no kornia, no memory column (a smoke run)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes, 1 round, no memory (for the test suite)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch / OpenCV threads (default: torch's current setting)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 15)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory column")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, metavar="M",
                   help=f"subset of {METHODS}")
    p.add_argument("--shapes", nargs="+", default=None, metavar="B,C,H,W",
                   help="shapes of the affine table, e.g. 256,1,28,28 2,1,96,96,96")
    p.add_argument("--tps-shapes", nargs="*", default=None, metavar="B,C,H,W",
                   help=f"shapes of the TPS table (default {TPS_SHAPES}; none: no TPS table)")
    p.add_argument("--context", choices=("both",) + CONTEXTS, default="both",
                   help="time each call alone, right after a torch operator (network), or "
                        "both side by side (default)")
    args = p.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    def parse(given, default, smoke):
        if given is None:
            return smoke if args.smoke else default
        return [tuple(int(v) for v in s.split(",")) for s in given]
    shapes = parse(args.shapes, SHAPES, SMOKE_SHAPES)
    tps_shapes = [s for s in parse(args.tps_shapes, TPS_SHAPES, SMOKE_TPS_SHAPES) if len(s) == 4]
    rounds = args.rounds or (1 if args.smoke else 3 if args.quick else 15)
    memory = not (args.no_memory or args.quick or args.smoke)
    methods = [m for m in args.methods if not (m == "kornia" and (args.quick or args.smoke))]
    tps_methods = [m for m in methods if m.startswith("stnkit ")]
    contexts = CONTEXTS if args.context == "both" else (args.context,)
    min_s = 0.002 if args.smoke else 0.02
    run = dict(rounds=rounds, threads=threads, min_s=min_s, contexts=contexts, memory=memory)

    print("# stnkit warp benchmark\n")
    print("\n".join(environment_lines(threads)))
    print(f"- float32, bilinear, zeros, align_corners=False, output size = input size; median "
          f"of {rounds} interleaved rounds; ms per call; speed-up = baseline time / method "
          "time, both from this run")
    if "alone" in contexts:
        print("- alone: the call repeated back to back")
    if "network" in contexts:
        print("- (net), in a network: each call right after a torch operator, as a warp in a "
              "network follows one: `y = x * 1.0`, then the warp of `y`; for fwd+bwd also "
              "`h = g * 1.0` before `out.backward(h)`. Timed: the warp's forward and backward "
              "only, each from the operator's return (its OpenMP workers still spinning) to "
              "the warp's; the operators are untimed")
    print("\n## Affine (a random similarity per image); baseline PyTorch eager "
          "(F.affine_grid + F.grid_sample)\n")
    _table(shapes, methods, transform="affine", **run)
    if tps_shapes and tps_methods:
        print(f"\n## Thin-plate spline ({TPS_POINTS} control points); baseline stnkit torch "
              "(tps_grid + stnkit.ops.sample; PyTorch has no TPS)\n")
        _table(tps_shapes, tps_methods, transform="tps", **run)
    print(f"\nload average (1, 5, 15 min) at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
