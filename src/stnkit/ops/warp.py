"""``warp``: grid generator + sampler in one call, dispatched to the fastest backend.

Backends (a kernel module exposes ``supports(input, theta, *, transform, mode, padding_mode)``
-> None or a one-line reason, and ``warp(input, theta, *, transform, size, mode,
padding_mode, align_corners, deterministic)``):

- ``"torch"``: ``affine_grid`` / ``projective_grid`` / ``tps_grid`` + ``stnkit.ops.sample``;
  supports everything ``sample`` does (any device).
- ``"cpp"``: ``stnkit.ops.kernels.cpp_cpu`` (fused CPU kernels in C++: 2-D affine,
  projective and TPS, 3-D affine; built at install time, optional; on torch's own OpenMP
  threads).
- ``"triton"``: ``stnkit.ops.kernels.triton_gpu`` (fused CUDA kernels).
- ``"auto"``: CPU tensors -> cpp; CUDA tensors -> triton; the kernel module if it imports
  (cpp: was built at install) and supports the call, otherwise torch.
  (The C++ kernels replaced the Numba ones: on torch's own threads they are faster inside a
  network at every shape measured, and need no compilation at the first call;
  ``benchmarks/warp.py``, ``docs/speed.md``. The order is ``_AUTO``.) An explicit kernel
  backend that is not installed or does not support the call raises ValueError with the
  reason.

Compilers: the kernels are PyTorch operators (``torch.ops.stnkit.warp_cpu`` (cpp) /
``warp_triton`` and their ``_backward``; schemas in
``stnkit.ops.kernels._library``), so ``torch.compile`` (``fullgraph=True`` included),
``torch.export`` and ``torch.jit.trace`` keep them in the graph with every backend, the
backward too; the compiler fuses what surrounds them (Triton kernels it sees inside). The
torch path (bicubic, TPS with ``dst_points`` or without a kernel that takes it,
``backend="torch"``) is plain torch code that the compilers trace. ``torch.jit.script`` is not
supported. Second derivatives of the kernels recompute the first through the torch path.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch
from torch import Tensor

from stnkit._checks import (
    check_choice,
    check_floating,
    check_same_batch,
    check_same_device,
    check_shape,
    check_tensor,
    fail,
    format_shape,
)
from stnkit.ops._precision import compute_dtype
from stnkit.ops.grids import (
    affine_grid,
    check_grid_size,
    check_tps_points,
    projective_grid,
    tps_grid,
    tps_weights,
)
from stnkit.ops.sample import MODES, PADDING_MODES, sample

__all__ = ["BACKENDS", "MODES", "PADDING_MODES", "TRANSFORMS", "auto_backend", "warp"]

TRANSFORMS = ("affine", "projective", "tps")
BACKENDS = ("auto", "torch", "cpp", "triton")
_KERNEL_MODULES = {"cpp": "stnkit.ops.kernels.cpp_cpu",
                   "triton": "stnkit.ops.kernels.triton_gpu"}
_AUTO = {"cpu": ("cpp",), "cuda": ("triton",)}  # kernel backends "auto" tries, in order


def _auto_kernel(input: Tensor, kernel_theta: Tensor, transform: str, mode: str,
                 padding_mode: str) -> tuple[str, ModuleType | None]:
    """(name, module) of the first kernel backend of ``_AUTO`` that imports and supports the
    call, or ("torch", None)."""
    for kernel in _AUTO.get(input.device.type, ()):
        module, _ = _load_kernel(kernel)
        if module is not None and module.supports(input, kernel_theta, transform=transform,
                                                  mode=mode, padding_mode=padding_mode) is None:
            return kernel, module
    return "torch", None


def auto_backend(input: Tensor, theta: Tensor, *, transform: str = "affine",
                 mode: str = "bilinear", padding_mode: str = "zeros") -> str:
    """The backend ``warp(input, theta, ..., backend="auto")`` runs for such a call:
    ``"cpp"``, ``"triton"`` or ``"torch"`` (which kernels are installed, and
    what they support). Kernels agree with the torch path to float rounding, not bit for bit,
    so code that stores results (the dataset caches of :mod:`stnkit.data`) records it.

    >>> import torch
    >>> from stnkit.ops import auto_backend
    >>> auto_backend(torch.zeros(1, 1, 4, 4), torch.eye(2, 3)[None]) in ("cpp", "torch")
    True
    """
    return _auto_kernel(input, _kernel_theta(input, theta, transform), transform, mode,
                        padding_mode)[0]


def _kernel_theta(input: Tensor, theta: Tensor, transform: str) -> Tensor:
    """theta as the kernel backends take it: a TPS as its spline weights over the default
    lattice, solved in the compute dtype (a float64 image with float32 points: in float64, as
    the grid); other transforms unchanged."""
    return tps_weights(theta.to(compute_dtype(input, theta))) if transform == "tps" else theta


def _load_kernel(backend: str) -> tuple[ModuleType | None, str | None]:
    """(module, None) or (None, why it cannot be imported)."""
    name = _KERNEL_MODULES[backend]
    try:  # import statements, not importlib: torch.compile traces them
        if backend == "cpp":
            import stnkit.ops.kernels.cpp_cpu  # noqa: F401
        else:
            import stnkit.ops.kernels.triton_gpu  # noqa: F401
    except ImportError as e:  # the module, or a dependency of it (triton), is missing
        return None, f"{name} cannot be imported ({e})"
    return sys.modules[name], None


def warp(input: Tensor, theta: Tensor, *, transform: str = "affine", size=None,
         mode: str = "bilinear", padding_mode: str = "zeros", align_corners: bool = False,
         backend: str = "auto", deterministic: bool | None = None,
         dst_points: Tensor | None = None) -> Tensor:
    """Warp ``input`` by ``theta``: ``output[p] = input(grid(theta)[p])``.

    Args:
        input: (B, C, H, W), or (B, C, D, H, W) for 3-D affine.
        theta: maps output coordinates to input coordinates, normalised [-1, 1], any
            floating dtype, device of ``input``:
            ``"affine"``: (B, 2, 3), or (B, 3, 4) with 5-D input;
            ``"projective"``: (B, 3, 3) homography (points with w <= 0 sample as outside);
            ``"tps"``: (B, K, 2) source control points (see ``tps_grid``).
        size: output spatial size (H_out, W_out) / (D_out, H_out, W_out); None keeps the
            input's.
        mode, padding_mode, align_corners: as in ``stnkit.ops.sample``.
        backend: "auto", "torch", "cpp" or "triton" (see the module docstring).
        deterministic: None means ``torch.are_deterministic_algorithms_enabled()``; passed to
            kernel backends.
        dst_points: (K, 2), only for ``"tps"``: where the control points sit in the output
            (default: the regular lattice of ``tps_grid``). Kernel backends do not take it,
            so a call with dst_points runs on "torch".
    Returns:
        (B, C, *size), dtype of ``input``; computed in float64 if input or theta is float64,
        else in float32, on every backend (``stnkit.ops``, "Mixed precision"). The gradients
        have the dtypes of input and theta.
    """
    fn = "warp"
    check_tensor(input, name="input", fn=fn)
    check_choice(transform, TRANSFORMS, name="transform", fn=fn)
    check_choice(mode, MODES, name="mode", fn=fn)
    check_choice(padding_mode, PADDING_MODES, name="padding_mode", fn=fn)
    check_choice(backend, BACKENDS, name="backend", fn=fn)
    if not isinstance(align_corners, bool):
        fail(fn, "align_corners", "a bool", repr(align_corners), error=TypeError)
    if deterministic is not None and not isinstance(deterministic, bool):
        fail(fn, "deterministic", "None or a bool", repr(deterministic), error=TypeError)

    if transform == "affine":
        if input.dim() not in (4, 5):
            fail(fn, "input", "of shape (B, C, H, W) or (B, C, D, H, W)",
                 format_shape(input.shape))
    elif input.dim() != 4:
        fail(fn, "input", f"of shape (B, C, H, W) for transform={transform!r}",
             format_shape(input.shape))
    check_floating(input, name="input", fn=fn)
    if any(n == 0 for n in input.shape[2:]):  # every backend: one error, before dispatch
        fail(fn, "input", "to have non-empty spatial dimensions", format_shape(input.shape))
    if mode == "bicubic" and input.dim() == 5:
        fail(fn, "mode", "'bilinear' or 'nearest' for 5-D input", repr(mode))

    spec = {"affine": ("B", 2, 3) if input.dim() == 4 else ("B", 3, 4),
            "projective": ("B", 3, 3), "tps": ("B", "K", 2)}[transform]
    if transform == "tps":
        check_tps_points(theta, dst_points, fn=fn, name="theta")
    else:
        check_shape(theta, spec, name="theta", fn=fn)
    check_floating(theta, name="theta", fn=fn)
    check_same_device(input, theta, names=("input", "theta"), fn=fn)
    check_same_batch(input, theta, names=("input", "theta"), fn=fn)
    if dst_points is not None and transform != "tps":
        fail(fn, "dst_points", f"None for transform={transform!r}", "a tensor")
    size = check_grid_size(tuple(input.shape[2:]) if size is None else size, input.dim() - 2,
                           fn=fn)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()

    if backend != "torch":
        kernel_theta = (_kernel_theta(input, theta, transform) if dst_points is None
                        else theta)
        if backend == "auto":
            _, module = (_auto_kernel(input, kernel_theta, transform, mode, padding_mode)
                         if dst_points is None else ("torch", None))
            if module is not None:
                return module.warp(input, kernel_theta, transform=transform, size=size,
                                   mode=mode, padding_mode=padding_mode,
                                   align_corners=align_corners, deterministic=deterministic)
        else:
            module, why = _load_kernel(backend)
            if module is not None:
                why = ("dst_points is not supported" if dst_points is not None else
                       module.supports(input, kernel_theta, transform=transform, mode=mode,
                                       padding_mode=padding_mode))
            if why is not None:
                fail(fn, "backend", f"{backend!r} to support this call ({why})", repr(backend))
            return module.warp(input, kernel_theta, transform=transform, size=size, mode=mode,
                               padding_mode=padding_mode, align_corners=align_corners,
                               deterministic=deterministic)

    theta = theta.to(compute_dtype(input, theta))  # the grid in the compute dtype, not theta's
    if transform == "affine":
        grid = affine_grid(theta, size, align_corners=align_corners)
    elif transform == "projective":
        grid = projective_grid(theta, size, align_corners=align_corners)
    else:
        grid = tps_grid(theta, size, dst_points=dst_points, align_corners=align_corners)
    return sample(input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
