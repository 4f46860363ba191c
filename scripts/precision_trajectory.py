"""How runs of one model start (issue 15): training error, test error and the affine
transformer's theta over the first steps, side by side, and the theta of two precisions of
the same seed against each other.

Reads ``stnkit train`` run directories of a model with one affine transformer, trained with
frequent logs and evaluations so that there is something to compare, e.g.::

    stnkit train --model st-cnn-aff --data P --schedule cpu --precision bf16 --seed 2 \\
        --log-every 25 --eval-every 100 --test-size 1000 --snapshot-count 256 -o RUN

(evaluations and snapshots do not change the training: the same seed gives the same steps
with or without them). At each snapshot step it summarises theta on the snapshot's fixed
test samples: ``zoom``, the mean of sqrt|det A| (the side of the sampled source region
against the whole input: under 1 the transformer zooms in); ``shift``, the mean length of the
translation (normalised units: 1 is half the input); ``rotation``, the mean of the absolute
angle of A's nearest rotation, in degrees; and, for two runs of the same seed and different
precisions, ``|d theta|``, the mean absolute difference of their thetas (every entry, every
sample). Writes a Markdown page and a PNG of the curves next to it.

    python scripts/precision_trajectory.py RUN_DIR ... -o docs/results/precision-start-p.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from budget_curve import cpu_line  # scripts/ is on sys.path when this file runs

from stnkit._io import atomic_write_bytes
from stnkit.viz.run import read_metrics, read_snapshots


def theta_stats(theta: torch.Tensor) -> dict[str, float]:
    """``zoom``, ``shift`` and ``rotation`` (degrees) of affine thetas (N, 2, 3), averaged
    over the N samples."""
    if theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
        raise ValueError(f"theta: expected affine thetas of shape (N, 2, 3), got "
                         f"{tuple(theta.shape)}")
    a = theta[:, :, :2].double()
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
    angle = torch.atan2(a[:, 1, 0] - a[:, 0, 1], a[:, 0, 0] + a[:, 1, 1])
    return {"zoom": float(det.abs().sqrt().mean()),
            "shift": float(theta[:, :, 2].double().norm(dim=1).mean()),
            "rotation": float(angle.abs().mean() * 180 / math.pi)}


def read_trajectory(run: Path) -> dict:
    """A run's settings, its logged training and test errors, and theta at each snapshot
    with its :func:`theta_stats`."""
    cfg = json.loads((run / "config.json").read_text())
    metrics = read_metrics(run)
    snaps = read_snapshots(run)
    if snaps is None or not snaps.steps:
        raise ValueError(f"{run}: no snapshots (train with --snapshot-count N > 0)")
    if len(snaps.steps[0].thetas) != 1:
        raise ValueError(f"{run}: expected one transformer, found "
                         f"{len(snaps.steps[0].thetas)}")
    return {"name": run.name, "model": cfg["model"], "variant": cfg["data"], "seed": cfg["seed"],
            "precision": cfg.get("precision", "fp32"), "test_size": cfg.get("test_size"),
            "train": [(m["step"], m["error"]) for m in metrics if m["split"] == "train"],
            "test": [(m["step"], m["error"]) for m in metrics if m["split"] == "test"],
            "thetas": {s.step: s.thetas[0] for s in snaps.steps},
            "stats": {s.step: theta_stats(s.thetas[0]) for s in snaps.steps}}


def pairs(runs: list[dict]) -> list[tuple[dict, dict]]:
    """(fp32 run, other-precision run) for every seed that has both."""
    out = []
    for r in runs:
        if r["precision"] == "fp32":
            continue
        for ref in runs:
            if (ref["precision"] == "fp32" and ref["seed"] == r["seed"]
                    and ref["model"] == r["model"] and ref["variant"] == r["variant"]):
                out.append((ref, r))
    return out


def theta_gap(a: dict, b: dict) -> list[tuple[int, float]]:
    """(step, mean |theta_a - theta_b|) at the snapshot steps the two runs share."""
    return [(s, float((a["thetas"][s].double() - b["thetas"][s].double()).abs().mean()))
            for s in sorted(set(a["thetas"]) & set(b["thetas"]))
            if a["thetas"][s].shape == b["thetas"][s].shape]


def summary_steps(runs: list[dict]) -> list[int]:
    """The snapshot steps after 0 that at least two runs share, up to the shortest run's last."""
    last = min(max(r["thetas"]) for r in runs)
    counts: dict[int, int] = {}
    for r in runs:
        for s in r["thetas"]:
            counts[s] = counts.get(s, 0) + 1
    return sorted(s for s, n in counts.items() if 0 < s <= last and n >= 2)


