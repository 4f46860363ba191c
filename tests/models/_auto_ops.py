"""The operators of the kernel that ``warp(backend="auto")`` runs for the zoo's affine and
projective transformers on the CPU: the C++ kernels' (the tests that use them need the kernels
built, as CI builds them). The compile and export tests look for them in the graphs."""

from __future__ import annotations

import torch

from stnkit.ops.kernels import cpp_cpu  # noqa: F401  (registers the operators)

FORWARD_NAME, BACKWARD_NAME = "warp_cpu", "warp_cpu_backward"
FORWARD = getattr(torch.ops.stnkit, FORWARD_NAME).default
"""The forward operator, ``torch.ops.stnkit.warp_cpu.default``."""
BACKWARD = getattr(torch.ops.stnkit, BACKWARD_NAME).default
