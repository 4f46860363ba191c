"""A dry run (a few iterations, a tiny evaluation) of every model family on its data."""

from __future__ import annotations

import math

import pytest
from safetensors import safe_open

from stnkit.models import list_models
from stnkit.train import resolve_config, train

from ._helpers import record

CASES = [(m, "RTS") for m in ("fcn", "cnn", "st-fcn-aff", "st-fcn-proj", "st-fcn-tps",
                              "st-cnn-aff", "st-cnn-proj", "st-cnn-tps")]
CASES += [("stn-tutorial", "R"), ("st-cnn-aff", "TC"), ("cnn", "addition")]
CASES += [(m, "addition") for m in ("st-fcn-aff-x2", "st-fcn-proj-x2", "st-fcn-tps-x2")]


def test_every_registered_model_is_covered():
    assert {m for m, _ in CASES} == set(list_models())


@pytest.mark.parametrize("model, variant", CASES, ids=[f"{m}-{v}" for m, v in CASES])
def test_dry_run(tmp_path, model, variant):
    cfg = resolve_config(overrides=dict(model=model, data=variant, out=str(tmp_path / "run"),
                                        data_dir="embedded", device="cpu", dry_run=True,
                                        schedule="cpu", num_threads=1))
    result = train(cfg, progress=False)
    assert result["step"] == cfg.iterations == 4
    assert math.isfinite(result["train_loss"]) and 0 <= result["test_error"] <= 100
    rec = record(tmp_path / "run")
    assert rec["finished"] and rec["data"] == variant
    snaps = sorted((tmp_path / "run" / "snapshots").glob("step_*.safetensors"))
    n_st = 2 if model.endswith("-x2") else (0 if model in ("fcn", "cnn") else 1)
    if n_st == 0:
        assert snaps == []
    else:
        with safe_open(str(snaps[-1]), framework="pt") as f:
            assert f.metadata()["count"] == str(n_st)
            assert {f"output_{i}" for i in range(n_st)} <= set(f.keys())
