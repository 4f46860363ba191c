"""bf16 against fp32 gradients of one model on the same batches (issue 15).

For the weights of each run directory given (its last checkpoint), and of fresh
initialisations (``--init-seeds``), computes the loss gradient of every parameter on the
same training batches twice, as ``stnkit train`` computes it (``forward_loss``: autocast,
channels_last inputs, float32 loss) in fp32 and in bf16, and reports per part of the model
(the localisation net, the theta regressor, the classifier) the cosine between the two
gradients and the ratio of their norms (bf16 / fp32), over the batches: what bf16 does to the
signal each part learns from, at the same weights. For scale, the cosine between the fp32
gradients of consecutive batches: how much the batch draw alone changes that signal.

    python scripts/precision_gradients.py RUN_DIR ... --init-seeds 0,1,2 --data P \\
        --model st-cnn-aff --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from budget_curve import cpu_line  # scripts/ is on sys.path when this file runs

from stnkit.data import VARIANTS, DistortedMNIST
from stnkit.models import create_model
from stnkit.train import checkpoint as ckpt
from stnkit.train.loop import forward_loss
from stnkit.train.precision import channels_last
from stnkit.viz.run import load_run_model

PARTS = (("localisation net", "transformer.localization."),
         ("theta regressor", "transformer.regressor."),
         ("classifier", "classifier."))


def part_of(name: str) -> str:
    for part, prefix in PARTS:
        if name.startswith(prefix):
            return part
    return "other"


def gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              precision: str) -> dict[str, torch.Tensor]:
    """Each part's gradient, flattened into one float64 vector, on batch (x, y)."""
    model.zero_grad(set_to_none=True)
    _, loss = forward_loss(model, x, y, precision=precision,
                           channels_last=channels_last(precision, model))
    loss.backward()
    flat: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            flat.setdefault(part_of(name), []).append(p.grad.detach().double().flatten())
    return {part: torch.cat(gs) for part, gs in flat.items()}


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float] | None:
    """(cosine, |b| / |a|) of two gradient vectors; None where either is zero."""
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return None
    return float(a @ b) / (na * nb), nb / na


def rows(label: str, model: torch.nn.Module, batches: list) -> list[str]:
    """A table row per part: the bf16 / fp32 cosine (mean and min over the batches) and norm
    ratio, and the cosine between the fp32 gradients of consecutive batches (the noise of
    the batch draw, which training lives with) for scale."""
    per_part: dict[str, list[tuple[float, float] | None]] = {}
    between: dict[str, list[tuple[float, float] | None]] = {}
    model.train()
    previous: dict[str, torch.Tensor] = {}
    for x, y in batches:
        ref, low = gradients(model, x, y, "fp32"), gradients(model, x, y, "bf16")
        for part in ref:
            per_part.setdefault(part, []).append(compare(ref[part], low[part]))
            if part in previous:
                between.setdefault(part, []).append(compare(previous[part], ref[part]))
        previous = ref
    out = []
    for part, _ in PARTS:
        if part not in per_part:
            continue
        found = [c for c in per_part[part] if c is not None]
        if not found:  # the localisation net of a fresh model: its regressor's weights are 0
            out.append(f"| {label} | {part} | - | - | - (zero gradient) | - |")
            continue
        cos, ratio = zip(*found, strict=True)
        noise = [c[0] for c in between.get(part, []) if c is not None]
        out.append(f"| {label} | {part} | {statistics.mean(cos):.4f} | {min(cos):.4f} | "
                   f"{statistics.mean(ratio):.3f} | "
                   f"{f'{statistics.mean(noise):.2f}' if noise else '-'} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="stnkit train run directories")
    p.add_argument("--init-seeds", default="", help="comma-separated seeds of fresh models")
    p.add_argument("--model", default="st-cnn-aff")
    p.add_argument("--data", default="P")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    ds = DistortedMNIST(args.data, "train", root=args.data_dir, progress=False)
    gen = torch.Generator().manual_seed(1234)
    batches = []
    for _ in range(args.batches):
        idx = torch.randint(len(ds), (args.batch_size,), generator=gen).tolist()
        images, labels = zip(*(ds[i] for i in idx), strict=True)
        batches.append((torch.stack(images), torch.tensor(labels)))
    size = tuple(batches[0][0].shape[1:])
    classes = VARIANTS[args.data].num_classes
    print(f"# bf16 against fp32 gradients: {args.model} on {args.data}, {args.batches} "
          f"training batches of {args.batch_size} (the same for every row)\n")
    print(f"Command: `python scripts/precision_gradients.py {' '.join(argv or sys.argv[1:])}`; "
          f"CPU: {cpu_line()}, torch {torch.__version__}, {torch.get_num_threads()} "
          "threads.\n")
    print("| weights | part | cosine (mean) | cosine (min) | norm bf16 / fp32 (mean) "
          "| fp32 cosine of consecutive batches (mean) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for seed in [int(s) for s in args.init_seeds.split(",") if s]:
        torch.manual_seed(seed)
        model = create_model(args.model, input_size=size, num_classes=classes)
        print("\n".join(rows(f"init, torch.manual_seed({seed})", model, batches)))
    for run in args.runs:
        model = load_run_model(run, input_size=size)
        step = ckpt.read_record(run)["step"]
        print("\n".join(rows(f"{run.name}, step {step}", model, batches)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
