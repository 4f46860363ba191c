"""Pictures of what a spatial transformer does and how training went.

- :func:`plot_samples`: fixed test samples: the input, the input with the outline of the
  region each transformer reads, and each transformer's output.
- :func:`plot_curves`: loss, train/test error and learning rate against the step.
- :func:`save_evolution`: the transformers' outputs at every snapshot of a run, as an
  animated GIF and a PNG strip.
- :func:`plot_results`: our errors against the paper's, per cell of a reproduction.

matplotlib draws on its own Agg canvas (no pyplot, the user's backend and rc settings are
left alone) and pillow writes the files atomically; both are imported only when a function
runs (the ``viz`` extra). Every PNG has a fixed size in pixels, stated in each docstring.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from stnkit._checks import check_shape, fail
from stnkit.viz._deps import figure, render, require
from stnkit.viz.grids import display_images
from stnkit.viz.images import save_gif, save_png

__all__ = [
    "EvolutionStep",
    "TransformerView",
    "evolution_strip",
    "evolution_frames",
    "plot_curves",
    "plot_results",
    "plot_samples",
    "save_evolution",
]

OUTLINE_COLOUR = "#ff3030"
OUTLINE_MARGIN = 0.1  # white margin around an image with an outline, per side, of its size
_TRAIN, _TEST = "#1f77b4", "#d62728"


@dataclass
class TransformerView:
    """What one spatial transformer did to N samples.

    Attributes:
        name: shown in row labels (e.g. ``"st"`` or the module path).
        input: (N, C, H, W) what the transformer read.
        output: (N, C', h, w) what it produced.
        outline: (N, P, 2) pixel (x, y) polygon of the region read, in ``input``'s pixels
            (see :func:`stnkit.viz.grids.grid_outline`), or None to draw none.
    """

    name: str
    input: Tensor
    output: Tensor
    outline: Tensor | None = None


@dataclass
class EvolutionStep:
    """The transformers' outputs at one snapshot: ``outputs[i]`` (N, C', h, w) and
    ``outlines[i]`` (N, P, 2) or None, for transformer i in call order."""

    step: int
    outputs: list[Tensor]
    outlines: list[Tensor | None] = field(default_factory=list)
    caption: str = ""


# ---------------------------------------------------------------------------------------------
# Sample panel
# ---------------------------------------------------------------------------------------------

SAMPLE_CELL_IN = 1.1  # inches per image cell
SAMPLE_LEFT_IN, SAMPLE_TOP_IN, SAMPLE_PAD_IN = 1.5, 0.4, 0.1


def samples_figure_size(num_samples: int, num_transformers: int, *,
                        dpi: int = 100) -> tuple[int, int]:
    """(width, height) in pixels of :func:`plot_samples`' PNG."""
    rows = 1 + 2 * num_transformers
    width = SAMPLE_LEFT_IN + num_samples * SAMPLE_CELL_IN + SAMPLE_PAD_IN
    height = SAMPLE_TOP_IN + rows * SAMPLE_CELL_IN + SAMPLE_PAD_IN
    return round(width * dpi), round(height * dpi)


