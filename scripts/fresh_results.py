"""Table 1 with the ``fresh`` schedule (issue 18), from reproduction directories.

Reads every cell ``DIR/runs/<variant>/<model>/seed<k>/`` of the given directories (made by
``stnkit reproduce table1 --schedule fresh``, possibly several side by side) and writes a
Markdown page: the final test error of each cell next to the paper's and the ``cpu``
schedule's (``docs/results/table1-cpu.csv``), mean +- std where several seeds finished, the
CPU minutes and wall minutes of each cell, and every cell's test error against the training
samples it had seen (unfinished cells included, marked), so it is clear what budget a target
needs.

    python scripts/fresh_results.py /work/runs/fresh-st /work/runs/fresh-cnn \\
        -o docs/results/table1-fresh.md
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from stnkit._io import atomic_write_bytes

from stnkit.train.config import PRESETS
from stnkit.train.paper import CITATION, paper_error

VARIANTS = ("R", "RTS", "P", "E")
TARGET = 1.5  # issue 18: ST-CNN (affine) within 1.5x of the paper's error


def cpu_model() -> str:
    from stnkit._machine import cpu_info

    name, flags = cpu_info()
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(have) or 'no AVX2'})"


def cells(dirs: list[Path]):
    for d in dirs:
        for run in sorted((d / "runs").glob("*/*/seed*")):
            rec_path = run / "checkpoint.json"
            if not rec_path.exists():
                continue
            rec = json.loads(rec_path.read_text())
            cfg = rec["config"]
            lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
            tests = [m for m in lines if m["split"] == "test" and m["step"] <= rec["step"]]
            yield {"variant": cfg["data"], "model": cfg["model"], "seed": cfg["seed"],
                   "finished": bool(rec["finished"]) and rec["step"] >= cfg["iterations"],
                   "step": rec["step"], "iterations": cfg["iterations"],
                   "batch": cfg["batch_size"], "cpu_min": rec.get("cpu_seconds", 0) / 60,
                   "wall_min": rec.get("elapsed", 0) / 60, "threads": rec.get("num_threads"),
                   "curve": [(m["step"] * cfg["batch_size"], m["error"]) for m in tests]}


def plot_curves(found: list[dict], path: Path, old: dict | None = None) -> bool:
    """PNG: test error (log scale) against training samples seen, one panel per variant, a
    line per model (seed 0 bold, other seeds thin), the paper's errors dashed, the ``cpu``
    schedule's (``old``: fixed data, 2,000 x 32 = 64k samples) as crosses. False when there
    is nothing to draw or no matplotlib."""
    try:
        from stnkit.viz._deps import figure, render
        from stnkit.viz.images import save_png
    except ImportError:
        return False
    variants = [v for v in VARIANTS if any(c["variant"] == v and c["curve"] for c in found)]
    if not variants:
        return False
    colours = {"cnn": "#d62728", "st-cnn-aff": "#1f77b4", "st-cnn-proj": "#2ca02c",
               "st-cnn-tps": "#9467bd", "fcn": "#8c564b", "st-fcn-aff": "#e377c2"}
    dpi, cols = 100, min(2, len(variants))
    rows = -(-len(variants) // cols)
    with figure(5.2 * cols, 3.4 * rows + 0.4, dpi=dpi) as fig:
        for i, v in enumerate(variants):
            ax = fig.add_subplot(rows, cols, i + 1)
            for c in sorted((c for c in found if c["variant"] == v and c["curve"]),
                            key=lambda c: c["seed"]):
                n, e = zip(*[(n / 1000, e) for n, e in c["curve"] if n], strict=True)
                colour = colours.get(c["model"], "black")
                ax.plot(n, e, "o-", color=colour, lw=2 if c["seed"] == 0 else 0.8,
                        ms=4 if c["seed"] == 0 else 2,
                        label=c["model"] if c["seed"] == 0 else None)
                pe = paper_error("table1", v, c["model"])
                if pe is not None and c["seed"] == 0:
                    ax.axhline(pe.error, color=colour, ls="--", lw=0.8)
                if old and (v, c["model"]) in old and c["seed"] == 0:
                    ax.plot([64], [old[(v, c["model"])]], "x", color=colour, ms=7, mew=2)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter("{x:g}")
            ax.yaxis.set_minor_formatter("{x:g}")
            ax.tick_params(axis="y", which="both", labelsize=7)
            ax.set_xlim(0, None)
            ax.set_title(f"{v} (dashed: the paper's; x: the cpu schedule's)", fontsize=10)
            ax.set_xlabel("training samples seen (thousands)", fontsize=8)
            ax.set_ylabel("test error (%)", fontsize=8)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        fig.suptitle("Table 1, `fresh` schedule: test error against samples seen", fontsize=11)
        fig.tight_layout()
        save_png(path, render(fig))
    return True


def final_errors(found: list[dict], model: str, variant: str) -> list[float]:
    """The final test errors of the finished cells of (model, variant), one per seed."""
    return [c["curve"][-1][1] for c in found if c["model"] == model
            and c["variant"] == variant and c["finished"] and c["curve"]]


def cpu_schedule(path: Path) -> dict[tuple[str, str], float]:
    if not path.exists():
        return {}
    with open(path) as f:
        return {(r["variant"], r["model"]): float(r["mean_error"]) for r in csv.DictReader(f)
                if r["mean_error"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("-o", "--out", type=Path, default=Path("docs/results/table1-fresh.md"))
    p.add_argument("--cpu-table", type=Path, default=Path("docs/results/table1-cpu.csv"))
    args = p.parse_args()
    found = list(cells(args.dirs))
    old = cpu_schedule(args.cpu_table)
    models = [m for m in ("cnn", "st-cnn-aff", "st-cnn-proj", "st-cnn-tps", "fcn", "st-fcn-aff")
              if any(c["model"] == m for c in found)]
    budgets = {c["iterations"] for c in found} - {PRESETS["fresh"]["iterations"]}
    iterations = (f" --iterations {budgets.pop()}" if len(budgets) == 1
                  else " --iterations N" if budgets else "")
    out = ["# Table 1 with the `fresh` schedule: % test error", "",
           f"CPU: {cpu_model()}; one thread per run, two runs side by side (the machine "
           "also ran other work, so wall minutes overstate; CPU minutes are the cost).", "",
           "Command per model (resumable cell by cell): `OMP_NUM_THREADS=1 "
           f"stnkit reproduce table1 --schedule fresh{iterations} --seeds 1 --models MODEL "
           "--variants RTS,R,P,E --data-dir ../shared/data/mnist -o DIR` (`--seeds 3` for the "
           "RTS spread); this page and its chart: `python scripts/fresh_results.py DIR...`.", "",
           "Each cell: ours with `fresh` (mean ± std [seeds] when several finished; "
           "`*` = unfinished, the last evaluation), the `cpu` schedule's, the paper's.", "",
           "| model | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    for m in models:
        row = []
        for v in VARIANTS:
            cs = [c for c in found if c["model"] == m and c["variant"] == v]
            done = final_errors(found, m, v)
            if done:
                ours = f"{statistics.fmean(done):.2f}"
                if len(done) > 1:
                    ours += f" ± {statistics.stdev(done):.2f}"
                ours += f" [{len(done)}]"
            elif any(c["curve"] for c in cs):
                ours = f"{[c for c in cs if c['curve']][0]['curve'][-1][1]:.2f}*"
            else:
                ours = "n/a"
            pe = paper_error("table1", v, m)
            cpu = old.get((v, m))
            row.append(f"{ours} (cpu {'n/a' if cpu is None else f'{cpu:.2f}'}, paper "
                       f"{'n/a' if pe is None else f'{pe.error:.1f}'})")
        out.append(f"| {m} | " + " | ".join(row) + " |")
    out += ["", f"Paper: {CITATION}, Table 1.", "",
            "## Target (ST-CNN affine within 1.5x of the paper, <= 45 CPU-minutes per cell)", "",
            "| variant | paper | target | ours | CPU min | met |", "|---|---|---|---|---|---|"]
    for v in VARIANTS:
        cs = [c for c in found if c["model"] == "st-cnn-aff" and c["variant"] == v
              and c["seed"] == 0]
        pe = paper_error("table1", v, "st-cnn-aff").error
        if not cs or not cs[0]["curve"]:
            out.append(f"| {v} | {pe:.1f} | {TARGET * pe:.2f} | n/a | | not run |")
            continue
        c = cs[0]
        err = c["curve"][-1][1]
        met = "yes" if c["finished"] and err <= TARGET * pe and c["cpu_min"] <= 45 else "no"
        if not c["finished"]:
            met = "unfinished"
        out.append(f"| {v} | {pe:.1f} | {TARGET * pe:.2f} | {err:.2f} | {c['cpu_min']:.1f} "
                   f"| {met} |")
    out += ["", "## Does the transformer help? ST-CNN (affine) against the CNN, same budget", "",
            "| variant | cnn | st-cnn-aff | ST better |", "|---|---|---|---|"]
    for v in VARIANTS:
        got = {}
        for m in ("cnn", "st-cnn-aff"):
            done = final_errors(found, m, v)
            got[m] = statistics.fmean(done) if done else None
        if None in got.values():
            verdict = "not both run"
        else:
            verdict = "yes" if got["st-cnn-aff"] < got["cnn"] else "**no**"
        shown = ["n/a" if e is None else f"{e:.2f}" for e in got.values()]
        out.append(f"| {v} | {shown[0]} | {shown[1]} | {verdict} |")
    chart = args.out.with_suffix(".png")
    if plot_curves(found, chart, old):
        out += ["", f"![Test error against training samples seen]({chart.name})"]
    out += ["", "## Every cell: test error against training samples seen", "",
            "| cell | iterations x batch | CPU min | wall min | test error (%) at samples seen |",
            "|---|---|---|---|---|"]
    for c in sorted(found, key=lambda c: (c["model"], VARIANTS.index(c["variant"])
                                          if c["variant"] in VARIANTS else 9, c["seed"])):
        curve = ", ".join(f"{e:.2f} @ {n / 1000:.0f}k" for n, e in c["curve"] if n)
        state = "" if c["finished"] else f" (unfinished: step {c['step']} of {c['iterations']})"
        out.append(f"| {c['variant']} {c['model']} seed{c['seed']}{state} | "
                   f"{c['iterations']} x {c['batch']} | {c['cpu_min']:.1f} | "
                   f"{c['wall_min']:.1f} | {curve} |")
    text = "\n".join(out) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
