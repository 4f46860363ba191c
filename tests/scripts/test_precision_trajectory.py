"""scripts/precision_trajectory.py: errors and theta over a run's first steps."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file


@pytest.fixture()
def script(import_script):
    return import_script("precision_trajectory")


def _affine(scale: float, angle_deg: float, tx: float, ty: float, n: int = 4) -> torch.Tensor:
    a = math.radians(angle_deg)
    t = torch.tensor([[scale * math.cos(a), -scale * math.sin(a), tx],
                      [scale * math.sin(a), scale * math.cos(a), ty]])
    return t.expand(n, 2, 3).clone()


def _run(root: Path, name: str, precision: str, seed: int,
         thetas: dict[int, torch.Tensor]) -> Path:
    run = root / name
    (run / "snapshots").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(
        {"model": "st-cnn-aff", "data": "P", "seed": seed, "precision": precision,
         "test_size": 1000 if seed == 2 else None}))
    lines = [{"step": s, "split": "train", "error": 50.0 - s / 10} for s in thetas if s]
    lines += [{"step": s, "split": "test", "error": 40.0 - s / 10} for s in thetas if s]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in lines) + "\n")
    save_file({"images": torch.zeros(4, 1, 28, 28), "labels": torch.zeros(4, dtype=torch.long)},
              str(run / "snapshots" / "inputs.safetensors"))
    for step, theta in thetas.items():
        save_file({"output_0": torch.zeros(4, 1, 28, 28), "theta_0": theta},
                  str(run / "snapshots" / f"step_{step:08d}.safetensors"),
                  metadata={"step": str(step), "count": "1", "transform_0": "affine"})
    return run


def test_theta_stats_of_known_transforms(script):
    st = script.theta_stats(_affine(0.5, 30.0, 0.3, -0.4))
    assert st["zoom"] == pytest.approx(0.5)
    assert st["shift"] == pytest.approx(0.5)
    assert st["rotation"] == pytest.approx(30.0)
    assert script.theta_stats(_affine(1.0, 0.0, 0.0, 0.0)) == {
        "zoom": 1.0, "shift": 0.0, "rotation": 0.0}
    mixed = torch.cat([_affine(1.0, 10.0, 0, 0, 2), _affine(1.0, -20.0, 0, 0, 2)])
    assert script.theta_stats(mixed)["rotation"] == pytest.approx(15.0)  # mean of |angle|
    with pytest.raises(ValueError, match=r"\(N, 2, 3\), got \(4, 3, 3\)"):
        script.theta_stats(torch.eye(3).expand(4, 3, 3))


def test_page_pairs_precisions_of_one_seed(script, tmp_path):
    ident = _affine(1.0, 0.0, 0.0, 0.0)
    fp32 = _run(tmp_path, "fp32-s2", "fp32", 2, {0: ident, 100: _affine(0.9, 0.0, 0.1, 0.0)})
    bf16 = _run(tmp_path, "bf16-s2", "bf16", 2, {0: ident, 100: _affine(0.9, 0.0, 0.2, 0.0)})
    other = _run(tmp_path, "bf16-s3", "bf16", 3, {0: ident, 100: ident})
    out = tmp_path / "page.md"
    assert script.main([str(fp32), str(bf16), str(other), "-o", str(out)]) == 0
    text = out.read_text()
    assert "## fp32-s2 (st-cnn-aff, P, fp32, seed 2; test error on the first 1000 test digits)" \
        in text
    assert "## bf16-s3 (st-cnn-aff, P, bf16, seed 3; test error on the whole test set)" in text
    assert "| 100 | 30.00 | 40.00 | 0.900 | 0.100 | 0.0 |" in text, text
    assert "| 100 | 30.00 | 40.00 | 0.900 | 0.200 | 0.0 |" in text, text
    # one pair (seed 2); |d theta| = 0.1 in one of six entries at step 100
    assert "mean |theta bf16 - theta fp32|, seed 2 (step: value): 0: 0.0000, 100: 0.0167" \
        in text, text
    assert "seed 3 (step" not in text
    # the summary: a row per run (precision, then seed) at the shared steps after 0
    assert "| run | precision | seed | 100 |" in text
    assert "| bf16-s2 | bf16 | 2 | 30.00 |\n| bf16-s3 | bf16 | 3 | 30.00 |\n" \
           "| fp32-s2 | fp32 | 2 | 30.00 |" in text, text
    assert "| bf16-s2 | bf16 | 2 | 0.900 |\n| bf16-s3 | bf16 | 3 | 1.000 |" in text, text


def test_summary_steps_are_shared_and_within_the_shortest_run(script):
    def run(*steps):
        return {"thetas": dict.fromkeys(steps)}
    assert script.summary_steps([run(0, 50, 100, 150), run(0, 100, 200)]) == [100]
    assert script.summary_steps([run(0, 50, 100), run(0, 50, 100), run(0, 100, 200)]) == [50, 100]
    assert script.summary_steps([run(0, 50)]) == []


def test_run_without_snapshots_is_refused(script, tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "cnn", "data": "P", "seed": 0}))
    (run / "metrics.jsonl").write_text("")
    assert script.main([str(run)]) == 1
    assert "no snapshots (train with --snapshot-count N > 0)" in capsys.readouterr().err
