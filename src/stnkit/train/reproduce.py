"""Reproduce the paper's tables cell by cell: ``reproduce("table1", out)``.

Each (variant, model, seed) is one run directory ``OUT/runs/<variant>/<model>/seed<k>/``. A
rerun skips the finished cells, resumes an interrupted one from its checkpoint and starts the
missing ones, so a reproduction can be stopped and continued at any time. After every cell,
``results.csv`` and ``results.md`` are rewritten (atomically) with our mean +- std over the
finished seeds next to the paper's number.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stnkit._checks import fail, fail_file
from stnkit.train import checkpoint as ckpt
from stnkit.train.config import TrainConfig, check_config, from_dict, resolve_config
from stnkit.train.distributed import setup as join_group
from stnkit.train.loop import resolve_device, resume, train
from stnkit.train.paper import CITATION, paper_error

__all__ = ["EXPERIMENTS", "reproduce"]

TABLE1_MODELS = ("fcn", "cnn", "st-fcn-aff", "st-fcn-proj", "st-fcn-tps", "st-cnn-aff",
                 "st-cnn-proj", "st-cnn-tps")

EXPERIMENTS: dict[str, dict[str, Any]] = {
    "table1": {"title": "Table 1: distorted MNIST", "variants": ("R", "RTS", "P", "E"),
               "models": TABLE1_MODELS},
    "cluttered": {"title": "Translated (T) and translated + cluttered (TC) MNIST, 60x60",
                  "variants": ("T", "TC"), "models": ("fcn", "cnn", "st-fcn-aff", "st-cnn-aff")},
    "addition": {"title": "MNIST addition (two digits in two channels, 19 classes)",
                 "variants": ("addition",),
                 "models": ("fcn", "cnn", "st-fcn-aff", "st-fcn-aff-x2", "st-fcn-proj-x2",
                            "st-fcn-tps-x2")},
}
"""The paper's experiments :func:`reproduce` knows: title, variants and models of each."""

CSV_COLUMNS = ("experiment", "variant", "model", "seeds", "mean_error", "std_error", "paper_error")
# settings that may differ between a finished cell and a rerun without changing its result
_IGNORED = {"out", "iterations", "device", "num_threads", "deterministic"}


def _cell_dir(out: Path, variant: str, model: str, seed: int) -> Path:
    return out / "runs" / variant / model / f"seed{seed}"


def _finished_error(run: Path, want_iterations: int) -> float | None:
    """The final test error of a finished cell, or None if it still has work to do."""
    record = ckpt.read_record(run)
    if not record.get("finished") or int(record["step"]) < want_iterations:
        return None
    test = (record.get("metrics") or {}).get("test") or {}
    err = test.get("error")
    return float(err) if isinstance(err, (int, float)) else None


