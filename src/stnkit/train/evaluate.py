"""``evaluate(run_dir)``: test error, per-class errors and the confusion matrix -> ``eval.json``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from stnkit._checks import fail, fail_file
from stnkit.train import checkpoint as ckpt
from stnkit.train._data import load_split
from stnkit.train.loop import _create_model, load_run_config, resolve_device
from stnkit.train.precision import autocast, channels_last, to_memory_format

__all__ = ["evaluate", "load_model"]


def load_model(run_dir: str | os.PathLike, *, device: str = "cpu") -> torch.nn.Module:
    """The model of a run's last checkpoint, weights loaded, in eval mode.

    Raises :class:`~stnkit.train.CheckpointError` for a missing, corrupt or foreign checkpoint.
    """
    run = Path(run_dir)
    cfg = load_run_config(run, fn="load_model")
    record = ckpt.read_record(run, fn="load_model")
    weights = ckpt.read_weights(run, record, fn="load_model")
    if "input_size" in record and "num_classes" in record:
        size, classes = tuple(int(s) for s in record["input_size"]), int(record["num_classes"])
    else:  # a record without them: read the sizes off the data
        data = load_split(cfg.data, "test", seed=cfg.data_seed, data_dir=cfg.data_dir, limit=1)
        size, classes = data.image_size, data.num_classes
    model = _create_model(cfg.model, input_size=size, num_classes=classes)
    ckpt.load_weights_into(model, weights, model_name=cfg.model, path=str(run / ckpt.WEIGHTS),
                           fn="load_model")
    return model.to(resolve_device(device)).eval()


@torch.no_grad()
def evaluate(run_dir: str | os.PathLike, *, data_dir: str | None = None, device: str = "auto",
             batch_size: int = 500, test_size: int | None = None,
             write: bool = True) -> dict[str, Any]:
    """Evaluate the last checkpoint of ``run_dir`` on the test split of its variant.

    Args:
        run_dir: a run directory written by :func:`stnkit.train.train`.
        data_dir: overrides the run's ``data_dir`` (``"embedded"`` for the shipped subset).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        test_size: the first N test samples only (default: the whole split).
        write: write ``RUN_DIR/eval.json`` (atomically).
    Returns:
        ``{"run_dir", "model", "data", "step", "num_samples", "test_loss", "test_error"
        (percent), "per_class": [{"class", "count", "errors", "error"}, ...],
        "confusion_matrix": C[true][predicted] counts}``.
    """
    run = Path(run_dir)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        fail("evaluate", "batch_size", "a positive int", repr(batch_size))
    cfg = load_run_config(run, fn="eval")
    record = ckpt.read_record(run, fn="eval")
    weights = ckpt.read_weights(run, record, fn="eval")
    dev = resolve_device(device)
    data = load_split(cfg.data, "test", seed=cfg.data_seed,
                      data_dir=data_dir if data_dir is not None else cfg.data_dir, limit=test_size)
    model = _create_model(cfg.model, input_size=data.image_size, num_classes=data.num_classes)
    ckpt.load_weights_into(model, weights, model_name=cfg.model, path=str(run / ckpt.WEIGHTS),
                           fn="eval")
    model.to(dev).eval()
    nhwc = channels_last(cfg.precision, model)
    if nhwc:
        model.to(memory_format=torch.channels_last)
    k = data.num_classes
    confusion = torch.zeros(k, k, dtype=torch.int64)
    loss_sum = 0.0
    n = len(data)
    for s in range(0, n, batch_size):
        idx = torch.arange(s, min(s + batch_size, n))
        x, y = data.batch(idx, dev)
        with autocast(cfg.precision, dev):  # the run's precision, as its own evaluations
            logits = model(to_memory_format(x, nhwc)).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        pred = logits.argmax(1)
        confusion += torch.bincount((y * k + pred).cpu(), minlength=k * k).reshape(k, k)
    if n and not math.isfinite(loss_sum):
        # the weights are finite (read_weights checks), so the outputs overflow
        fail_file("eval", run / ckpt.WEIGHTS, f"the model's test loss is {loss_sum} (its outputs "
                  "overflow to Inf/NaN on the test data although every weight is finite): the "
                  "checkpoint cannot be evaluated", error=ckpt.CheckpointError)
    counts = confusion.sum(1)
    errors = counts - confusion.diagonal()
    total_errors = int(errors.sum())
    result = {
        "run_dir": str(run),
        "model": cfg.model,
        "data": cfg.data,
        "step": int(record["step"]),
        "num_samples": n,
        "test_loss": loss_sum / n if n else None,
        "test_error": 100.0 * total_errors / n if n else None,
        "per_class": [{"class": c, "count": int(counts[c]), "errors": int(errors[c]),
                       "error": (100.0 * int(errors[c]) / int(counts[c])) if counts[c] else None}
                      for c in range(k)],
        "confusion_matrix": confusion.tolist(),
    }
    if write:
        ckpt.atomic_write_json(run / "eval.json", result)
    return result
