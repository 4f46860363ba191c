"""The training loop, in process: outputs, exact resume, divergence, snapshots, eval."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import stnkit.train.loop as loop
from stnkit.train import (RunDirError, TrainingDiverged, evaluate, resume, train)

from ._helpers import assert_same_weights, metrics, record, tiny_config


def test_run_directory_layout(tmp_path):
    run = tmp_path / "run"
    result = train(tiny_config(run), progress=False)
    assert result["step"] == 6 and result["test_error"] is not None
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "fcn" and cfg["iterations"] == 6
    lines = metrics(run, stable=False)
    train_lines = [m for m in lines if m["split"] == "train"]
    test_lines = [m for m in lines if m["split"] == "test"]
    assert [m["step"] for m in train_lines] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in test_lines] == [3, 6]
    for m in train_lines:
        assert set(m) == {"step", "split", "loss", "error", "lr", "images_per_s", "time"}
        assert 0 <= m["error"] <= 100 and m["images_per_s"] > 0
    assert set(test_lines[0]) == {"step", "split", "loss", "error", "lr", "time"}
    assert test_lines[-1]["error"] == result["test_error"]
    rec = record(run)
    assert rec["step"] == 6 and rec["finished"] is True and rec["model"] == "fcn"
    for key in ("config", "optimizer", "scheduler", "rng", "sampler"):
        assert key in rec
    inputs = load_file(str(run / "snapshots" / "inputs.safetensors"))
    assert inputs["images"].shape == (16, 1, 28, 28) and inputs["labels"].dtype == torch.int64
    assert not list((run / "snapshots").glob("step_*"))  # fcn has no transformer
    assert not list(run.glob("*.tmp"))


def test_lr_schedule_steps(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, lr=0.1, lr_step=2, lr_gamma=0.5), progress=False)
    lrs = [m["lr"] for m in metrics(run) if m["split"] == "train"]
    assert lrs == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_equals_uninterrupted(tmp_path, optimizer):
    """6 iterations straight == 3 iterations, then resume to 6 (extends the run)."""
    kw = dict(optimizer=optimizer, momentum=0.9, lr=0.01 if optimizer == "sgd" else 1e-3)
    train(tiny_config(tmp_path / "a", **kw), progress=False)
    train(tiny_config(tmp_path / "b", iterations=3, **kw), progress=False)
    assert record(tmp_path / "b")["finished"] is True
    resume(tmp_path / "b", iterations=6, progress=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert record(tmp_path / "b")["config"]["iterations"] == 6
    assert json.loads((tmp_path / "b" / "config.json").read_text())["iterations"] == 6


def test_resume_finished_run_does_nothing(tmp_path):
    run = tmp_path / "run"
    first = train(tiny_config(run), progress=False)
    before = (run / "checkpoint.safetensors").read_bytes()
    again = resume(run, progress=False)
    assert again["step"] == 6 and again["test_error"] == first["test_error"]
    assert (run / "checkpoint.safetensors").read_bytes() == before


def test_resume_drops_metrics_past_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, iterations=4), progress=False)
    with open(run / "metrics.jsonl", "a") as f:  # what a killed run wrote after its checkpoint
        f.write(json.dumps({"step": 5, "split": "train", "loss": 1.0}) + "\n{\"step\": 6, \"spl")
    resume(run, iterations=6, progress=False)
    steps = [m["step"] for m in metrics(run) if m["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_divergence_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = loop._loss

    def loss_nan_at_step_5(logits, y):
        calls["n"] += 1
        out = real(logits, y)
        return out * float("nan") if calls["n"] == 5 else out

    monkeypatch.setattr(loop, "_loss", loss_nan_at_step_5)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"diverged at step 5: the loss is nan; the last good "
                                              r"checkpoint \(step 4\) is kept"):
        train(tiny_config(run), progress=False)
    rec = record(run)
    assert rec["step"] == 4 and rec["finished"] is False
    assert all(torch.isfinite(v).all() for v in load_file(str(run / "checkpoint.safetensors")).values())


def test_huge_learning_rate_diverges_cleanly(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="diverged at step"):
        train(tiny_config(run, optimizer="sgd", lr=1e12, momentum=0.9, iterations=40, checkpoint_every=1,
                          eval_every=40), progress=False)
    assert all(torch.isfinite(v).all() for v in load_file(str(run / "checkpoint.safetensors")).values())


def test_out_already_holding_a_run(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, iterations=2), progress=False)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(RunDirError, match=r"already holds a run; continue it with `stnkit train --resume"):
        train(tiny_config(run, iterations=2), progress=False)
    assert sorted(p.name for p in run.iterdir()) == before


def test_failed_setup_leaves_nothing(tmp_path):
    run = tmp_path / "deep" / "run"
    with pytest.raises(ValueError, match="create_model"):
        train(tiny_config(run, model="no-such-model"), progress=False)
    assert not (tmp_path / "deep").exists()
    # an existing empty directory stays, empty
    run.mkdir(parents=True)
    with pytest.raises(ValueError, match="create_model"):
        train(tiny_config(run, model="no-such-model"), progress=False)
    assert list(run.iterdir()) == []


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot create run directory"):
        train(tiny_config(blocker / "run"), progress=False)
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_resume_errors(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        resume(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="not a run directory"):
        resume(tmp_path / "empty")
    run = tmp_path / "run"
    train(tiny_config(run, iterations=2), progress=False)
    with pytest.raises(ValueError, match="expected iterations >= the checkpoint's step"):
        resume(run, iterations=1)


def test_snapshots_of_a_transformer_model(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, model="st-fcn-aff", snapshot_count=5), progress=False)
    snaps = sorted((run / "snapshots").glob("step_*.safetensors"))
    assert [p.name for p in snaps] == ["step_00000000.safetensors", "step_00000003.safetensors",
                                       "step_00000006.safetensors"]
    # step 0, before any training: the identity-initialised transformer returns its input
    with safe_open(str(snaps[0]), framework="pt") as f:
        first, theta0 = f.get_tensor("output_0"), f.get_tensor("theta_0")
    with safe_open(str(run / "snapshots" / "inputs.safetensors"), framework="pt") as f:
        inputs = f.get_tensor("images")
    assert torch.equal(theta0, torch.eye(2, 3).expand(5, 2, 3))
    assert torch.equal(first, inputs.float())
    with safe_open(str(snaps[-1]), framework="pt") as f:
        meta = f.metadata()
        out, theta = f.get_tensor("output_0"), f.get_tensor("theta_0")
    assert meta["step"] == "6" and meta["count"] == "1" and meta["transform_0"] == "affine"
    assert out.shape[0] == 5 and out.dtype == torch.float32 and theta.shape == (5, 2, 3)


def test_evaluate_writes_eval_json(tmp_path):
    run = tmp_path / "run"
    result = train(tiny_config(run, iterations=4, test_size=None), progress=False)
    ev = evaluate(run, test_size=None)
    on_disk = json.loads((run / "eval.json").read_text())
    assert on_disk == json.loads(json.dumps(ev))
    cm = torch.tensor(ev["confusion_matrix"])
    assert cm.shape == (10, 10) and int(cm.sum()) == ev["num_samples"] == 2000
    errors = int(cm.sum() - cm.diagonal().sum())
    assert ev["test_error"] == pytest.approx(100 * errors / 2000)
    assert [c["errors"] for c in ev["per_class"]] == (cm.sum(1) - cm.diagonal()).tolist()
    # same checkpoint, same data as the run's own evaluation at its last step (test_size=None)
    assert ev["test_error"] == pytest.approx(result["test_error"], abs=1e-4)


def test_load_model_gives_the_trained_model(tmp_path):
    from stnkit.train import load_model

    run = tmp_path / "run"
    train(tiny_config(run, model="st-fcn-aff", iterations=2), progress=False)
    model = load_model(run)
    assert not model.training
    saved = load_file(str(run / "checkpoint.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    with pytest.raises(RunDirError, match="does not exist"):
        load_model(tmp_path / "none")


def test_progress_bar_shows_loss_accuracy_lr_and_speed(tmp_path, capsys):
    train(tiny_config(tmp_path / "run", iterations=4), progress=True)
    err = capsys.readouterr().err
    assert "fcn/mnist" in err and "4/4" in err
    for key in ("loss=", "acc=", "lr=", "img_s="):
        assert key in err, err
