"""Helpers for the training tests: tiny runs on the MNIST subset shipped in the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from stnkit.train import TrainConfig

REPO = Path(__file__).resolve().parents[2]


def tiny_config(out, **kw) -> TrainConfig:
    """A few iterations of a small model on plain embedded MNIST, everything logged."""
    base = dict(model="fcn", data="mnist", out=str(out), schedule="cpu", data_dir="embedded",
                iterations=6, batch_size=16, train_size=256, test_size=64, checkpoint_every=2,
                eval_every=3, log_every=1, device="cpu", num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def weights(run) -> dict:
    return load_file(str(Path(run) / "checkpoint.safetensors"))


def record(run) -> dict:
    return json.loads((Path(run) / "checkpoint.json").read_text())


def metrics(run, *, stable=True) -> list[dict]:
    """metrics.jsonl lines; ``stable`` drops the wall-clock fields."""
    out = []
    for line in (Path(run) / "metrics.jsonl").read_text().splitlines():
        d = json.loads(line)
        if stable:
            d.pop("time", None)
            d.pop("images_per_s", None)
        out.append(d)
    return out


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        diff = (wa[k].double() - wb[k].double()).abs().max().item() if wa[k].numel() else 0.0
        assert wa[k].dtype == wb[k].dtype and wa[k].shape == wb[k].shape, k
        assert bool((wa[k] == wb[k]).all()), f"{k}: max |diff| {diff:.3g} (expected bitwise equal)"


def stnkit_env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("STNKIT_DEBUG", None)
    return env


def stnkit_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "stnkit", *map(str, args)]


def run_stnkit(*args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(stnkit_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=stnkit_env(), cwd=REPO)
