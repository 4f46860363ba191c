"""Images/s of one training step, fp32 against bf16 (NCHW and channels_last), on the CPU.

    THP_MEM_ALLOC_ENABLE=1 MALLOC_MMAP_THRESHOLD_=33554432 \\
    MALLOC_TRIM_THRESHOLD_=17179869184 python benchmarks/train_step.py
    python benchmarks/train_step.py --models cnn,fcn --sizes 28 --rounds 3 --steps 2  # quick

Every Table 1 model at its input size (28 x 28 for R, P, E; 42 x 42 for RTS), built by
``stnkit.models.create_model(name, input_size=...)``. One step is what ``stnkit train`` does
per iteration: ``stnkit.train.loop.forward_loss`` (the forward pass under autocast, the loss
from float32 logits), the loss read back and the errors counted (the loop's statistics),
``stnkit.train.loop.optimizer_step`` (backward, Adam step through the GradScaler, which is
disabled outside fp16), with the optimiser ``stnkit train --schedule cpu`` builds (Adam, lr
1e-3, the model's parameter groups), on a random batch.

The reference, "plain PyTorch": the same CNN (``create_model("cnn")``), trained by the
textbook loop (``zero_grad``; ``with torch.autocast(...)``: ``F.cross_entropy(model(x), y)``;
``backward``; ``torch.optim.Adam(model.parameters()).step()``), no stnkit code in the step, in
the same process and rounds. "stnkit gain / plain gain" compares what bf16 buys stnkit's CNN
step with what it buys the plain loop (the issue's target on CPUs with bf16 vector
instructions but no AMX: >= 90 %; on AMX CPUs: bf16 >= 2.5x fp32).

Timing: ``--rounds`` interleaved rounds (every configuration once per round, the order the
same each round) of ``--steps`` steps after one warm-up step; the table shows the median
images/s over the rounds. Printed first: CPU model, its bf16 flags (avx512_bf16, amx_bf16,
amx_tile from /proc/cpuinfo), threads, torch version, the allocator settings, load average.
A configuration that raises (ST models under bf16 autocast before the ops take mixed dtypes)
shows the error's first words instead of a number.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

MODELS = ("cnn", "fcn", "st-cnn-aff", "st-cnn-proj", "st-cnn-tps", "st-fcn-aff", "st-fcn-proj",
          "st-fcn-tps")
SIZES = {28: "R, P, E", 42: "RTS"}
VARIANTS = (("fp32", False), ("bf16", False), ("bf16", True))  # (precision, channels_last)


def machine_lines() -> list[str]:
    import torch

    from stnkit._machine import allocator_settings, cpu_info, load_average
    from stnkit.train.precision import bf16_cpu_flags

    model = cpu_info()[0]
    flags = bf16_cpu_flags()
    load = load_average()
    return [f"- CPU: {model}, {os.cpu_count()} CPUs; bf16 flags: {' '.join(flags) or 'none'} "
            "(of avx512_bf16 amx_bf16 amx_tile)",
            f"- torch {torch.__version__}, python {platform.python_version()}, threads "
            f"{torch.get_num_threads()}",
            f"- allocator: {allocator_settings()}",
            f"- load average (1, 5, 15 min) at start: {load}"]


class StnkitStep:
    """stnkit's training step (the loop's own functions) for one model and variant."""

    def __init__(self, name, size, precision, nhwc, batch):
        import torch

        from stnkit.train.config import resolve_config
        from stnkit.train.loop import _create_model, _make_optimizer
        from stnkit.train.precision import make_scaler

        torch.manual_seed(0)
        model = _create_model(name, input_size=(1, size, size), num_classes=10)
        if nhwc:
            model = model.to(memory_format=torch.channels_last)
        cfg = resolve_config(overrides={"model": name, "data": "R", "out": "-",
                                        "schedule": "cpu", "precision": precision})
        self.model, self.precision, self.nhwc = model.train(), precision, nhwc
        self.opt = _make_optimizer(cfg, model)
        self.scaler = make_scaler(precision, torch.device("cpu"))
        self.x = torch.rand(batch, 1, size, size)
        self.y = torch.randint(0, 10, (batch,))

    def __call__(self):
        import torch

        from stnkit.train.loop import forward_loss, optimizer_step

        logits, loss = forward_loss(self.model, self.x, self.y, precision=self.precision,
                                    channels_last=self.nhwc)
        with torch.no_grad():  # the loop's statistics
            float(loss), float((logits.argmax(1) != self.y).sum())
        optimizer_step(self.opt, self.scaler, loss)


class PlainStep:
    """The textbook PyTorch loop on the same CNN: no stnkit code in the step."""

    def __init__(self, name, size, precision, nhwc, batch):
        import torch

        from stnkit.models import create_model

        torch.manual_seed(0)
        model = create_model(name, input_size=(1, size, size), num_classes=10)
        self.x = torch.rand(batch, 1, size, size)
        if nhwc:
            model = model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.model = model.train()
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.y = torch.randint(0, 10, (batch,))
        self.dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]

    def __call__(self):
        import torch
        import torch.nn.functional as F

        self.opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=self.dtype or torch.bfloat16,
                            enabled=self.dtype is not None):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--sizes", default="28,42", help="input sizes: 28 (R, P, E), 42 (RTS)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration a round")
    p.add_argument("--no-plain", action="store_true", help="skip the plain-PyTorch CNN loop")
    p.add_argument("-o", "--out", metavar="FILE", help="also write the report (Markdown) here")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [("stnkit", m, s) for s in sizes for m in models]
    if not args.no_plain:
        rows += [("plain", "cnn", s) for s in sizes]
    head = machine_lines()
    print("\n".join(head), flush=True)

    steps, results, errors = {}, {}, {}
    for row in rows:
        for variant in VARIANTS:
            key = (*row, *variant)
            cls = StnkitStep if row[0] == "stnkit" else PlainStep
            try:
                steps[key] = cls(row[1], row[2], variant[0], variant[1], args.batch)
                steps[key]()  # warm-up (oneDNN primitive creation, allocator)
                results[key] = []
            except Exception as e:  # noqa: BLE001 - shown in the table, not hidden
                errors[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                steps.pop(key, None)
    for r in range(args.rounds):
        for key, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            results[key].append(args.steps * args.batch / (time.perf_counter() - t0))
        print(f"round {r + 1}/{args.rounds} done ({time.strftime('%H:%M:%S')})", file=sys.stderr,
              flush=True)

    def cell(key):
        if key in errors:
            return "fails: " + errors[key].split(":")[0]
        return f"{statistics.median(results[key]):.0f}"

    def ratio(key, base):
        if key in errors or base in errors:
            return "n/a"
        return f"{statistics.median(results[key]) / statistics.median(results[base]):.2f}x"

    lines = ["", f"batch {args.batch}, Adam, {args.rounds} interleaved rounds of {args.steps} "
             "steps, median images/s:", "",
             "| loop | model | input | fp32 | bf16 | bf16 + channels_last | bf16 / fp32 | "
             "bf16 + CL / fp32 |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        base = (*row, "fp32", False)
        keys = [(*row, *v) for v in VARIANTS]
        lines.append(f"| {row[0]} | {row[1]} | {row[2]}x{row[2]} ({SIZES.get(row[2], '')}) | "
                     + " | ".join(cell(k) for k in keys) + " | "
                     + " | ".join(ratio(k, base) for k in keys[1:]) + " |")
    if not args.no_plain and "cnn" in models:
        lines.append("")
        for s in sizes:
            def gain(loop):
                base = (loop, "cnn", s, "fp32", False)
                got = [statistics.median(results[(loop, "cnn", s, *v)]) for v in VARIANTS[1:]
                       if (loop, "cnn", s, *v) in results]
                return max(got) / statistics.median(results[base]) if got and base in results \
                    else None
            a, b = gain("stnkit"), gain("plain")
            if a is not None and b is not None:
                # the gain is the speed-up less 1; a "gain" share means little when both lose
                share = f"{(a - 1) / (b - 1):.0%}" if b > 1 else "n/a (plain PyTorch gains nothing)"
                lines.append(f"- cnn {s}x{s}, best bf16 / fp32: stnkit {a:.2f}x, plain PyTorch "
                             f"{b:.2f}x; stnkit's gain / plain's gain: {share}")
    errs = sorted({e for e in errors.values()})
    if errs:
        lines += ["", "Errors: " + "; ".join(errs)]
    from stnkit._machine import load_average

    load = load_average()
    if load != "?":
        lines += ["", f"- load average at the end: {load}"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(head) + "\n" + text + "\n")


if __name__ == "__main__":
    main()
