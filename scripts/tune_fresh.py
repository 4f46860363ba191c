"""Choose the ``fresh`` schedule's settings on a validation split (issue 18), never the test set.

Each candidate is one ``stnkit train`` run of ST-CNN (affine) on RTS with fresh distortions,
holding out the last 10,000 training digits as the validation set (``--validation-size``),
so the test set is never read. Runs go to ``OUT/<name>/``; a rerun skips finished candidates
and resumes interrupted ones, so the script can be stopped and continued at any time. The
table (validation error, CPU minutes of the run, the CPU model) is written to ``--table``.

    python scripts/tune_fresh.py --data-dir ../shared/data/mnist --out runs/tune --jobs 2

Every run uses one torch thread; ``--jobs`` runs that many side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from stnkit._io import atomic_write_bytes

# name -> flags on top of the fresh preset (AdamW, weight decay 1e-4, cosine, batch 64)
CANDIDATES = {
    "adamw-lr2e-3": ["--lr", "2e-3"],
    "adamw-lr1e-3": ["--lr", "1e-3"],
    "adamw-lr4e-3": ["--lr", "4e-3"],
    "adamw-lr2e-3-loc0.1": ["--lr", "2e-3", "--localization-lr-mult", "0.1"],
}


def cpu_model() -> str:
    from stnkit._machine import cpu_info

    name, flags = cpu_info()
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(have) or 'no AVX2'})"


def run_dir_done(run: Path, iterations: int) -> bool:
    rec = run / "checkpoint.json"
    if not rec.exists():
        return False
    r = json.loads(rec.read_text())
    return bool(r.get("finished")) and int(r["step"]) >= iterations


def start(name: str, flags: list[str], args) -> subprocess.Popen | None:
    run = args.out / name
    if run_dir_done(run, args.iterations):
        return None
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if (run / "checkpoint.json").exists():
        cmd = ["--resume", str(run)]
    else:
        if run.exists():  # cut before its first checkpoint: nothing to keep
            import shutil

            shutil.rmtree(run)
        cmd = ["--model", "st-cnn-aff", "--data", "RTS", "--data-dir", args.data_dir,
               "--schedule", "fresh", "--iterations", str(args.iterations),
               "--warmup", str(max(1, args.iterations // 40)),
               "--validation-size", "10000", "--eval-every", str(args.iterations // 3),
               "--checkpoint-every", "250", "--num-threads", "1", "-o", str(run), *flags]
    return subprocess.Popen([sys.executable, "-m", "stnkit", "train", "-q", *cmd], env=env)


def cpu_minutes(run: Path) -> float | None:
    f = run / "cpu_seconds.json"
    return json.loads(f.read_text())["cpu_seconds"] / 60 if f.exists() else None


def table(args) -> str:
    rows = ["| candidate | validation error (%) | train error (%) | CPU min |",
            "| --- | ---: | ---: | ---: |"]
    for name in CANDIDATES:
        run = args.out / name
        if not run_dir_done(run, args.iterations):
            rows.append(f"| {name} | (not finished) | | |")
            continue
        lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
        val = [m for m in lines if m["split"] == "validation"][-1]
        tr = [m for m in lines if m["split"] == "train"][-1]
        mins = cpu_minutes(run)
        rows.append(f"| {name} | {val['error']:.2f} | {tr['error']:.2f} | "
                    f"{'' if mins is None else f'{mins:.1f}'} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", type=Path, default=Path("runs/tune"))
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--table", type=Path, default=Path("docs/results/fresh-tuning.md"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    todo = list(CANDIDATES.items())
    running: dict[int, tuple[str, subprocess.Popen]] = {}
    while todo or running:
        while todo and len(running) < args.jobs:
            name, flags = todo.pop(0)
            proc = start(name, flags, args)
            if proc is not None:
                running[proc.pid] = (name, proc)
        if not running:
            break
        pid, status, usage = os.wait4(-1, 0)
        name, _ = running.pop(pid)
        if status != 0:
            print(f"{name}: exit status {status}", file=sys.stderr)
            continue
        f = args.out / name / "cpu_seconds.json"
        before = json.loads(f.read_text())["cpu_seconds"] if f.exists() else 0.0
        f.write_text(json.dumps({"cpu_seconds": before + usage.ru_utime + usage.ru_stime}))
        print(f"{name}: done ({time.strftime('%H:%M:%S')})", flush=True)
    text = (f"# Tuning the `fresh` schedule on a validation split\n\n"
            f"ST-CNN (affine) on RTS, fresh distortions, the last 10,000 training digits held "
            f"out as the validation set (the test set is never read), {args.iterations} "
            f"iterations of batch 64, cosine schedule with a warm-up of "
            f"{max(1, args.iterations // 40)} iterations, one thread per run, {args.jobs} runs "
            f"side by side. CPU: {cpu_model()}.\n\n"
            f"Command: `python scripts/tune_fresh.py --data-dir ../shared/data/mnist "
            f"--iterations {args.iterations} --jobs {args.jobs}`\n\n{table(args)}\n")
    args.table.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.table, text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
