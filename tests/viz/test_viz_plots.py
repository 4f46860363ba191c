"""Plots write PNG/GIF files of the stated sizes and leave matplotlib's global state alone."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

from stnkit.ops import affine_grid, transforms  # noqa: E402
from stnkit.viz import (  # noqa: E402
    EvolutionStep,
    TransformerView,
    grid_outline,
    plot_curves,
    plot_results,
    plot_samples,
    plots,
    save_evolution,
)
from tests.viz.rundirs import TABLE, digits  # noqa: E402


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def view(n: int, *, size=(20, 20), out=(10, 10), name="st") -> TransformerView:
    x = digits(n, (1, *size))
    theta = transforms.attention(torch.full((n,), 0.6), torch.linspace(-0.2, 0.2, n), 0.1)
    grid = affine_grid(theta, out)
    return TransformerView(name, x, torch.nn.functional.grid_sample(x, grid, align_corners=False),
                           grid_outline(grid, size))


@pytest.mark.parametrize("n,views", [(5, 1), (3, 0), (4, 2)])
def test_samples_png_size(tmp_path, n, views):
    images = digits(n)
    vs = [view(n, name=f"st{i}") for i in range(views)]
    path = plot_samples(tmp_path / "s.png", images, vs, labels=list(range(n)),
                        predictions=[0] * n)
    assert png_size(path) == plots.samples_figure_size(n, views)
    width_in, height_in = 1.5 + 1.1 * n + 0.1, 0.4 + 1.1 * (1 + 2 * views) + 0.1
    assert png_size(path) == (round(width_in * 100), round(height_in * 100))


def test_samples_draws_the_outline_in_red(tmp_path):
    """The outline colour appears in the picture only when an outline is given."""
    n = 2
    v = view(n)
    with_outline = plot_samples(tmp_path / "a.png", v.input, [v])
    without = plot_samples(tmp_path / "b.png", v.input, [TransformerView("st", v.input, v.output)])

    def reds(path):
        a = np.asarray(Image.open(path).convert("RGB")).astype(int)
        return int(((a[..., 0] > 200) & (a[..., 1] < 90) & (a[..., 2] < 90)).sum())

    assert reds(without) == 0
    assert reds(with_outline) > 50


def test_samples_bad_input(tmp_path):
    images = digits(3)
    with pytest.raises(ValueError, match=r"plot_samples: expected labels 3 values"):
        plot_samples(tmp_path / "x.png", images, labels=[1, 2])
    with pytest.raises(ValueError, match=r"plot_samples: expected views\[\]\.output of shape \(3,"):
        v = view(2)
        plot_samples(tmp_path / "x.png", images, [TransformerView("s", images, v.output)])
    with pytest.raises(ValueError, match=r"plot_samples: expected images at least one sample"):
        plot_samples(tmp_path / "x.png", images[:0])
    assert not (tmp_path / "x.png").exists()


def test_curves_png_size_with_and_without_data(tmp_path):
    metrics = [{"step": s, "split": "train", "loss": 1 / s, "error": 50 / s, "lr": 0.1}
               for s in range(1, 60)]
    metrics += [{"step": s, "split": "test", "loss": 1 / s, "error": 40 / s, "lr": 0.1}
                for s in (20, 40, 59)]
    metrics.append({"step": 60, "split": "train", "loss": float("nan")})  # skipped, not a crash
    path = plot_curves(tmp_path / "c.png", metrics, title="t")
    assert png_size(path) == plots.curves_figure_size()
    assert png_size(plot_curves(tmp_path / "e.png", [])) == (1300, 380)
    with pytest.raises(TypeError, match=r"plot_curves: expected metrics a sequence of dicts"):
        plot_curves(tmp_path / "x.png", "metrics.jsonl")


def test_results_bar_chart(tmp_path):
    path = plot_results(tmp_path / "r.png", TABLE)
    assert png_size(path) == plots.results_figure_size(TABLE)
    # one panel per variant, two a row: 6 variants of 5 models are 3 rows of 2 panels
    many = [dict(r, variant=f"V{i}") for i in range(6) for r in TABLE]
    w, h = png_size(plot_results(tmp_path / "m.png", many))
    assert (w, h) == plots.results_figure_size(many)
    assert plots._results_layout(many) == (3, 2, 1.0 + plots.RESULTS_BAR_IN * 5)
    assert plots._results_layout(TABLE) == (1, 2, plots.RESULTS_MIN_PANEL_IN)  # R, RTS
    one = [dict(r, variant="R") for r in TABLE]  # one variant: one panel, one column
    assert plots._results_layout(one)[:2] == (1, 1)
    assert [v for v, _ in plots._results_panels(many)] == [f"V{i}" for i in range(6)]
    missing = [dict(TABLE[0], mean_error="")]  # a cell not run yet: drawn as n/a
    assert png_size(plot_results(tmp_path / "n.png", missing)) == plots.results_figure_size(missing)
    with pytest.raises(ValueError, match=r"plot_results: expected rows at least one result"):
        plot_results(tmp_path / "x.png", [])
    with pytest.raises(ValueError, match=r"plot_results: expected rows\[0\] a dict with numeric"):
        plot_results(tmp_path / "x.png", [dict(TABLE[0], mean_error="lots")])


@pytest.mark.parametrize("steps,transformers", [(3, 1), (12, 2), (1, 1)])
def test_evolution_gif_frames_and_strip_size(tmp_path, steps, transformers):
    n = 4
    inputs = [digits(n, (1, 20, 20), seed=t) for t in range(transformers)]
    evo = []
    for s in range(steps):
        vs = [view(n) for _ in range(transformers)]
        evo.append(EvolutionStep(100 * (s + 1), [v.output for v in vs], [v.outline for v in vs],
                                 caption=f"test error {10 - s:.2f}%"))
    gif, png = save_evolution(tmp_path / "e.gif", tmp_path / "e.png", inputs, evo, max_rows=8)
    tile, gap = plots.TILE, plots.GAP
    with Image.open(gif) as im:
        assert im.format == "GIF"
        assert im.n_frames == steps
        assert im.size == (gap + n * (tile + gap), plots.HEADER + transformers * 2 * (tile + gap))
        im.seek(im.n_frames - 1)
        assert im.info["duration"] == 2000  # the last frame is held
    rows = transformers * (1 + min(steps, 8))
    assert png_size(png) == (plots.LABEL_WIDTH + n * (tile + gap), gap + rows * (tile + gap))


def test_spread_keeps_first_and_last():
    assert plots.spread(5, 8) == [0, 1, 2, 3, 4]
    assert plots.spread(100, 5) == [0, 25, 50, 74, 99]
    got = plots.spread(61, 60)
    assert got[0] == 0 and got[-1] == 60 and len(got) <= 60 and got == sorted(set(got))


def test_no_pyplot_and_user_rc_settings_untouched():
    """Plotting neither imports pyplot nor changes the user's matplotlib settings."""
    code = """
import sys, tempfile, os, matplotlib
matplotlib.rcParams["lines.linewidth"] = 7.5
backend = dict.__getitem__(matplotlib.rcParams, "backend")  # reading it properly imports pyplot
from stnkit.viz import plot_curves
d = tempfile.mkdtemp()
plot_curves(os.path.join(d, "c.png"), [{"step": 1, "split": "train", "loss": 1.0}])
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
assert matplotlib.rcParams["lines.linewidth"] == 7.5
assert dict.__getitem__(matplotlib.rcParams, "backend") == backend
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_user_style_does_not_change_picture_size(tmp_path):
    import matplotlib

    with matplotlib.rc_context({"figure.dpi": 300, "savefig.dpi": 300, "savefig.bbox": "tight",
                                "figure.figsize": (2, 2)}):
        path = plot_curves(tmp_path / "c.png", [])
    assert png_size(path) == plots.curves_figure_size()
