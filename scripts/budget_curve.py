"""RTS budget curve (issue 15): how far the gap to the paper closes with compute.

Reads ``stnkit train`` run directories (one model on one variant each, e.g. the CNN and the
ST-CNN (affine) at 1x, 3x and 10x the ``cpu`` schedule's 64k samples: ``--iterations``
2000 k with ``--lr-step`` 800 k, so the step schedule keeps its shape) and writes a Markdown
page and a PNG next to it: each run's final test error against the training samples it saw
and the CPU minutes it cost, the test errors measured along the way, and the paper's error.
Unfinished runs are listed with their last evaluation, marked, and drawn hollow.

Next to the page it writes the runs as read (``PAGE.json``: settings, evaluations, cost and
the CPU of each run). Passing that file back with new run directories adds them to the runs
of earlier sessions or other machines, whose directories are gone; a run directory replaces
the record of the same name.

    python scripts/budget_curve.py docs/results/budget-rts.json /work/runs/budget-RTS/* \
        -o docs/results/budget-rts.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stnkit._io import atomic_write_bytes
from stnkit._machine import cpu_info
from stnkit.train.config import PRESETS
from stnkit.train.paper import CITATION, paper_error

BASE = PRESETS["cpu"]["iterations"] * PRESETS["cpu"]["batch_size"]  # 1x: the cpu schedule
COLOURS = {"cnn": "#d62728", "st-cnn-aff": "#1f77b4"}


def read_run(run: Path) -> dict | None:
    """One run directory: its settings, final (or last) test error and cost; None if empty.
    Without its ``metrics.jsonl`` (a record kept in docs/results/), the evaluation in its
    ``checkpoint.json`` is the only one. Its CPU is this machine's (the one that reads a run
    directory is the one that ran it)."""
    if not (run / "checkpoint.json").exists():
        return None
    rec = json.loads((run / "checkpoint.json").read_text())
    cfg = rec["config"]
    log = run / "metrics.jsonl"
    if log.exists():
        lines = [json.loads(s) for s in log.read_text().splitlines()]
    else:  # a committed record without its log: only the last evaluation it holds
        last = (rec.get("metrics") or {}).get("test")
        lines = [last] if last else []
    tests = [(m["step"] * cfg["batch_size"], m["error"]) for m in lines
             if m["split"] == "test" and m["step"] <= rec["step"]]
    if not tests:
        return None
    samples = cfg["iterations"] * cfg["batch_size"]
    return {"name": run.name, "cpu": cpu_line(), "model": cfg["model"], "variant": cfg["data"],
            "seed": cfg["seed"],
            "budget": samples / BASE, "samples": samples, "curve": tests,
            "finished": bool(rec["finished"]) and rec["step"] >= cfg["iterations"],
            "step": rec["step"], "iterations": cfg["iterations"],
            "cpu_min": rec.get("cpu_seconds", 0) / 60, "wall_min": rec.get("elapsed", 0) / 60,
            "threads": rec.get("num_threads"), "precision": cfg.get("precision", "fp32")}


def read_runs(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """The records of ``paths`` (run directories, and ``.json`` files of records written by
    ``write_records``), one per name, the last given winning; and the names of the
    directories that have no test evaluation yet."""
    by_name: dict[str, dict] = {}
    empty = []
    for path in paths:
        if path.suffix == ".json" and path.is_file():
            for r in json.loads(path.read_text()):
                r["curve"] = [tuple(point) for point in r["curve"]]
                by_name[r["name"]] = r
        elif (r := read_run(path)) is not None:
            by_name[r["name"]] = r
        elif path.is_dir():
            empty.append(path.name)
    return list(by_name.values()), empty


def write_records(path: Path, runs: list[dict]) -> None:
    """``runs`` as a JSON list that ``read_runs`` reads back."""
    text = json.dumps(sorted(runs, key=lambda r: r["name"]), indent=1) + "\n"
    atomic_write_bytes(path, text.encode())


def plot(runs: list[dict], path: Path) -> bool:
    """Two panels, test error (log) against samples seen and against CPU minutes: a line per
    model through its runs' final errors, each run's evaluations thin, the paper dashed."""
    try:
        from stnkit.viz._deps import figure, render
        from stnkit.viz.images import save_png
    except ImportError:
        return False
    with figure(10.4, 3.8, dpi=100) as fig:
        by_samples, by_cpu = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for model in sorted({r["model"] for r in runs}):
            mine = sorted((r for r in runs if r["model"] == model), key=lambda r: r["samples"])
            colour = COLOURS.get(model, "black")
            for r in mine:
                n, e = zip(*[(n / 1000, e) for n, e in r["curve"]], strict=True)
                by_samples.plot(n, e, "-", color=colour, lw=0.6, alpha=0.6)
            for ax, x in ((by_samples, lambda r: r["curve"][-1][0] / 1000),
                          (by_cpu, lambda r: r["cpu_min"])):
                done = [r for r in mine if r["finished"]]  # the line joins finished runs
                ax.plot([x(r) for r in done], [r["curve"][-1][1] for r in done], "-",
                        color=colour, lw=1.5, label=model)
                for r in mine:
                    ax.plot([x(r)], [r["curve"][-1][1]], "o", color=colour, ms=6,
                            mfc=colour if r["finished"] else "white")
                    ax.annotate(f"{r['budget']:g}x", (x(r), r["curve"][-1][1]), fontsize=7,
                                xytext=(4, 4), textcoords="offset points")
                pe = paper_error("table1", mine[0]["variant"], model)
                if pe is not None:
                    ax.axhline(pe.error, color=colour, ls="--", lw=0.8)
        for ax, label in ((by_samples, "training samples seen (thousands)"),
                          (by_cpu, "CPU minutes (one thread)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter("{x:g}")
                axis.set_minor_formatter("{x:g}")
            ax.tick_params(which="both", labelsize=7)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("test error (%)", fontsize=8)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        fig.suptitle(f"{runs[0]['variant']}, cpu schedule scaled 1x / 3x / 10x: test error "
                     "(dashed: the paper's; hollow: unfinished)", fontsize=10)
        fig.tight_layout()
        save_png(path, render(fig))
    return True


def cpu_line() -> str:
    """The CPU's model and the vector flags that decide its speed, e.g. "AMD EPYC (avx2)"."""
    name, flags = cpu_info()
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(have) or 'no AVX2'})"


