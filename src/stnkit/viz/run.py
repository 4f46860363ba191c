"""Pictures of a run directory and of a reproduction directory (layouts: contracts.md).

- :func:`render_run`: ``samples.png``, ``curves.png``, ``evolution.gif``, ``evolution.png``.
- :func:`render_reproduction`: ``results.png``.
- :func:`read_metrics`, :func:`read_snapshots`, :func:`read_results`: the files, as data.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stnkit._checks import fail
from stnkit.viz.grids import grid_outline
from stnkit.viz.plots import (
    EvolutionStep,
    TransformerView,
    plot_curves,
    plot_results,
    plot_samples,
    save_evolution,
)

__all__ = [
    "RunSnapshots",
    "Snapshot",
    "is_reproduction_dir",
    "is_run_dir",
    "read_metrics",
    "read_results",
    "read_snapshots",
    "render_reproduction",
    "render_run",
]

SNAPSHOTS = "snapshots"
_STEP_FILE = re.compile(r"step_(\d+)\.safetensors")


@dataclass
class Snapshot:
    """The transformers' outputs on the fixed samples at one evaluation step (call order)."""

    step: int
    outputs: list[Tensor]  # each (N, C', h, w)
    thetas: list[Tensor]  # each (N, 2, 3), (N, 3, 3), (N, K, 2) or (N, 3, 4)
    transforms: list[str]  # family names, e.g. "affine"
    names: list[str] = field(default_factory=list)  # module paths (when recorded)


@dataclass
class RunSnapshots:
    images: Tensor  # (N, C, H, W) the fixed test samples, in [0, 1]
    labels: Tensor  # (N,)
    steps: list[Snapshot]  # sorted by step; empty for a model without a transformer


def is_run_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "config.json").is_file() or (p / "checkpoint.json").is_file())


def is_reproduction_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "results.csv").is_file()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/metrics.jsonl`` (an unfinished last line is skipped)."""
    fn = "read_metrics"
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        fail(fn, "run_dir", "a run directory with metrics.jsonl", repr(str(run_dir)))
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # a run killed mid-write
                continue
            fail(fn, "metrics.jsonl", "one JSON object a line", f"line {i + 1}: {line[:60]!r}")
        if isinstance(record, dict):
            out.append(record)
    return out


def read_snapshots(run_dir: str | os.PathLike) -> RunSnapshots | None:
    """The fixed samples and every step snapshot of a run; None if it saved no samples."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    snaps = Path(run_dir) / SNAPSHOTS
    inputs = snaps / "inputs.safetensors"
    if not inputs.is_file():
        return None
    try:
        tensors = load_file(inputs)
        images, labels = tensors["images"].float(), tensors["labels"].long()
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        fail("read_snapshots", "inputs.safetensors", "tensors 'images' and 'labels'",
             f"{str(inputs)!r} ({e})")
    steps = []
    for path in sorted(snaps.glob("step_*.safetensors")):
        m = _STEP_FILE.fullmatch(path.name)
        if m is None:
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                count = int(meta.get("count", 0))
                outputs = [f.get_tensor(f"output_{i}").float() for i in range(count)]
                thetas = [f.get_tensor(f"theta_{i}").float() for i in range(count)]
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            fail("read_snapshots", "snapshot", "a readable safetensors file",
                 f"{str(path)!r} ({e})")
        steps.append(Snapshot(
            step=int(meta.get("step", m.group(1))), outputs=outputs, thetas=thetas,
            transforms=[meta.get(f"transform_{i}", "") for i in range(count)],
            names=[meta.get(f"name_{i}", "") for i in range(count)]))
    steps.sort(key=lambda s: s.step)
    return RunSnapshots(images, labels, [s for s in steps if s.outputs])


