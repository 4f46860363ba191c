"""Pure tensor functions: grid generators, samplers, warps and transforms.

No ``nn.Module``, no I/O, no global state. See README "Coordinate convention".
"""

from stnkit.ops import reference, transforms
from stnkit.ops.grids import affine_grid, projective_grid, tps_grid
from stnkit.ops.sample import sample
from stnkit.ops.warp import warp

__all__ = [
    "affine_grid",
    "projective_grid",
    "reference",
    "sample",
    "tps_grid",
    "transforms",
    "warp",
]
