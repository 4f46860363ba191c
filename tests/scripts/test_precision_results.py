"""scripts/precision_results.py: the fp32 / bf16 page from run directories."""

import json
from pathlib import Path

import pytest


@pytest.fixture()
def script(import_script):
    return import_script("precision_results")


def _run(root: Path, precision: str, seed: int, error: float, cpu_s: float,
         finished: bool = True) -> Path:
    run = root / f"st-cnn-aff-{precision}-s{seed}"
    run.mkdir()
    cfg = {"model": "st-cnn-aff", "data": "RTS", "seed": seed, "precision": precision,
           "iterations": 2000, "batch_size": 32}
    step = 2000 if finished else 1000
    (run / "checkpoint.json").write_text(json.dumps(
        {"config": cfg, "step": step, "finished": finished, "cpu_seconds": cpu_s,
         "elapsed": cpu_s}))
    lines = [{"step": 1000, "split": "test", "error": error + 1.0},
             {"step": step, "split": "test", "error": error}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in lines) + "\n")
    return run


def test_page_statistics_and_verdict(script, tmp_path):
    runs = [_run(tmp_path, "fp32", s, e, 300) for s, e in enumerate([3.0, 3.2, 3.4])]
    runs += [_run(tmp_path, "bf16", s, e, 150) for s, e in enumerate([3.1, 3.3, 3.2])]
    runs.append(_run(tmp_path, "bf16", 3, 9.9, 100, finished=False))
    out = tmp_path / "page.md"
    assert script.main([*map(str, runs), "-o", str(out)]) == 0
    text = out.read_text()
    assert "| st-cnn-aff | RTS | fp32 | 0: 3.00, 1: 3.20, 2: 3.40 | 3.20 ± 0.20 | 0.5 | 5.0 |" \
        in text, text
    assert "| st-cnn-aff | RTS | bf16 | 0: 3.10, 1: 3.30, 2: 3.20 | 3.20 ± 0.10 | 0.5 | 2.5 |" \
        in text, text
    assert "the bf16 mean 3.20 % is inside the range of the fp32 seeds (3.00-3.40 %); " \
           "CPU time 0.50x fp32's." in text, text
    assert "Not finished (left out): st-cnn-aff-bf16-s3." in text


def test_verdict_outside_the_range(script, tmp_path, capsys):
    runs = [_run(tmp_path, "fp32", s, e, 300) for s, e in enumerate([3.0, 3.1])]
    runs += [_run(tmp_path, "bf16", s, e, 300) for s, e in enumerate([3.6, 3.8])]
    assert script.main(list(map(str, runs))) == 0
    assert "the bf16 mean 3.70 % is above the range of the fp32 seeds (3.00-3.10 %)" \
        in capsys.readouterr().out


def test_no_finished_run_is_an_error(script, tmp_path, capsys):
    run = _run(tmp_path, "fp32", 0, 3.0, 10, finished=False)
    assert script.main([str(run)]) == 1
    assert "no finished run" in capsys.readouterr().err


def test_records_carry_runs_whose_directories_are_gone(script, tmp_path, monkeypatch):
    """PAGE.json keeps each run's figures and CPU; passed back with new directories it adds
    them, and a directory replaces the record of the same name."""
    import budget_curve

    monkeypatch.setattr(budget_curve, "cpu_line", lambda: "CPU A (avx2)")
    first = [_run(tmp_path, "fp32", s, e, 300) for s, e in enumerate([3.0, 3.2])]
    out = tmp_path / "page.md"
    assert script.main([*map(str, first), "-o", str(out)]) == 0
    records = json.loads(out.with_suffix(".json").read_text())
    assert [(r["name"], r["cpu"], r["curve"][-1][1]) for r in records] == \
        [("st-cnn-aff-fp32-s0", "CPU A (avx2)", 3.0), ("st-cnn-aff-fp32-s1", "CPU A (avx2)", 3.2)]
    for run in first:  # the directories are gone; a later session on another machine
        for f in run.iterdir():
            f.unlink()
        run.rmdir()
    monkeypatch.setattr(budget_curve, "cpu_line", lambda: "CPU B (avx512_bf16)")
    later = tmp_path / "later"
    later.mkdir()
    new = [_run(later, "bf16", 0, 3.1, 150), _run(later, "fp32", 1, 3.4, 300)]
    out2 = tmp_path / "page2.md"
    assert script.main([str(out.with_suffix(".json")), *map(str, new), "-o", str(out2)]) == 0
    text = out2.read_text()
    assert "| st-cnn-aff | RTS | fp32 | 0: 3.00, 1: 3.40 | 3.20 ± 0.28 | 0.5 | 5.0 | - | " \
           "CPU A (avx2); CPU B (avx512_bf16) |" in text, text
    assert "| st-cnn-aff | RTS | bf16 | 0: 3.10 | 3.10 | 0.5 | 2.5 | - | CPU B (avx512_bf16) |" \
        in text, text
    assert len(json.loads(out2.with_suffix(".json").read_text())) == 3


