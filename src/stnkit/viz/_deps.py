"""Optional dependencies of :mod:`stnkit.viz` (the ``viz`` extra), imported only when used."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import numpy as np

from stnkit._errors import StnkitError

INSTALL_HINT = "pip install 'stnkit[viz]'"


class MissingDependencyError(StnkitError, ImportError):
    """An optional package (of the ``viz`` extra) is not installed; the message says how to
    install it. An ImportError, so ``except ImportError`` still catches it."""


def require(module: str) -> ModuleType:
    """Import ``module`` (``"PIL.Image"``, ``"matplotlib"``, ...) or say how to install it.

    Raises :class:`MissingDependencyError` (an ImportError) whose message names the missing
    package and the ``viz`` extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        package = {"PIL": "pillow"}.get(top, top)
        raise MissingDependencyError(
            f"stnkit.viz needs {package}, which is not installed ({e}); "
            f"install it with: {INSTALL_HINT}"
        ) from e


def require_viz() -> None:
    """Check that both packages of the ``viz`` extra (matplotlib, pillow) import."""
    require("matplotlib")
    require("PIL.Image")


@contextmanager
def figure(width: float, height: float, *, dpi: int) -> Iterator:
    """A matplotlib ``Figure`` on its own Agg canvas, drawn in matplotlib's default style.

    No pyplot and no change to the user's backend; the user's rc settings are set aside
    inside the block (and restored after it) so pictures look the same everywhere.
    ``width`` and ``height`` are in inches; :func:`render` gives a ``round(height * dpi)``
    by ``round(width * dpi)`` image.
    """
    require("matplotlib")
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        fig = Figure(figsize=(width, height), dpi=dpi)
        FigureCanvasAgg(fig)
        yield fig


def render(fig) -> np.ndarray:
    """Draw ``fig`` and return its pixels, uint8 (H, W, 3) RGB (exactly figsize * dpi)."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4)
    return np.ascontiguousarray(rgba[..., :3])
