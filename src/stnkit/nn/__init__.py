"""Spatial transformer layers, localisation networks and helpers.

- :class:`SpatialTransformer`: localisation net -> theta -> :func:`stnkit.ops.warp`; the
  parameterisations of every transform family are tabled in :mod:`stnkit.nn.transformer`.
- :class:`ParallelSpatialTransformers`: several transformers on one input (serial stacking:
  ``nn.Sequential``).
- :class:`FCNLocalization`, :class:`CNNLocalization`, :class:`TutorialLocalization`: the
  paper's and the PyTorch tutorial's localisation nets.
- :func:`param_groups`: localisation nets at their own learning rate.
- :func:`inspect_transformers`: input, output and theta of every transformer in a model.
"""

from stnkit.nn.groups import localization_parameters, param_groups
from stnkit.nn.inspect import inspect_transformers
from stnkit.nn.localization import CNNLocalization, FCNLocalization, TutorialLocalization
from stnkit.nn.transformer import (
    TRANSFORMS,
    ParallelSpatialTransformers,
    SpatialTransformer,
    ThetaRegressor,
    tps_control_points,
)

__all__ = [
    "TRANSFORMS",
    "CNNLocalization",
    "FCNLocalization",
    "ParallelSpatialTransformers",
    "SpatialTransformer",
    "ThetaRegressor",
    "TutorialLocalization",
    "inspect_transformers",
    "localization_parameters",
    "param_groups",
    "tps_control_points",
]