def page(runs: list[dict], png: str | None) -> str:
    out = [f"# Budget curve: {runs[0]['variant']}, CNN and ST-CNN (affine)", "",
           "Each run is `stnkit train --schedule cpu` with `--iterations 2000k --lr-step 800k` "
           f"(k = 1, 3, 10: 64k, 192k, 640k samples of the fixed distorted training set, "
           "batch 32, Adam 1e-3, x0.3 every 800k steps), seed 0, one thread, float32. "
           "CPU minutes are the process's "
           "CPU time (wall minutes overstate: the runs shared two cores with other work and "
           "were paused while benchmarks ran). Command: "
           "`python scripts/budget_curve.py [PAGE.json] RUN_DIR ... -o PAGE` (PAGE.json: the "
           "records of the runs read before, whose directories may be gone).", "",
           "| model | budget | samples | test error (%) | paper | CPU min | wall min | CPU |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(runs, key=lambda r: (r["model"], r["samples"])):
        pe = paper_error("table1", r["variant"], r["model"])
        err = f"{r['curve'][-1][1]:.2f}"
        if not r["finished"]:
            err += f" (unfinished: step {r['step']} of {r['iterations']})"
        out.append(f"| {r['model']} | {r['budget']:g}x | {r['samples'] // 1000}k | {err} | "
                   f"{'-' if pe is None else pe.error} | {r['cpu_min']:.0f} | "
                   f"{r['wall_min']:.0f} | {r['cpu']} |")
    if png:
        out += ["", f"![test error against samples and CPU minutes]({png})"]
    out += ["", "Test error along the way (samples seen: error %):", ""]
    for r in sorted(runs, key=lambda r: (r["model"], r["samples"])):
        trace = ", ".join(f"{n // 1000}k: {e:.2f}" for n, e in r["curve"])
        out.append(f"- {r['model']} {r['budget']:g}x: {trace}")
    out += ["", f"Paper: {CITATION}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path,
                   help="stnkit train run directories, and .json records of earlier runs")
    p.add_argument("-o", "--out", type=Path, required=True, help="the Markdown page")
    args = p.parse_args(argv)
    runs, _ = read_runs(args.runs)
    if not runs:
        print("budget_curve: no run with a test evaluation", file=sys.stderr)
        return 1
    png = args.out.with_suffix(".png")
    drawn = plot(runs, png)
    atomic_write_bytes(args.out, page(runs, png.name if drawn else None).encode())
    write_records(args.out.with_suffix(".json"), runs)
    print(f"wrote {args.out}, {args.out.with_suffix('.json')}" + (f" and {png}" if drawn else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