def test_a_record_without_its_log(script, tmp_path):
    """A committed record (docs/results/.../checkpoint.json, no metrics.jsonl) counts with
    the evaluation it holds; a record that holds none is left out as not evaluated."""
    runs = [_run(tmp_path, "fp32", s, e, 300) for s, e in enumerate([3.0, 3.4])]
    for run, error in zip(runs, [3.0, 3.4]):
        (run / "metrics.jsonl").unlink()
        record = json.loads((run / "checkpoint.json").read_text())
        record["metrics"] = {"test": {"step": 2000, "split": "test", "error": error}}
        (run / "checkpoint.json").write_text(json.dumps(record))
    bare = _run(tmp_path, "bf16", 0, 3.2, 150)
    (bare / "metrics.jsonl").unlink()
    every, unevaluated = script.read_runs(runs + [bare])
    assert [r["curve"] for r in every] == [[(64000, 3.0)], [(64000, 3.4)]]
    assert unevaluated == [bare.name]


def test_runs_on_different_thread_counts_are_flagged(script, tmp_path, capsys):
    runs = [_run(tmp_path, "fp32", s, e, 300) for s, e in enumerate([3.0, 3.1])]
    runs += [_run(tmp_path, "bf16", s, e, 150) for s, e in enumerate([3.0, 3.1])]
    for run, threads in zip(runs, [2, 2, 1, 1]):
        record = json.loads((run / "checkpoint.json").read_text())
        record["num_threads"] = threads
        (run / "checkpoint.json").write_text(json.dumps(record))
    assert script.main(list(map(str, runs))) == 0
    out = capsys.readouterr().out
    assert "| 3.05 ± 0.07 | 0.5 | 5.0 | 2 |" in out, out
    assert "CPU time 0.50x fp32's (bf16 on 1 threads, fp32 on 2: not the same cost basis)." \
        in out, out


def test_runs_on_different_cpus_are_flagged(script, tmp_path, capsys):
    fp32 = tmp_path / "old.json"  # fp32 records read on another machine
    fp32.write_text(json.dumps([
        {"name": f"fp32-s{s}", "cpu": "Other CPU (avx2, avx512f)", "model": "st-cnn-aff",
         "variant": "RTS", "seed": s, "budget": 1.0, "samples": 64000,
         "curve": [[64000, e]], "finished": True, "step": 2000, "iterations": 2000,
         "cpu_min": 5.0, "wall_min": 5.0, "threads": 1, "precision": "fp32"}
        for s, e in enumerate([3.0, 3.2])]))
    runs = [_run(tmp_path, "bf16", s, e, 150) for s, e in enumerate([3.1, 3.1])]
    for run in runs:
        record = json.loads((run / "checkpoint.json").read_text())
        record["num_threads"] = 1
        (run / "checkpoint.json").write_text(json.dumps(record))
    assert script.main([str(fp32), *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert "CPU time 0.50x fp32's (bf16 and fp32 runs on different CPUs: not the same cost " \
           "basis)." in out, out
