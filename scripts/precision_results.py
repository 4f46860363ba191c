"""fp32 against bf16 training (issue 15): test error over seeds, and what each run cost.

Reads ``stnkit train`` run directories (one model, variant and precision each, several seeds;
e.g. ``--model st-cnn-aff --data RTS --schedule cpu --precision bf16 --seed S``) and writes a
Markdown page: per model and precision the final test error of every seed, their mean and
sample standard deviation, the CPU minutes per run, and where the bf16 mean lies against the
range of the fp32 seeds. Unfinished runs are left out and listed. With ``-o PAGE`` the runs
as read go to ``PAGE.json`` too, which can be passed back with new run directories (as in
``budget_curve.py``).

    python scripts/precision_results.py docs/results/precision-rts.json /work/runs/precision-RTS/* \
        -o docs/results/precision-rts.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from budget_curve import read_runs, write_records  # scripts/ is on sys.path when this file runs

from stnkit._io import atomic_write_bytes
from stnkit.train.paper import CITATION, paper_error


def _fmt(errors: list[float]) -> str:
    if len(errors) < 2:
        return f"{errors[0]:.2f}" if errors else "-"
    return f"{statistics.mean(errors):.2f} ± {statistics.stdev(errors):.2f}"


def _threads(runs: list[dict]) -> str:
    """The thread counts of ``runs``, e.g. "1" or "1, 2" ("-" where not recorded)."""
    return ", ".join(sorted({"-" if r.get("threads") is None else str(r["threads"])
                             for r in runs}))


def page(runs: list[dict], unfinished: list[str]) -> str:
    """The Markdown page of finished ``runs`` (``read_run`` records)."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["variant"], r["precision"]), []).append(r)
    lines = ["# Training precision: fp32 against bf16", "",
             "`stnkit train --schedule cpu --precision P --seed S`, one run per seed; test error "
             "(%) at the end of each run; CPU minutes and the threads each run used (the thread "
             "count does not change a run's result, but a run on 2 threads spends more CPU time "
             "for the same work). Command: "
             "`python scripts/precision_results.py [PAGE.json] RUN_DIR ... -o PAGE` "
             "(PAGE.json: the records of the runs read before, whose directories may be "
             "gone).", "",
             "| model | variant | precision | seeds: test error (%) | mean ± std | paper "
             "| CPU min per run | threads | CPU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (model, variant, precision), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        errors = [r["curve"][-1][1] for r in rs]
        seeds = ", ".join(f"{r['seed']}: {e:.2f}" for r, e in zip(rs, errors))
        paper = paper_error("table1", variant, model)
        lines.append(f"| {model} | {variant} | {precision} | {seeds} | {_fmt(errors)} | "
                     f"{'-' if paper is None else paper.error} | "
                     f"{statistics.mean(r['cpu_min'] for r in rs):.1f} | {_threads(rs)} | "
                     f"{'; '.join(sorted({r['cpu'] for r in rs}))} |")
    lines.append("")
    for (model, variant, precision), rs in sorted(groups.items()):
        ref = groups.get((model, variant, "fp32"))
        if precision == "fp32" or not ref or len(ref) < 2:
            continue
        low = min(r["curve"][-1][1] for r in ref)
        high = max(r["curve"][-1][1] for r in ref)
        mean = statistics.mean(r["curve"][-1][1] for r in rs)
        where = "inside" if low <= mean <= high else "below" if mean < low else "above"
        cost = (statistics.mean(r["cpu_min"] for r in rs)
                / statistics.mean(r["cpu_min"] for r in ref))
        ours, theirs = _threads(rs), _threads(ref)
        differences = [] if ours == theirs else [f"{precision} on {ours} threads, fp32 on {theirs}"]
        if {r["cpu"] for r in rs} != {r["cpu"] for r in ref}:
            differences.append(f"{precision} and fp32 runs on different CPUs")
        unlike = f" ({'; '.join(differences)}: not the same cost basis)" if differences else ""
        lines.append(f"- {model} {variant}: the {precision} mean {mean:.2f} % is {where} the "
                     f"range of the fp32 seeds ({low:.2f}-{high:.2f} %); CPU time "
                     f"{cost:.2f}x fp32's{unlike}.")
    if unfinished:
        lines += ["", "Not finished (left out): " + ", ".join(unfinished) + "."]
    lines += ["", f"Paper: {CITATION}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path,
                   help="run directories, and .json records of earlier runs")
    p.add_argument("-o", "--out", type=Path, help="write the page here (else stdout)")
    args = p.parse_args(argv)
    every, unfinished = read_runs(args.runs)
    runs = [r for r in every if r["finished"]]
    unfinished = sorted(unfinished + [r["name"] for r in every if not r["finished"]])
    if not runs:
        print("no finished run among the directories given", file=sys.stderr)
        return 1
    text = page(runs, unfinished)
    if args.out:
        atomic_write_bytes(args.out, text.encode())
        write_records(args.out.with_suffix(".json"), every)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
