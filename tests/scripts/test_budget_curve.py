"""scripts/budget_curve.py: the budget page, its chart and its records from run directories."""

import json
from pathlib import Path

import pytest


@pytest.fixture()
def script(import_script, monkeypatch):
    module = import_script("budget_curve")
    monkeypatch.setattr(module, "cpu_line", lambda: "CPU A (avx2)")
    return module


def _run(root: Path, model: str, k: int, errors: list[float], finished: bool = True) -> Path:
    run = root / f"{model}-{k}x"
    run.mkdir()
    cfg = {"model": model, "data": "RTS", "seed": 0, "iterations": 2000 * k, "batch_size": 32}
    steps = [1000 * (i + 1) for i in range(len(errors))]
    (run / "checkpoint.json").write_text(json.dumps(
        {"config": cfg, "step": steps[-1], "finished": finished, "cpu_seconds": 60.0 * k,
         "elapsed": 90.0 * k}))
    lines = [{"step": s, "split": "test", "error": e} for s, e in zip(steps, errors)]
    lines.insert(0, {"step": 50, "split": "train", "error": 50.0})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in lines) + "\n")
    return run


def test_page_records_and_a_later_run(script, tmp_path):
    runs = [_run(tmp_path, "cnn", 1, [9.0, 7.5]), _run(tmp_path, "cnn", 3, [9.5, 6.0, 5.0],
                                                       finished=False)]
    out = tmp_path / "budget.md"
    assert script.main([*map(str, runs), "-o", str(out)]) == 0
    text = out.read_text()
    assert "| cnn | 1x | 64k | 7.50 | 0.8 | 1 | 2 | CPU A (avx2) |" in text, text
    assert "| cnn | 3x | 192k | 5.00 (unfinished: step 3000 of 6000) | 0.8 | 3 | 4 | " \
           "CPU A (avx2) |" in text, text
    assert "- cnn 1x: 32k: 9.00, 64k: 7.50" in text
    # the 3x run finishes in a later session on another machine; the 1x one's directory is gone
    for run in runs:
        for f in run.iterdir():
            f.unlink()
        run.rmdir()
    script.cpu_line = lambda: "CPU B (avx512_bf16)"
    done = _run(tmp_path, "cnn", 3, [9.5, 6.0, 5.0, 4.5, 4.2, 4.0])
    assert script.main([str(out.with_suffix(".json")), str(done), "-o", str(out)]) == 0
    text = out.read_text()
    assert "| cnn | 1x | 64k | 7.50 | 0.8 | 1 | 2 | CPU A (avx2) |" in text, text
    assert "| cnn | 3x | 192k | 4.00 | 0.8 | 3 | 4 | CPU B (avx512_bf16) |" in text, text
    assert "unfinished" not in text
    assert [r["name"] for r in json.loads(out.with_suffix(".json").read_text())] == \
        ["cnn-1x", "cnn-3x"]