def _same_setting(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key == "data_dir" and a not in (None, "embedded") and b not in (None, "embedded"):
        return Path(a).resolve() == Path(b).resolve()  # one folder, spelt two ways
    return False


def _check_same(run: Path, want: TrainConfig) -> None:
    have = from_dict(ckpt.read_record(run)["config"], source=str(run / ckpt.RECORD))
    a, b = dataclasses.asdict(have), dataclasses.asdict(want)
    diff = sorted(k for k in a if k not in _IGNORED and not _same_setting(k, a[k], b[k]))
    if diff:
        k = diff[0]
        fail_file("reproduce", run, f"was trained with {k}={a[k]!r}, this run asks for "
                  f"{k}={b[k]!r}; use another --out (or delete that cell)")


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _rows(experiment: str, variants: Sequence[str], models: Sequence[str],
          errors: dict[tuple[str, str], list[float]]) -> list[dict[str, Any]]:
    rows = []
    for v in variants:
        for m in models:
            errs = errors.get((v, m), [])
            p = paper_error(experiment, v, m)
            rows.append({
                "experiment": experiment, "variant": v, "model": m, "seeds": len(errs),
                "mean_error": statistics.fmean(errs) if errs else None,
                "std_error": statistics.stdev(errs) if len(errs) > 1 else None,
                "paper_error": p.error if p else None,
                "paper_source": p.source if p else None,
                "paper_exact": p.exact if p else None,
            })
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([r["experiment"], r["variant"], r["model"], r["seeds"],
                    "" if r["mean_error"] is None else f"{r['mean_error']:.4f}",
                    "" if r["std_error"] is None else f"{r['std_error']:.4f}",
                    "" if r["paper_error"] is None else f"{r['paper_error']:.1f}"])
    return buf.getvalue()


def _markdown(experiment: str, rows: list[dict[str, Any]], variants: Sequence[str],
              models: Sequence[str], settings: dict[str, Any], cell_times: dict[str, float]) -> str:
    title = EXPERIMENTS[experiment]["title"]
    lines = [f"# {title}: % test error, ours vs the paper", "",
             "Each cell: our mean ± std over the finished seeds (their count in brackets), then "
             "the paper's number. n/a: not run yet, or not reported by the paper.", "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), "",
             "| model | " + " | ".join(variants) + " |",
             "|---|" + "---|" * len(variants)]
    by = {(r["variant"], r["model"]): r for r in rows}
    inexact = False
    for m in models:
        cells = []
        for v in variants:
            r = by[(v, m)]
            ours = _fmt(r["mean_error"])
            if r["std_error"] is not None:
                ours += f" ± {_fmt(r['std_error'])}"
            if r["seeds"]:
                ours += f" [{r['seeds']}]"
            paper = _fmt(r["paper_error"], 1)
            if r["paper_exact"] is False:
                paper += "†"
                inexact = True
            cells.append(f"{ours} (paper {paper})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", f"Paper: {CITATION}."]
    sources = sorted({r["paper_source"] for r in rows if r["paper_source"]})
    if sources:
        lines.append("Sources of the paper's numbers: " + "; ".join(sources) + ".")
    if inexact:
        lines.append("†: the paper gives this figure for its ST-FCN / ST-CNN (or 2xST-FCN) without "
                     "naming the transform; it is shown next to every transform of that family.")
    if cell_times:
        total = sum(cell_times.values())
        lines += ["", f"Training time of the cells run by this invocation: {total:.0f} s."]
    return "\n".join(lines) + "\n"


def _names(value: Sequence[str] | str | None, allowed: Sequence[str], *, name: str,
           known: Sequence[str] | None = None) -> tuple[str, ...]:
    if value is None:
        return tuple(allowed)
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    out = tuple(value)
    pool = known if known is not None else allowed
    for v in out:
        if v not in pool:
            fail("reproduce", name, "to contain only " + ", ".join(map(repr, pool)), repr(v))
    if not out:
        fail("reproduce", name, "at least one name", "none")
    return out


def reproduce(experiment: str, out: str | os.PathLike, *, variants: Sequence[str] | None = None,
              models: Sequence[str] | None = None, seeds: int = 3, schedule: str = "paper",
              data_dir: str | None = None, iterations: int | None = None, device: str = "auto",
              overrides: dict[str, Any] | None = None, progress: bool = True,
              log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Train every cell of ``experiment`` into ``out`` (resumable) and write the tables.

    Args:
        experiment: ``"table1"``, ``"cluttered"`` or ``"addition"``.
        out: the reproduction directory (``results.csv``, ``results.md``, ``runs/``).
        variants, models: subsets (default: the paper's); a comma-separated string works too.
        seeds: seeds ``0 .. seeds-1`` per cell.
        schedule: ``"paper"`` or ``"cpu"``; ``iterations`` overrides its iteration count.
        overrides: further :class:`TrainConfig` fields for every cell (e.g. ``dry_run``).
        log: called with one line per cell (None: silent).
    Returns:
        the rows of ``results.csv`` as dicts (plus the source of each paper number).
    """
    fn = "reproduce"
    if experiment not in EXPERIMENTS:
        fail(fn, "experiment", "one of " + ", ".join(map(repr, EXPERIMENTS)), repr(experiment))
    spec = EXPERIMENTS[experiment]
    variants = _names(variants, spec["variants"], name="variants")
    from stnkit.models import list_models

    models = _names(models, spec["models"], name="models", known=list_models())
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds <= 0:
        fail(fn, "seeds", "a positive int", repr(seeds))
    out = Path(out)
    base = dict(overrides or {})
    base.update(schedule=schedule, data_dir=data_dir, device=device)
    if iterations is not None:
        base["iterations"] = iterations
    # validate the settings once, before any directory is made
    check_config(resolve_config(overrides={**base, "model": models[0], "data": variants[0],
                                           "out": str(out)}), fn=fn)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        fail_file("reproduce", out, f"cannot write to it ({e.strerror or e})")

    errors: dict[tuple[str, str], list[float]] = {}
    cell_times: dict[str, float] = {}
    cells = [(v, m, k) for v in variants for m in models for k in range(seeds)]
    settings = {"schedule": schedule, "seeds": seeds, "data_dir": data_dir or "default"}
    if iterations is not None:
        settings["iterations"] = iterations
    for extra in ("precision", "dry_run", "train_size", "test_size", "batch_size", "lr"):
        if extra in base:
            settings[extra] = base[extra]

    def write_tables() -> list[dict[str, Any]]:
        rows = _rows(experiment, variants, models, errors)
        ckpt.atomic_write_bytes(out / "results.csv", _csv(rows).encode())
        ckpt.atomic_write_bytes(out / "results.md", _markdown(experiment, rows, variants, models,
                                                              settings, cell_times).encode())
        return rows

    # Under torchrun every rank runs every cell: the process group is joined once here and
    # kept across cells (each train() finds it joined and leaves it alone). Rank 0 alone
    # changes files and prints; barriers keep the ranks' decisions in step.
    group = join_group(resolve_device(str(base["device"])))
    finished = False
    try:
        for i, (v, m, k) in enumerate(cells, 1):
            run = _cell_dir(out, v, m, k)
            cfg = resolve_config(overrides={**base, "model": m, "data": v, "out": str(run),
                                            "seed": k})
            tag = f"[{i}/{len(cells)}] {v} {m} seed{k}"
            t0 = time.perf_counter()
            started = (run / ckpt.RECORD).exists() or (run / (ckpt.RECORD + ".tmp")).exists()
            group.barrier()  # every rank has looked before rank 0 changes anything
            if started:
                if group.is_main:
                    ckpt.recover(run)
                group.barrier()
                _check_same(run, cfg)
                err = _finished_error(run, cfg.iterations)
                if err is not None:
                    errors.setdefault((v, m), []).append(err)
                    if log and group.is_main:
                        log(f"{tag}: done before, {err:.2f}% test error")
                    continue
                result = resume(run, iterations=cfg.iterations, progress=progress)
                how = "resumed"
            else:
                if run.exists() and group.is_main:  # died before its first checkpoint
                    shutil.rmtree(run)
                group.barrier()
                result = train(cfg, progress=progress)
                how = "trained"
            dt = time.perf_counter() - t0
            cell_times[f"{v}/{m}/seed{k}"] = dt
            err = result["test_error"]
            errors.setdefault((v, m), []).append(float(err))
            if log and group.is_main:
                log(f"{tag}: {how}, {err:.2f}% test error ({dt:.1f} s)")
            if group.is_main:
                write_tables()
        rows = write_tables() if group.is_main else _rows(experiment, variants, models, errors)
        finished = True
        return rows
    finally:
        group.teardown(finished=finished)
