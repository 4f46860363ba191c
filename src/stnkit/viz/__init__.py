"""Pictures: what a spatial transformer reads and produces, training curves, image files.

matplotlib and pillow (the ``viz`` extra: ``pip install 'stnkit[viz]'``) are imported only
when a function needs them; importing this package does not import them. Figures are drawn
on their own Agg canvas (no pyplot; the user's backend is left alone) and every file is
written atomically.

- Image files: :func:`read_image`, :func:`write_image` ((C, H, W) float tensors in [0, 1]).
- Datasets: :func:`label_grid` (samples with their labels and boxes, as ``stnkit data show``
  saves them).
- Geometry: :func:`grid_outline` (the region a sampling grid reads, in input pixels).
- Plots: :func:`plot_samples`, :func:`plot_curves`, :func:`save_evolution`,
  :func:`plot_results`.
- Directories: :func:`render_run` (a training run), :func:`render_reproduction` (a table).
"""

from stnkit.viz.datasets import label_grid
from stnkit.viz.grids import display_images, grid_outline, normalised_to_pixel
from stnkit.viz.images import read_image, write_image
from stnkit.viz.plots import (
    EvolutionStep,
    TransformerView,
    plot_curves,
    plot_results,
    plot_samples,
    save_evolution,
)
from stnkit.viz.run import (
    read_metrics,
    read_results,
    read_snapshots,
    render_reproduction,
    render_run,
)

__all__ = [
    "EvolutionStep",
    "TransformerView",
    "display_images",
    "grid_outline",
    "label_grid",
    "normalised_to_pixel",
    "plot_curves",
    "plot_results",
    "plot_samples",
    "read_image",
    "read_metrics",
    "read_results",
    "read_snapshots",
    "render_reproduction",
    "render_run",
    "save_evolution",
    "write_image",
]