def read_results(repro_dir: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of ``REPRO_DIR/results.csv`` as dicts of strings."""
    fn = "read_results"
    path = Path(repro_dir) / "results.csv"
    if not path.is_file():
        fail(fn, "repro_dir", "a reproduction directory with results.csv", repr(str(repro_dir)))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"variant", "model", "mean_error", "paper_error"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            fail(fn, "results.csv", "columns " + ",".join(sorted(need)),
                 ",".join(reader.fieldnames or []) or "an empty file")
        return [dict(r) for r in reader]


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
               num_samples: int = 8, model: nn.Module | None = None,
               title: str | None = None, note=None) -> dict[str, Path]:
    """Write the pictures of a run: samples.png, curves.png, evolution.gif, evolution.png.

    Sample panels use the model of the checkpoint (so the outline is the one of the final
    weights) when it loads, else the latest snapshot. A model without a transformer gets
    samples.png (inputs, labels, predictions) and curves.png only; a run that saved no
    samples gets curves.png only.

    Args:
        run_dir: a run directory (contracts.md "Run directory").
        out_dir: where to write (created); default ``RUN_DIR/figures``.
        num_samples: columns of samples.png and the evolution pictures (at most the number of
            saved samples).
        model: the trained model, if the caller has it (skips loading the checkpoint).
        title: above the curves (default: model, variant and directory name).
        note: called with a one-line message when something is drawn from less than the
            best source (e.g. an unreadable checkpoint); default: ignore.
    Returns:
        {"samples": path, "curves": path, "evolution_gif": path, "evolution_png": path}, only
        the entries written.
    """
    fn = "render_run"
    note = note if note is not None else (lambda message: None)
    if not is_run_dir(run_dir):
        fail(fn, "run_dir", "a run directory (with config.json or checkpoint.json)",
             repr(str(run_dir)))
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
        fail(fn, "num_samples", "a positive int", repr(num_samples))
    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run / "figures"
    out.mkdir(parents=True, exist_ok=True)
    name = title if title is not None else _run_title(run)
    written: dict[str, Path] = {}

    metrics = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    written["curves"] = plot_curves(out / "curves.png", metrics, title=name)

    snaps = read_snapshots(run)
    if snaps is None or len(snaps.labels) == 0:
        return written
    n = min(num_samples, len(snaps.labels))
    images, labels = snaps.images[:n], snaps.labels[:n]
    if model is None:
        try:
            model = load_run_model(run, input_size=tuple(images.shape[1:]))
        except (ValueError, KeyError, OSError) as e:  # a corrupt or foreign checkpoint
            note(f"the checkpoint does not load ({e}); drawing from the latest snapshot")
            model = None
    tracks, predictions = None, None
    if model is not None:
        tracks, predictions = _tracks_from_model(model, images)
        if snaps.steps and len(tracks) != len(snaps.steps[-1].outputs):
            note(f"the model has {len(tracks)} spatial transformer(s) but the snapshots "
                 f"{len(snaps.steps[-1].outputs)}; drawing from the latest snapshot")
            tracks = None
    if tracks is None:
        tracks = _tracks_from_snapshot(snaps.steps[-1], images) if snaps.steps else []
    tracks = [t for t in tracks if t.input.dim() == 4]  # pictures of 2-D transformers only

    views = [TransformerView(t.name, t.input, t.output, t.outline(t.theta, t.output.shape[-2:]))
             for t in tracks]
    written["samples"] = plot_samples(out / "samples.png", images, views, labels=labels,
                                      predictions=predictions)

    if snaps.steps and tracks:
        test_error = {int(m["step"]): m.get("error") for m in metrics
                      if m.get("split") == "test" and "step" in m}
        steps = []
        for s in snaps.steps:
            if len(s.outputs) <= max(t.index for t in tracks):
                continue  # a snapshot of another model
            outputs = [s.outputs[t.index][:n] for t in tracks]
            outlines = [t.outline(s.thetas[t.index][:n], o.shape[-2:])
                        for t, o in zip(tracks, outputs, strict=True)]
            err = test_error.get(s.step)
            caption = f"test error {err:.2f}%" if isinstance(err, (int, float)) else ""
            steps.append(EvolutionStep(s.step, outputs, outlines, caption))
        if steps:
            gif, png = save_evolution(out / "evolution.gif", out / "evolution.png",
                                      [t.input for t in tracks], steps)
            written["evolution_gif"], written["evolution_png"] = gif, png
    return written


@dataclass
class _Track:
    """One transformer (index ``index`` in call order) as the pictures need it."""

    index: int
    name: str
    input: Tensor  # (N, C, H, W): the channels it warps
    output: Tensor  # (N, C', h, w): its final output
    theta: Tensor  # its final theta
    grid: Any  # (theta, size_out) -> (N, h, w, 2) normalised grid, or None
    align_corners: bool = False

    def outline(self, theta: Tensor, size_out) -> Tensor | None:
        with torch.no_grad():
            grid = self.grid(theta, tuple(int(s) for s in size_out))
        if grid is None:
            return None
        return grid_outline(grid.cpu(), tuple(self.input.shape[-2:]),
                            align_corners=self.align_corners)


def _tracks_from_model(model: nn.Module, images: Tensor) -> tuple[list[_Track], Tensor]:
    """Run the model on the samples: every transformer's input, output and grid."""
    from stnkit.nn import inspect_transformers

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = images.to(device)
            records = inspect_transformers(model, x)
            predictions = model(x).argmax(1).cpu()
    finally:
        model.train(was_training)
    tracks = []
    for i, r in enumerate(records):
        st = r["module"]
        chans = getattr(st, "warp_channels", None)
        inp = r["input"] if chans is None else r["input"][:, list(chans)]

        def grid(theta, size, st=st):
            return st.sampling_grid(theta.to(device), size)

        tracks.append(_Track(i, _view_name(r["name"], i), inp.cpu(), r["output"].cpu(),
                             r["theta"], grid, bool(getattr(st, "align_corners", False))))
    return tracks, predictions


def _tracks_from_snapshot(last: Snapshot, images: Tensor) -> list[_Track]:
    """Without the model: the transformers' inputs are taken to be the images (or, for a
    one-channel output of a multi-channel image, channel i: the addition models); grids
    use the zoo's defaults (align_corners=False, the default TPS lattice)."""
    tracks = []
    n = images.shape[0]
    for i, (o, th, tr) in enumerate(zip(last.outputs, last.thetas, last.transforms, strict=True)):
        x = images
        if o.dim() == 4 and o.shape[1] == 1 and images.shape[1] > 1:
            x = images[:, min(i, images.shape[1] - 1)][:, None]
        tracks.append(_Track(i, _view_name(_name(last, i), i), x, o[:n], th[:n],
                             lambda theta, size, tr=tr: _grid_from_theta(theta, tr, size)))
    return tracks


def render_reproduction(repro_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                        title: str | None = None) -> dict[str, Path]:
    """Write ``results.png``: our errors against the paper's, per cell of ``results.csv``.

    ``out_dir`` defaults to ``REPRO_DIR/figures`` (created). Returns {"results": path}.
    """
    rows = read_results(repro_dir)
    if not rows:
        fail("render_reproduction", "results.csv", "at least one row", "none")
    out = Path(out_dir) if out_dir is not None else Path(repro_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    return {"results": plot_results(out / "results.png", rows, title=title)}


def load_run_model(run_dir: str | os.PathLike, *,
                   input_size: tuple[int, int, int]) -> nn.Module | None:
    """The model of a run's checkpoint with its final weights, on the CPU, in eval mode.

    Args:
        input_size: (C, H, W) of the run's images (the saved samples have it).
    Returns:
        the model, or None when the run has no checkpoint yet. A checkpoint that does not
        load raises ``stnkit.train.CheckpointError`` (a ValueError).
    """
    run = Path(run_dir)
    from stnkit import train

    loader = getattr(train, "load_model", None)
    if loader is not None:  # the training package's own loader, when it offers one
        return loader(run) if (run / "checkpoint.json").is_file() else None
    from stnkit.data import VARIANTS
    from stnkit.models import create_model
    from stnkit.train import checkpoint as ckpt

    if not (run / ckpt.RECORD).is_file():
        return None
    record = ckpt.read_record(run)
    weights = ckpt.read_weights(run, record)
    variant = VARIANTS.get(str(record.get("data") or record["config"].get("data")))
    model = create_model(record["model"], input_size=tuple(int(s) for s in input_size),
                         num_classes=variant.num_classes if variant is not None else None)
    ckpt.load_weights_into(model, weights, model_name=record["model"], path=str(run / ckpt.WEIGHTS))
    return model.eval()


def _run_title(run: Path) -> str:
    try:
        cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
        return f"{cfg.get('model', '?')} on {cfg.get('data', '?')}  ({run.name})"
    except (OSError, ValueError, AttributeError):
        return run.name


def _name(s: Snapshot, i: int) -> str:
    return s.names[i] if i < len(s.names) else ""


def _view_name(name: str, i: int) -> str:
    return name or f"ST {i + 1}"


def _grid_from_theta(theta: Tensor, transform: str, size_out: tuple[int, int]) -> Tensor | None:
    """A snapshot theta's grid without its module: zoo defaults (align_corners=False, the
    default TPS lattice); None for thetas that are not 2-D."""
    from stnkit.ops import affine_grid, projective_grid, tps_grid

    if theta.dim() != 3:
        return None
    if theta.shape[1:] == (2, 3):
        return affine_grid(theta, size_out)
    if theta.shape[1:] == (3, 3):
        return projective_grid(theta, size_out)
    if theta.shape[2] == 2 and transform in ("tps", ""):
        return tps_grid(theta, size_out)
    return None
