"""The operators of the kernel that ``warp(backend="auto")`` runs for the zoo's affine and
projective transformers on the CPU (C++ where it is built, else Numba): the compile and
export tests look for them in the graphs."""

from __future__ import annotations

import torch

from stnkit.ops.warp import auto_backend

_OPERATORS = {"cpp": ("warp_cpu", "warp_cpu_backward"), "numba": ("warp", "warp_backward")}

BACKEND = auto_backend(torch.zeros(1, 1, 4, 4), torch.eye(2, 3)[None])
FORWARD_NAME, BACKWARD_NAME = _OPERATORS[BACKEND]
FORWARD = getattr(torch.ops.stnkit, FORWARD_NAME).default
"""The forward operator, e.g. ``torch.ops.stnkit.warp_cpu.default``."""
BACKWARD = getattr(torch.ops.stnkit, BACKWARD_NAME).default
