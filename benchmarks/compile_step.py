"""A training step under torch.compile against eager: compile time and time per step.

    python benchmarks/compile_step.py                     # st-cnn-aff, batch 64, 2 threads
    python benchmarks/compile_step.py --model st-fcn-proj-x2 --batch 256 --threads 1
    python benchmarks/compile_step.py --backend aot_eager --rounds 2 --steps 3   # quick look

One step = forward, cross-entropy, backward, SGD step (lr 0.01, the paper's optimiser) on a
random batch. The compiled step is ``torch.compile(loss_fn, fullgraph=True)`` (forward +
loss in one graph, AOT autograd's compiled backward, the fused warp kernels in both as the
``stnkit`` operators) plus ``torch.compile(opt.step)`` (torch breaks that graph on purpose
around the optimiser's no_grad).

Reported:
- compile: the first compiled step (tracing, compiling forward, backward and optimiser, one
  run) minus the median compiled step; with a cold inductor cache (a fresh cache folder
  per run unless ``--warm-cache``);
- eager / compiled: median time per step over interleaved rounds (``--rounds`` rounds of
  ``--steps`` steps each, eager and compiled models from the same initial weights).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time


def cpu_lines(threads: int) -> list[str]:
    """Machine, SIMD flags, versions and threads, as markdown bullets."""
    import torch

    from stnkit._machine import allocator_settings, cpu_info, load_average

    model, flags = cpu_info()
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
            if f in flags]
    return [f"- CPU: {model}, {os.cpu_count()} CPUs; SIMD flags: {' '.join(simd) or '?'}",
            f"- python {platform.python_version()}, torch {torch.__version__}",
            f"- threads: torch {torch.get_num_threads()} (asked {threads})",
            f"- allocator: {allocator_settings()}",
            f"- load average (1, 5, 15 min): {load_average()}"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="st-cnn-aff")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="inductor", help="torch.compile backend")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="steps a round, eager and compiled")
    p.add_argument("--warm-cache", action="store_true",
                   help="keep inductor's default cache (compile time then may be a cache hit)")
    args = p.parse_args(argv)
    if not args.warm_cache:  # before torch is imported: a cold compile every run
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="stnkit-inductor-")

    import warnings

    import torch
    import torch.nn.functional as F

    from stnkit.models import create_model, model_spec

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch's own, on compile
    torch.set_num_threads(args.threads)
    spec = model_spec(args.model)
    torch.manual_seed(0)
    model = create_model(args.model, input_size=spec.default_input_size)
    x = torch.rand(args.batch, *spec.default_input_size)
    y = torch.randint(0, spec.default_num_classes, (args.batch,))

    def make_step(m, compiled: bool):
        opt = torch.optim.SGD(m.parameters(), lr=0.01)

        def loss_fn(x, y):
            return F.cross_entropy(m(x), y)

        def opt_step():
            opt.step()

        if compiled:
            loss_fn = torch.compile(loss_fn, backend=args.backend, fullgraph=True)
            opt_step = torch.compile(opt_step, backend=args.backend)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(x, y)
            loss.backward()
            opt_step()
            return loss.detach()

        return step

    eager = make_step(copy.deepcopy(model), compiled=False)
    compiled = make_step(model, compiled=True)
    t0 = time.perf_counter()
    compiled()
    first = time.perf_counter() - t0
    for _ in range(2):  # warm-up (and any recompile of the optimiser after its first step)
        eager()
        compiled()

    times = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name, step in (("eager", eager), ("compiled", compiled)):
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}

    print(f"# {args.model}, batch {args.batch}, torch.compile(backend={args.backend!r})")
    print("\n".join(cpu_lines(args.threads)))
    print(f"- {args.rounds} interleaved rounds of {args.steps} steps; medians\n")
    print("| | time |")
    print("|---|---|")
    print(f"| compile (first step - median step) | {first - med['compiled']:.1f} s |")
    print(f"| eager step | {med['eager'] * 1e3:.1f} ms |")
    print(f"| compiled step | {med['compiled'] * 1e3:.1f} ms "
          f"({med['eager'] / med['compiled']:.2f}x eager) |")


if __name__ == "__main__":
    sys.exit(main())
