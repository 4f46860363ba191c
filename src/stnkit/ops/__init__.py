"""Pure tensor functions: grid generators, samplers, warps and transforms.

No ``nn.Module``, no I/O, no global state. Coordinates: the documentation's "Coordinate
convention" page (docs/conventions.md).

Mixed precision (one policy for the grid generators, ``sample`` and ``warp`` on every
backend, implemented once in ``stnkit.ops._precision``; with its tests and timings in
docs/library.md, "Mixed precision"):

- Coordinates (theta, grids, the geometry inside the fused kernels) are computed in at least
  float32: in float64 when an operand is float64, else in float32. ``warp`` never rounds
  its grid; a grid generator returns the grid in theta's dtype, as ``F.affine_grid`` does
  (so a 16-bit theta gives a 16-bit grid: pass a float32 theta to keep it float32).
- The image is read in its own dtype and accumulated in that compute dtype (float32 for
  float16 / bfloat16 images, on the fused CPU and GPU kernels too).
- ``input`` and ``theta`` (or ``grid``) may have different floating dtypes (float16,
  bfloat16, float32, float64). The output has the input's dtype, grad_input the input's,
  grad_theta (grad_grid) theta's (the grid's). Integer, complex and bool tensors raise
  TypeError.
- ``torch.autocast`` changes nothing of this: the ops take the dtypes they are given (an
  fp32 image warped by a bf16 theta from an autocast localisation net gives an fp32 output),
  and autocast does not reach their matrix products. ``nn.SpatialTransformer`` runs its
  final theta regression in the layer's own dtype under autocast, so theta is not rounded
  to 16 bits either.
"""

from stnkit.ops import reference, transforms
from stnkit.ops.grids import affine_grid, projective_grid, tps_grid
from stnkit.ops.sample import sample
from stnkit.ops.warp import auto_backend, warp

__all__ = [
    "affine_grid",
    "auto_backend",
    "projective_grid",
    "reference",
    "sample",
    "tps_grid",
    "transforms",
    "warp",
]