def plot_samples(path: str | os.PathLike, images: Tensor, views: Sequence[TransformerView] = (), *,
                 labels: Sequence[int] | Tensor | None = None,
                 predictions: Sequence[int] | Tensor | None = None, dpi: int = 100) -> Path:
    """PNG of N samples: a column each; rows: the input, then per transformer the input with
    the outline of the region it reads, and its output.

    Args:
        path: the PNG to write (atomically).
        images: (N, C, H, W) model inputs in [0, 1].
        views: one :class:`TransformerView` per transformer (none for a plain CNN).
        labels, predictions: (N,) ints shown above each column (a wrong prediction in red).
    Returns:
        ``path``; the PNG is :func:`samples_figure_size` pixels.
    """
    fn = "plot_samples"
    N = check_shape(images, ("N", None, None, None), name="images", fn=fn)["N"]
    if N == 0:
        fail(fn, "images", "at least one sample", "0")
    for v in views:
        check_shape(v.input, (N, None, None, None), name="views[].input", fn=fn)
        check_shape(v.output, (N, None, None, None), name="views[].output", fn=fn)
        if v.outline is not None:
            check_shape(v.outline, (N, None, 2), name="views[].outline", fn=fn)
    labels = _int_list(labels, N, "labels", fn)
    predictions = _int_list(predictions, N, "predictions", fn)

    rows: list[tuple[str, np.ndarray, Tensor | None]] = [("input", display_images(images), None)]
    for v in views:
        prefix = v.name if len(views) > 1 else "transformer"
        rows.append((f"{prefix}:\nsampled region", display_images(v.input), v.outline))
        rows.append((f"{prefix}:\noutput", display_images(v.output), None))

    width_px, height_px = samples_figure_size(N, len(views), dpi=dpi)
    with figure(width_px / dpi, height_px / dpi, dpi=dpi) as fig:
        fig.subplots_adjust(
            left=SAMPLE_LEFT_IN * dpi / width_px, right=1 - SAMPLE_PAD_IN * dpi / width_px,
            top=1 - SAMPLE_TOP_IN * dpi / height_px, bottom=SAMPLE_PAD_IN * dpi / height_px,
            wspace=0.06, hspace=0.06)
        axes = fig.subplots(len(rows), N, squeeze=False)
        for r, (row_label, pixels, outline) in enumerate(rows):
            for n in range(N):
                ax = axes[r][n]
                h, w = pixels.shape[1:3]
                ax.imshow(pixels[n], interpolation="nearest", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
                mx = my = 0.0
                if outline is not None:
                    xy = np.clip(outline[n].double().numpy(), -1e4, 1e4)  # NaN stays NaN: a gap
                    ax.plot(xy[:, 0], xy[:, 1], color=OUTLINE_COLOUR, linewidth=1.3)
                    # a white margin, so an outline on or just beyond the frame shows
                    mx, my = OUTLINE_MARGIN * w, OUTLINE_MARGIN * h
                ax.set_xlim(-0.5 - mx, w - 0.5 + mx)
                ax.set_ylim(h - 0.5 + my, -0.5 - my)
                ax.set_xticks([])
                ax.set_yticks([])
                if n == 0:
                    ax.set_ylabel(row_label, rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and labels is not None:
                for n in range(N):
                    text = f"label {labels[n]}"
                    colour = "black"
                    if predictions is not None:
                        text += f", pred {predictions[n]}"
                        colour = "black" if predictions[n] == labels[n] else "#c00000"
                    axes[0][n].set_title(text, fontsize=8, color=colour)
        pixels = render(fig)
    return save_png(path, pixels)


def _int_list(values, n: int, name: str, fn: str) -> list[int] | None:
    if values is None:
        return None
    out = [int(v) for v in (values.tolist() if isinstance(values, Tensor) else values)]
    if len(out) != n:
        fail(fn, name, f"{n} values (one per sample)", len(out))
    return out


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------

CURVES_SIZE_IN = (13.0, 3.8)


def curves_figure_size(*, dpi: int = 100) -> tuple[int, int]:
    """(width, height) in pixels of :func:`plot_curves`' PNG."""
    return round(CURVES_SIZE_IN[0] * dpi), round(CURVES_SIZE_IN[1] * dpi)


def plot_curves(path: str | os.PathLike, metrics: Sequence[Mapping], *, title: str | None = None,
                dpi: int = 100) -> Path:
    """PNG of training curves: loss, error (%) and learning rate against the step.

    Args:
        metrics: records as in a run's ``metrics.jsonl``: ``{"step", "split": "train" |
            "test", "loss", "error", "lr", ...}``; missing keys are skipped. The noisy train
            loss is drawn faintly with a moving average over it.
    Returns:
        ``path``; the PNG is :func:`curves_figure_size` pixels.
    """
    fn = "plot_curves"
    if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Sequence):
        fail(fn, "metrics", "a sequence of dicts", type(metrics).__name__, error=TypeError)

    def series(split: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [(float(m["step"]), float(m[key])) for m in metrics
               if isinstance(m, Mapping) and m.get("split") == split and m.get("step") is not None
               and isinstance(m.get(key), (int, float)) and math.isfinite(float(m[key]))]
        pts.sort()
        arr = np.array(pts, dtype=np.float64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    width_px, height_px = curves_figure_size(dpi=dpi)
    with figure(width_px / dpi, height_px / dpi, dpi=dpi) as fig:
        fig.subplots_adjust(left=0.055, right=0.99, top=0.83 if title else 0.9, bottom=0.15,
                            wspace=0.25)
        ax_loss, ax_err, ax_lr = fig.subplots(1, 3)
        for key, ax, name in (("loss", ax_loss, "loss"), ("error", ax_err, "error (%)")):
            drawn = False
            sx, sy = series("train", key)
            if len(sx):
                drawn = True
                if key == "loss" and len(sx) >= 8:
                    ax.plot(sx, sy, color=_TRAIN, alpha=0.25, linewidth=0.8)
                    ax.plot(sx, _moving_average(sy), color=_TRAIN, linewidth=1.6, label="train")
                else:
                    ax.plot(sx, sy, color=_TRAIN, linewidth=1.6, label="train")
            tx, ty = series("test", key)
            if len(tx):
                drawn = True
                ax.plot(tx, ty, color=_TEST, linewidth=1.6, marker="o", markersize=3, label="test")
            ax.set_title(name, fontsize=11)
            ax.set_xlabel("step")
            if drawn:
                values = np.concatenate([sy, ty])
                if key == "error" and values.min() > 0 and values.max() / values.min() > 20:
                    ax.set_yscale("log")
                ax.legend(fontsize=9)
                ax.grid(alpha=0.3)
            else:
                _no_data(ax)
        lx, ly = series("train", "lr")
        if not len(lx):
            lx, ly = series("test", "lr")
        ax_lr.set_title("learning rate", fontsize=11)
        ax_lr.set_xlabel("step")
        if len(lx):
            ax_lr.plot(lx, ly, color="#2ca02c", linewidth=1.6)
            if ly.min() > 0 and ly.max() / ly.min() > 20:
                ax_lr.set_yscale("log")
            ax_lr.grid(alpha=0.3)
        else:
            _no_data(ax_lr)
        if title:
            fig.suptitle(title, fontsize=12)
        pixels = render(fig)
    return save_png(path, pixels)


def _moving_average(y: np.ndarray) -> np.ndarray:
    """Centred moving average over about 1/25 of the points (edges use shorter windows)."""
    k = max(3, len(y) // 25) | 1
    kernel = np.ones(k)
    num = np.convolve(y, kernel, mode="same")
    den = np.convolve(np.ones_like(y), kernel, mode="same")
    return num / den


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------------------------
# Reproduction bar chart
# ---------------------------------------------------------------------------------------------

RESULTS_BAR_IN, RESULTS_MIN_PANEL_IN, RESULTS_PANEL_HEIGHT_IN = 0.55, 3.4, 3.4
RESULTS_TOP_IN = 0.75  # figure title, then the legend, above the panels


def _results_panels(rows: Sequence[Mapping]) -> list[tuple[str, list[int]]]:
    """(variant, row indices) per panel of :func:`plot_results`, variants in first-seen order."""
    panels: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        variant = r.get("variant", "") if isinstance(r, Mapping) else ""
        panels.setdefault(str(variant), []).append(i)
    return list(panels.items())


def _results_layout(rows: Sequence[Mapping]) -> tuple[int, int, float]:
    """(rows, columns, panel width in inches) of :func:`plot_results`' grid of panels."""
    panels = _results_panels(rows)
    cols = 1 if len(panels) == 1 else 2
    widest = max(len(indices) for _, indices in panels)
    return (math.ceil(len(panels) / cols), cols,
            max(RESULTS_MIN_PANEL_IN, 1.0 + RESULTS_BAR_IN * widest))


def results_figure_size(rows: Sequence[Mapping], *, dpi: int = 100) -> tuple[int, int]:
    """(width, height) in pixels of :func:`plot_results`' PNG for these ``rows``: one panel
    per variant, two panels a row (one when there is one variant)."""
    nrows, cols, panel_w = _results_layout(rows)
    height = nrows * RESULTS_PANEL_HEIGHT_IN + RESULTS_TOP_IN
    return round(cols * panel_w * dpi), round(height * dpi)


def plot_results(path: str | os.PathLike, rows: Sequence[Mapping], *, title: str | None = None,
                 dpi: int = 100) -> Path:
    """PNG bar charts: for each cell, our mean test error (with +- std) next to the paper's.

    One panel per distortion variant (``R``, ``RTS``, ...), two panels a row: the models side
    by side, each panel on its own scale, our mean written above its bar.

    Args:
        rows: records as in a reproduction's ``results.csv`` (keys ``experiment``,
            ``variant``, ``model``, ``seeds``, ``mean_error``, ``std_error``, ``paper_error``;
            numbers may be strings; an empty ``paper_error`` draws no paper bar, an empty
            ``mean_error`` an "n/a").
    Returns:
        ``path``; the PNG is :func:`results_figure_size` pixels.
    """
    fn = "plot_results"
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        fail(fn, "rows", "a sequence of dicts", type(rows).__name__, error=TypeError)
    if len(rows) == 0:
        fail(fn, "rows", "at least one result", "0")
    cells = []
    for i, r in enumerate(rows):
        try:
            mean = _float_or_none(r.get("mean_error"))
            std = _float_or_none(r.get("std_error")) or 0.0
            paper = _float_or_none(r.get("paper_error"))
        except (AttributeError, ValueError):
            fail(fn, f"rows[{i}]", "a dict with numeric mean_error/std_error/paper_error", repr(r))
        cells.append((str(r.get("model", "")), mean, std, paper, r.get("experiment", "")))

    width_px, height_px = results_figure_size(rows, dpi=dpi)
    _, cols, _ = _results_layout(rows)
    with figure(width_px / dpi, height_px / dpi, dpi=dpi) as fig:
        W, H = width_px / dpi, height_px / dpi  # inches
        panel_w, panel_h = W / cols, RESULTS_PANEL_HEIGHT_IN
        for p, (variant, indices) in enumerate(_results_panels(rows)):
            row, col = divmod(p, cols)
            # inside a panel: 0.6 in for the y axis, 0.3 for the title, 0.9 for the labels
            left, bottom = col * panel_w + 0.6, H - RESULTS_TOP_IN - (row + 1) * panel_h + 0.9
            ax = fig.add_axes((left / W, bottom / H, (panel_w - 0.75) / W, (panel_h - 1.2) / H))
            _results_panel(ax, [cells[i] for i in indices], variant)
        legend = {}  # label -> handle, over every panel (one may have no paper bars)
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
        handles, labels = list(legend.values()), list(legend)
        fig.legend(handles, labels, fontsize=9, loc="upper right", ncols=2, frameon=False,
                   bbox_to_anchor=(1.0, 1.0 - 0.3 / H))  # below the title
        experiments = sorted({str(c[4]) for c in cells if c[4]})
        fig.suptitle(title or ("test error (%): " + ", ".join(experiments) if experiments
                               else "test error (%)").strip(), fontsize=11, x=0.01, y=0.99,
                     ha="left", va="top")
        pixels = render(fig)
    return save_png(path, pixels)


def _results_panel(ax, cells: list[tuple], variant: str) -> None:
    """One panel of :func:`plot_results`: the cells of one variant, models side by side."""
    x = np.arange(len(cells), dtype=np.float64)
    bw = 0.38
    ours = np.array([c[1] if c[1] is not None else np.nan for c in cells])
    stds = np.array([c[2] for c in cells])
    paper = np.array([c[3] if c[3] is not None else np.nan for c in cells])
    ax.bar(x - bw / 2, np.nan_to_num(ours), bw, yerr=np.where(np.isnan(ours), 0, stds),
           capsize=3, color="#1f77b4", label="stnkit (mean ± std over seeds)")
    has_paper = ~np.isnan(paper)
    if has_paper.any():
        ax.bar(x[has_paper] + bw / 2, paper[has_paper], bw, color="#ff7f0e", label="paper")
    top = np.nanmax(np.concatenate([ours + stds, paper, [1.0]]))
    for xi, mean, std in zip(x, ours, stds, strict=True):
        text = "n/a" if np.isnan(mean) else f"{mean:.2f}"
        ax.text(xi - bw / 2, (0 if np.isnan(mean) else mean + std) + top * 0.02, text,
                ha="center", va="bottom", fontsize=7, rotation=90,
                color="grey" if np.isnan(mean) else "black")
    ax.set_xticks(x)
    rotate = len(cells) > 4
    ax.set_xticklabels([c[0] for c in cells], fontsize=8, rotation=35 if rotate else 0,
                       ha="right" if rotate else "center", rotation_mode="anchor")
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.set_ylim(0, top * 1.25)  # room for the numbers above the bars
    ax.set_title(variant or "all cells", fontsize=10)
    ax.set_ylabel("test error (%)", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)


def _float_or_none(value) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "nan", "NaN", "-")):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------
# Evolution through training (pillow only: frames are composed directly, fast)
# ---------------------------------------------------------------------------------------------

TILE = 84  # pixels of the longer side of every image tile
GAP = 4
HEADER = 24
LABEL_WIDTH = 96


def evolution_frames(inputs: Sequence[Tensor], steps: Sequence[EvolutionStep], *,
                     tile: int = TILE) -> list[np.ndarray]:
    """One uint8 (H, W, 3) frame per step: a caption, then for each transformer a row of its
    inputs with the step's outline and a row of its outputs.

    Args:
        inputs: per transformer, (N, C, H, W) what it reads (the same at every step).
        steps: the snapshots, in order.
    """
    fn = "evolution_frames"
    _check_evolution(inputs, steps, fn)
    Image, ImageDraw = require("PIL.Image"), require("PIL.ImageDraw")
    font = _font()
    shown_inputs = [display_images(x) for x in inputs]
    N = shown_inputs[0].shape[0]
    width = GAP + N * (tile + GAP)
    height = HEADER + len(inputs) * 2 * (tile + GAP)
    frames = []
    for s in steps:
        canvas = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(canvas)
        caption = f"step {s.step}" + (f"   {s.caption}" if s.caption else "")
        draw.text((GAP, 4), caption, fill="black", font=font)
        y = HEADER
        for t, shown in enumerate(shown_inputs):
            outputs = display_images(s.outputs[t])
            outline = s.outlines[t] if t < len(s.outlines) else None
            for n in range(N):
                x = GAP + n * (tile + GAP)
                canvas.paste(_tile(shown[n], tile, None if outline is None else outline[n]), (x, y))
                canvas.paste(_tile(outputs[n], tile), (x, y + tile + GAP))
            y += 2 * (tile + GAP)
        frames.append(np.asarray(canvas))
    return frames


def evolution_strip(inputs: Sequence[Tensor], steps: Sequence[EvolutionStep], *,
                    tile: int = TILE) -> np.ndarray:
    """A uint8 (H, W, 3) strip: the inputs on top, then one row of outputs per step (per
    transformer), each row labelled with its step."""
    fn = "evolution_strip"
    _check_evolution(inputs, steps, fn)
    Image, ImageDraw = require("PIL.Image"), require("PIL.ImageDraw")
    font = _font()
    N = inputs[0].shape[0]
    T = len(inputs)
    rows = T + len(steps) * T
    width = LABEL_WIDTH + N * (tile + GAP)
    height = GAP + rows * (tile + GAP)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)

    def row(r: int, label: str, images: np.ndarray) -> None:
        y = GAP + r * (tile + GAP)
        for i, line in enumerate(label.split("\n")):
            draw.text((4, y + tile // 2 - 8 * len(label.split("\n")) + 16 * i), line,
                      fill="black", font=font)
        for n in range(N):
            canvas.paste(_tile(images[n], tile), (LABEL_WIDTH + n * (tile + GAP), y))

    r = 0
    for t, x in enumerate(inputs):
        row(r, "input" if T == 1 else f"input {t + 1}", display_images(x))
        r += 1
    for s in steps:
        for t in range(T):
            label = f"step {s.step}" + ("" if T == 1 else f"\nST {t + 1}")
            row(r, label, display_images(s.outputs[t]))
            r += 1
    return np.asarray(canvas)


def save_evolution(gif_path: str | os.PathLike, png_path: str | os.PathLike,
                   inputs: Sequence[Tensor], steps: Sequence[EvolutionStep], *,
                   max_frames: int = 60, max_rows: int = 8, tile: int = TILE,
                   duration_ms: int = 500) -> tuple[Path, Path]:
    """Write the evolution of the transformers' outputs as an animated GIF and a PNG strip.

    The GIF has one frame per step (at most ``max_frames``, evenly spaced, always keeping the
    first and the last; the last frame is held 4x longer); the strip has at most ``max_rows``
    steps chosen the same way. Sizes: see :func:`evolution_frames` / :func:`evolution_strip`
    (tile pixels per image, 4-pixel gaps).
    """
    fn = "save_evolution"
    _check_evolution(inputs, steps, fn)
    gif_steps = [steps[i] for i in spread(len(steps), max_frames)]
    frames = evolution_frames(inputs, gif_steps, tile=tile)
    durations = [duration_ms] * (len(frames) - 1) + [4 * duration_ms]
    gif = save_gif(gif_path, frames, duration_ms=durations)
    strip = save_png(png_path, evolution_strip(
        inputs, [steps[i] for i in spread(len(steps), max_rows)], tile=tile))
    return gif, strip


def spread(n: int, k: int) -> list[int]:
    """At most ``k`` indices of ``range(n)``, evenly spaced, including the first and the last."""
    if n <= k:
        return list(range(n))
    if k <= 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _check_evolution(inputs: Sequence[Tensor], steps: Sequence[EvolutionStep], fn: str) -> None:
    if len(inputs) == 0:
        fail(fn, "inputs", "one tensor per transformer", "none")
    if len(steps) == 0:
        fail(fn, "steps", "at least one step", "none")
    N = check_shape(inputs[0], ("N", None, None, None), name="inputs[0]", fn=fn)["N"]
    for x in inputs:
        check_shape(x, (N, None, None, None), name="inputs[]", fn=fn)
    for s in steps:
        if len(s.outputs) != len(inputs):
            fail(fn, "steps[].outputs", f"{len(inputs)} tensors (one per transformer)",
                 len(s.outputs))
        for o in s.outputs:
            check_shape(o, (N, None, None, None), name="steps[].outputs[]", fn=fn)


def _font():
    ImageFont = require("PIL.ImageFont")
    try:
        return ImageFont.load_default(size=13)
    except (TypeError, OSError):  # pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _tile(pixels: np.ndarray, tile: int, outline: Tensor | None = None):
    """An image (h, w, 3) scaled (nearest) so its longer side is ``tile``, centred on a
    white ``tile`` x ``tile`` square; with ``outline`` (P, 2) pixel (x, y), the image is
    smaller by a white margin and the outline is drawn over it."""
    Image, ImageDraw = require("PIL.Image"), require("PIL.ImageDraw")
    h, w = pixels.shape[:2]
    fit = tile if outline is None else tile / (1 + 2 * OUTLINE_MARGIN)  # margin for the outline
    s = fit / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = Image.fromarray(pixels, "RGB").resize(size, Image.Resampling.NEAREST)
    out = Image.new("RGB", (tile, tile), "white")
    left, top = (tile - size[0]) // 2, (tile - size[1]) // 2
    out.paste(img, (left, top))
    if outline is not None:
        draw = ImageDraw.Draw(out)
        xy = outline.double().numpy()
        xy = np.stack([left + (xy[:, 0] + 0.5) * size[0] / w - 0.5,
                       top + (xy[:, 1] + 0.5) * size[1] / h - 0.5], axis=1)
        for part in _finite_runs(xy):
            if len(part) >= 2:
                draw.line([tuple(p) for p in part], fill=OUTLINE_COLOUR, width=2)
    return out


def _finite_runs(xy: np.ndarray) -> list[np.ndarray]:
    """Split a polyline (P, 2) at non-finite points; clamp far points so drawing stays sane."""
    ok = np.isfinite(xy).all(axis=1)
    xy = np.clip(np.where(ok[:, None], xy, 0.0), -1e4, 1e4)
    runs, start = [], None
    for i, good in enumerate(ok):
        if good and start is None:
            start = i
        if not good and start is not None:
            runs.append(xy[start:i])
            start = None
    if start is not None:
        runs.append(xy[start:])
    return runs