def summary(runs: list[dict]) -> list[str]:
    """Test error and zoom of every run at the steps :func:`summary_steps` picks, a row per run
    (precision, then seed), "-" where a run was not evaluated."""
    steps = summary_steps(runs)
    if not steps:
        return []
    out = []
    for title, fmt, value in (("Test error (%)", ".2f", lambda r, s: dict(r["test"]).get(s)),
                              ("Zoom", ".3f", lambda r, s: r["stats"].get(s, {}).get("zoom"))):
        out += [f"{title} at step:", "",
                "| run | precision | seed | " + " | ".join(map(str, steps)) + " |",
                "| --- | --- | ---: | " + " | ".join("---:" for _ in steps) + " |"]
        for r in sorted(runs, key=lambda r: (r["precision"], r["seed"], r["name"])):
            cells = [value(r, s) for s in steps]
            out.append(f"| {r['name']} | {r['precision']} | {r['seed']} | " + " | ".join(
                "-" if v is None else format(v, fmt) for v in cells) + " |")
        out.append("")
    return out


def page(runs: list[dict], png: str | None) -> str:
    out = ["# How the runs start: errors and theta over the first steps", "",
           "Per snapshot step: test error (%) on the run's test samples, training error (%) "
           "of the steps logged since the previous line, and theta on the snapshot's fixed test "
           "samples (zoom: mean sqrt|det A|, under 1 zooms in; shift: mean |t|; rotation: mean "
           "|angle|, degrees). Command: `python scripts/precision_trajectory.py RUN_DIR ... -o "
           f"PAGE`. CPU (the one that ran the runs and read them): {cpu_line()}.", ""]
    out += summary(runs)
    for r in runs:
        train, test = dict(r["train"]), dict(r["test"])
        tested = ("the whole test set" if r["test_size"] is None
                  else f"the first {r['test_size']} test digits")
        out += [f"## {r['name']} ({r['model']}, {r['variant']}, {r['precision']}, seed "
                f"{r['seed']}; test error on {tested})", "",
                "| step | test error | training error | zoom | shift | rotation |",
                "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for step in sorted(r["thetas"]):
            st = r["stats"][step]
            tr, te = train.get(step), test.get(step)
            out.append(f"| {step} | {'-' if te is None else f'{te:.2f}'} | "
                       f"{'-' if tr is None else f'{tr:.2f}'} | {st['zoom']:.3f} | "
                       f"{st['shift']:.3f} | {st['rotation']:.1f} |")
        out.append("")
    for ref, r in pairs(runs):
        gap = ", ".join(f"{s}: {g:.4f}" for s, g in theta_gap(ref, r))
        out += [f"- mean |theta {r['precision']} - theta fp32|, seed {r['seed']} "
                f"(step: value): {gap}"]
    if png:
        out += ["", f"![errors and theta over the first steps]({png})"]
    out.append("")
    return "\n".join(out)


def plot(runs: list[dict], path: Path) -> bool:
    """Three panels against the step: training error, test error, zoom; a colour per seed,
    solid fp32, dashed the other precision."""
    try:
        from stnkit.viz._deps import figure, render
        from stnkit.viz.images import save_png
    except ImportError:
        return False
    with figure(11.0, 3.4, dpi=100) as fig:
        axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
        for r in runs:
            style = dict(ls="-" if r["precision"] == "fp32" else "--", lw=1,
                         color=f"C{r['seed'] % 10}", label=f"{r['precision']}, seed {r['seed']}")
            for ax, pts in ((axes[0], r["train"]), (axes[1], r["test"])):
                if pts:
                    ax.plot(*zip(*pts, strict=True), **style)
            steps = sorted(r["thetas"])
            axes[2].plot(steps, [r["stats"][s]["zoom"] for s in steps], **style)
        for ax, what in zip(axes, ("training error (%)", "test error (%)", "zoom (sqrt|det A|)"),
                            strict=True):
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel(what, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in axes[:2]:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter("{x:g}")
            ax.yaxis.set_minor_formatter("{x:g}")
        handles, labels = axes[2].get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))  # a seed's runs share a label
        axes[2].legend(unique.values(), unique.keys(), fontsize=6, ncol=2)
        fig.tight_layout()
        save_png(path, render(fig))
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="stnkit train run directories")
    p.add_argument("-o", "--out", type=Path, help="write the page here (else stdout)")
    args = p.parse_args(argv)
    try:
        runs = [read_trajectory(run) for run in args.runs]
    except (OSError, ValueError, KeyError) as e:
        print(f"precision_trajectory: {e}", file=sys.stderr)
        return 1
    if not args.out:
        print(page(runs, None))
        return 0
    png = args.out.with_suffix(".png")
    drawn = plot(runs, png)
    atomic_write_bytes(args.out, page(runs, png.name if drawn else None).encode())
    print(f"wrote {args.out}" + (f" and {png}" if drawn else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
