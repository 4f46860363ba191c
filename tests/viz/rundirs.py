"""Synthetic run and reproduction directories, written by hand to the layout of contracts.md,
so the pictures are tested without training anything."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from stnkit.nn import SpatialTransformer, inspect_transformers


def digits(n: int, size: tuple[int, int, int] = (1, 20, 20), seed: int = 0) -> torch.Tensor:
    """(n, C, H, W) in [0, 1]: a bright blob somewhere in each image."""
    g = torch.Generator().manual_seed(seed)
    C, H, W = size
    yy, xx = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    cy = torch.rand(n, generator=g) * H * 0.5 + H * 0.25
    cx = torch.rand(n, generator=g) * W * 0.5 + W * 0.25
    blob = torch.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 8)
    return blob[:, None].expand(n, C, H, W).clone()


def tiny_st_model(size=(1, 20, 20), *, transforms=("affine",), out=(10, 10), seed=0) -> nn.Module:
    """Transformers (one per channel when several) -> flatten -> linear, with a
    non-identity initial transform so outlines are not the image frame."""
    torch.manual_seed(seed)
    C, H, W = size

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            sts = []
            for i, tr in enumerate(transforms):
                loc = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, 8), nn.Tanh())
                st = SpatialTransformer(loc, tr, features=8, output_size=out,
                                        warp_channels=[i] if len(transforms) > 1 else None)
                with torch.no_grad():
                    st.regressor.linear.weight.normal_(0, 0.05)
                sts.append(st)
            self.sts = nn.ModuleList(sts)
            c_out = 1 if len(transforms) > 1 else C
            self.head = nn.Linear(len(transforms) * c_out * out[0] * out[1], 10)

        def forward(self, x):
            ys = [st(x) for st in self.sts]
            return self.head(torch.cat([y.flatten(1) for y in ys], dim=1))

    return Net()


def make_run_dir(path: Path, *, model: nn.Module | None = None, size=(1, 20, 20), n: int = 6,
                 steps=(50, 100, 150), snapshots: bool = True, inputs: bool = True,
                 config: dict | None = None) -> Path:
    """A run directory as ``stnkit train`` writes it (no checkpoint: pictures must then come
    from the snapshots). ``model=None``: a model without a transformer."""
    path = Path(path)
    (path / "snapshots").mkdir(parents=True)
    cfg = {"model": "tiny", "data": "RTS", "iterations": steps[-1] if steps else 0, "seed": 0}
    cfg.update(config or {})
    (path / "config.json").write_text(json.dumps(cfg))
    lines = []
    for s in range(10, (steps[-1] if steps else 0) + 1, 10):
        lines.append({"step": s, "split": "train", "loss": 2.3 * 0.99 ** s, "error": 90 * 0.99 ** s,
                      "lr": 0.01 if s <= 100 else 0.001, "images_per_s": 1000.0, "time": s / 10})
        if s in steps:
            lines.append({"step": s, "split": "test", "loss": 2.0 * 0.99 ** s,
                          "error": 80 * 0.99 ** s, "lr": 0.01, "time": s / 10})
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    images = digits(n, size)
    if inputs:
        save_file({"images": images, "labels": torch.arange(n) % 10},
                  str(path / "snapshots" / "inputs.safetensors"))
    if model is not None and snapshots:
        for s in steps:
            with torch.no_grad():  # the transform drifts during "training"
                for st in [m for m in model.modules() if isinstance(m, SpatialTransformer)]:
                    st.regressor.linear.bias.add_(0.05 * torch.randn_like(st.regressor.linear.bias))
            found = inspect_transformers(model.eval(), images)
            tensors, meta = {}, {"step": str(s), "count": str(len(found))}
            for i, r in enumerate(found):
                tensors[f"output_{i}"] = r["output"].contiguous()
                tensors[f"theta_{i}"] = r["theta"].contiguous()
                meta[f"transform_{i}"] = r["module"].transform
                meta[f"name_{i}"] = r["name"]
            save_file(tensors, str(path / "snapshots" / f"step_{s:08d}.safetensors"), metadata=meta)
    return path


def make_repro_dir(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.mkdir(parents=True)
    cols = ["experiment", "variant", "model", "seeds", "mean_error", "std_error", "paper_error"]
    with open(path / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


TABLE = [
    {"experiment": "table1", "variant": v, "model": m, "seeds": 3, "mean_error": e, "std_error": s,
     "paper_error": p}
    for v, m, e, s, p in [("R", "fcn", 2.4, 0.1, 2.1), ("R", "st-cnn-aff", 0.9, 0.05, 0.7),
                          ("RTS", "cnn", 1.4, 0.2, 1.2), ("RTS", "st-cnn-aff", 0.8, 0.1, 0.8),
                          ("RTS", "stn-tutorial", 1.1, 0.1, "")]
]
