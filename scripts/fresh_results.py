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
    out = ["# Table 1 with the `fresh` schedule: % test error", "",
           f"CPU: {cpu_model()}; one thread per run, two runs side by side (the machine "
           "also ran other work, so wall minutes overstate; CPU minutes are the cost).", "",
           "Command per model (resumable cell by cell): `OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 "
           "stnkit reproduce table1 --schedule fresh --seeds 1 --models MODEL --variants "
           "RTS,R,P,E --data-dir ../shared/data/mnist -o DIR`; this page: "
           "`python scripts/fresh_results.py DIR...`.", "",
           "Each cell: ours with `fresh` (mean ± std [seeds] when several finished; "
           "`*` = unfinished, the last evaluation), the `cpu` schedule's, the paper's.", "",
           "| model | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
    for m in models:
        row = []
        for v in VARIANTS:
            cs = [c for c in found if c["model"] == m and c["variant"] == v]
            done = [c["curve"][-1][1] for c in cs if c["finished"] and c["curve"]]
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
