"""Fused CPU warp kernels in C++ (``csrc/``): the sampling grid is never materialised.

Images (B, C, H, W): affine (B, 2, 3), projective (B, 3, 3) and thin-plate-spline transforms
(theta: the spline weights (B, K + 3, 2) over the default lattice,
``stnkit.ops.grids.tps_weights``); volumes (B, C, D, H, W): affine (B, 3, 4); bilinear
(trilinear) and nearest sampling; zeros / border / reflection padding; both ``align_corners``;
float16, bfloat16, float32 and float64 images and theta in any mix. Same results as the
``"torch"`` backend (``_library.torch_path``: grid generator + ``stnkit.ops.sample``, i.e.
``F.grid_sample`` semantics with stnkit's rules for NaN/Inf and w <= 0 points, the near-knot
snapping and the sub-gradients of ``stnkit.ops.sample``), up to float rounding.

The C++ reads like the mathematics: ``geometry.h`` gives each transform family's source
point of an output pixel (and accumulates dL/dtheta from dL/d source point: the affine
grid's sums, the homography's quotient rule, the spline's basis sums), ``sampling.h`` the
sampler (padding per axis, bilinear / trilinear / nearest taps, gather, scatter, derivative),
and ``cpu_warp.cpp`` the loops over output tiles and images and the work plans, the same for
images and volumes (the rows of a volume are its slices' rows, one after the other).

Precision (``stnkit.ops._precision``): computed in float64 when the image or theta is
float64, else float32. 16-bit images are read as they are stored (no widened copy) and the
output is stored in their dtype, rounded to nearest even as ``Tensor.to`` rounds. The
geometry (the output / input axis coefficients, theta) is handed over in float64 whatever
theta's dtype and cast to the compute dtype in C++. grad_input is accumulated in the compute
dtype and rounded to the input's dtype at the end; grad_theta is accumulated in float64 and
cast to theta's dtype. A TPS basis U(|p - c_k|^2) is computed in float64 (as
``grids.tps_basis``) once per output tile and shared by the images of a work item.

Threads: ``torch.get_num_threads()`` OpenMP threads. The library is built with ``-fopenmp``
and needs ``libgomp.so.1``; loaded after torch, the dynamic loader resolves that to the
libgomp torch already loaded (same soname), so the kernels' parallel regions run on torch's
own thread team: a warp right after a torch operator finds the team already spinning,
instead of a second pool competing with it.

Backward plan (``cpu_warp.cpp``): output tiles of about 1024 pixels (whole rows, or segments
of a long row); tile rows are gathered into at most 64 row groups per image. dL/dtheta is
summed per (image, row group) in float64, in a fixed order, and the groups are added in
order at the end: its bits depend on the sizes only, never on the thread count. grad_input
is scattered without atomics by tasks that never write the same element at once: whole
images; or, with fewer images than threads (and ``deterministic=False``), chunks of row
groups of an image, the first writing grad_input and the others private copies that are
added in a fixed order afterwards. So the backward gives the same bits on every run at a
given thread count, and with ``deterministic=True`` (whole images only) at every thread
count.

Operators (``_library``): ``stnkit::warp_cpu`` runs ``_forward``, ``stnkit::warp_cpu_backward``
runs ``_backward`` (second derivatives: through the torch path).

Speed: the loops over a tile's points are written so that GCC vectorises them (no branches,
integer masks for the selects, ``__restrict`` arrays; ``-fopt-info-vec`` reports them), and
the AVX2 build runs them 8 floats wide. A tile keeps per point only its first tap, the
fractions and the padding slopes (24 bytes, in L1); a tile whose taps are all inside the
image runs the same loops with the masks compiled out. The backward is one scalar pass per
channel (a scatter cannot vectorise): the reads of U for dL/d(source point) overlap the
read-modify-writes of grad_input, interior points add two neighbouring taps with one 2-wide
operation, and the even points go before the odd ones so that neighbours' writes to one
pixel do not wait on each other. Measured in ``docs/speed.md``.

Built by ``pip install`` (``setup.py``, optional): without a C++ compiler the library is
missing and ``supports`` says so; this module still imports.
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path

import torch
from torch import Tensor

from stnkit.ops._precision import compute_dtype
from stnkit.ops.kernels._geometry import axes_coefficients
from stnkit.ops.kernels._library import register

__all__ = ["LIBRARIES", "VARIANT", "supports", "warp"]

LIBRARIES = {
    "avx2": Path(__file__).with_name("_cpu_warp_avx2.so.1"),
    "baseline": Path(__file__).with_name("_cpu_warp.so.1"),
}
"""The builds of the library by ``setup.py`` (named so that they are no importable modules):
the same sources compiled for x86-64 with AVX2 (``-mavx2``: 8-wide vector loops and
gathers), and for the baseline of the platform. ``-ffp-contract=off`` in both: no fused
multiply-adds, so both give the same bits (tested)."""


def _variant() -> str:
    """The build this CPU runs: ``"avx2"`` where torch's own kernels run AVX2 or AVX-512
    (``torch.backends.cpu.get_cpu_capability()``, which ``ATEN_CPU_CAPABILITY=default`` lowers)
    and that build exists, else ``"baseline"``."""
    capability = torch.backends.cpu.get_cpu_capability().upper()
    wide = capability.startswith("AVX2") or capability.startswith("AVX512")
    return "avx2" if wide and LIBRARIES["avx2"].exists() else "baseline"


_TRANSFORMS = {"affine": 0, "projective": 1, "tps": 2}
_AFFINE_3D = 3  # "affine" on a volume
_MODES = {"bilinear": 0, "nearest": 1}
_PADS = {"zeros": 0, "border": 1, "reflection": 2}
_DTYPES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_ERRORS = {1: "unsupported dtypes", 2: "a bad option", 3: "out of memory"}


class _Call(ctypes.Structure):
    """``WarpCall`` of ``csrc/cpu_warp.cpp``, field by field."""

    _fields_ = [
        ("batch", ctypes.c_int64), ("channels", ctypes.c_int64),
        ("in_depth", ctypes.c_int64), ("in_height", ctypes.c_int64),
        ("in_width", ctypes.c_int64), ("out_depth", ctypes.c_int64),
        ("out_height", ctypes.c_int64), ("out_width", ctypes.c_int64),
        ("control_points", ctypes.c_int64),
        ("transform", ctypes.c_int32), ("mode", ctypes.c_int32),
        ("padding", ctypes.c_int32), ("align_corners", ctypes.c_int32),
        ("storage", ctypes.c_int32), ("compute", ctypes.c_int32),
        ("threads", ctypes.c_int32), ("deterministic", ctypes.c_int32),
        ("need_input", ctypes.c_int32), ("need_theta", ctypes.c_int32),
        ("out_x_a", ctypes.c_double), ("out_x_b", ctypes.c_double),
        ("out_y_a", ctypes.c_double), ("out_y_b", ctypes.c_double),
        ("out_z_a", ctypes.c_double), ("out_z_b", ctypes.c_double),
        ("in_x_scale", ctypes.c_double), ("in_x_shift", ctypes.c_double),
        ("in_y_scale", ctypes.c_double), ("in_y_shift", ctypes.c_double),
        ("in_z_scale", ctypes.c_double), ("in_z_shift", ctypes.c_double),
        ("theta", ctypes.c_void_p), ("lattice", ctypes.c_void_p),
        ("input", ctypes.c_void_p), ("output", ctypes.c_void_p),
        ("grad_output", ctypes.c_void_p), ("grad_input", ctypes.c_void_p),
        ("grad_theta", ctypes.c_void_p),
    ]


def _load(path: Path) -> tuple[ctypes.CDLL | None, str | None]:
    """(library, None), or (None, why it cannot be used)."""
    if not path.exists():
        return None, ("the C++ kernels were not built (no C++ compiler at install time? "
                      "reinstall stnkit with one: pip install -e .)")
    try:
        lib = ctypes.CDLL(str(path))  # after torch: its libgomp serves ours
    except OSError as e:
        return None, f"the C++ kernels cannot be loaded ({e})"
    lib.stnkit_warp_call_size.restype = ctypes.c_int64
    for fn in (lib.stnkit_warp_forward, lib.stnkit_warp_backward):
        fn.argtypes = [ctypes.POINTER(_Call)]
        fn.restype = ctypes.c_int
    if lib.stnkit_warp_call_size() != ctypes.sizeof(_Call):
        return None, "the C++ kernels were built from other sources (rebuild: pip install -e .)"
    return lib, None


VARIANT = _variant()
"""Which of ``LIBRARIES`` this process runs (``benchmarks/warp.py`` prints it)."""
_LIB, _WHY = _load(LIBRARIES[VARIANT])

_MAX_PLANE = 2**31 - 1  # pixels per channel, as the torch path (grids.MAX_PIXELS)


def supports(input: Tensor, theta: Tensor, *, transform: str, mode: str,
             padding_mode: str) -> str | None:
    """None if the C++ kernels handle this call, else a one-line reason."""
    if _LIB is None:
        return _WHY
    if input.device.type != "cpu":
        return f"the C++ kernels run on the CPU only (input is on {input.device})"
    if input.dtype not in _DTYPES or theta.dtype not in _DTYPES:
        return f"the C++ kernels take float16 / bfloat16 / float32 / float64 images and " \
               f"theta (got {input.dtype}, {theta.dtype})"
    if transform not in _TRANSFORMS:
        return f"unknown transform {transform!r}"
    if input.dim() != 4 and not (input.dim() == 5 and transform == "affine"):
        return "the C++ kernels take images (B, C, H, W), and volumes (B, C, D, H, W) for " \
               "affine transforms"
    if mode not in _MODES:
        return f"mode {mode!r} runs on the torch backend (cpp: bilinear, nearest)"
    if padding_mode not in _PADS:
        return f"unknown padding_mode {padding_mode!r}"
    if math.prod(input.shape[2:]) > _MAX_PLANE or max(input.shape[2:]) >= 2**30:
        return "the input has more than 2**31 - 1 pixels per channel or 2**30 along an axis " \
               "(32-bit offsets)"
    return None


def warp(input: Tensor, theta: Tensor, *, transform: str, size: tuple[int, ...], mode: str,
         padding_mode: str, align_corners: bool, deterministic: bool) -> Tensor:
    """Fused grid + sample (arguments already validated by ``stnkit.ops.warp``).

    Args:
        input: (B, C, H, W), floating, CPU.
        theta: (B, 2, 3) affine, (B, 3, 3) projective, (B, K + 3, 2) TPS spline weights.
        size: output spatial size (H_out, W_out).
        deterministic: backward bits independent of the thread count too (module doc).
    Returns:
        (B, C, H_out, W_out), dtype of ``input``.
    """
    return warp_op(input, theta, list(size), transform, mode, padding_mode, align_corners,
                   deterministic)


# ---------------------------------------------------------------------------------------------
# The kernels behind the operators stnkit::warp_cpu / stnkit::warp_cpu_backward (``_library``)
# ---------------------------------------------------------------------------------------------


def _ptr(x: Tensor | None) -> int | None:
    return None if x is None else x.data_ptr()


def _call(input: Tensor, theta: Tensor, size, transform: str, mode: str, padding_mode: str,
          align: bool, deterministic: bool) -> tuple[_Call, list[Tensor]]:
    """The call record of everything forward and backward share, and the tensors it points
    into (kept alive by the caller)."""
    B, C, *spatial = input.shape
    volume = len(spatial) == 3
    D, H, W = spatial if volume else (1, *spatial)
    Do, Ho, Wo = size if volume else (1, *size)
    axes = axes_coefficients(tuple(size), tuple(spatial), align)  # x, y[, z]
    (xa, xb, xs, _), (ya, yb, ys, _) = axes[:2]
    za, zb, zs, _ = axes[2] if volume else (0.0, 0.0, 0.0, 0.0)
    shift = 0.0 if align else -0.5  # pixel = (X + 1) * scale + shift, as stnkit.ops.sample
    theta64 = theta.detach().to(torch.float64).contiguous()
    keep = [theta64]
    k = theta.shape[1] - 3 if transform == "tps" else 0
    lattice = None
    if transform == "tps":
        from stnkit.ops.grids import tps_lattice  # ops/ above kernels/

        lattice = tps_lattice(k, dtype=torch.float64)
        keep.append(lattice)
    call = _Call(
        batch=B, channels=C, in_depth=D, in_height=H, in_width=W, out_depth=Do,
        out_height=Ho, out_width=Wo, control_points=k,
        transform=_AFFINE_3D if volume else _TRANSFORMS[transform], mode=_MODES[mode],
        padding=_PADS[padding_mode], align_corners=int(align),
        storage=_DTYPES[input.dtype], compute=_DTYPES[compute_dtype(input, theta)],
        threads=max(1, torch.get_num_threads()), deterministic=int(deterministic),
        out_x_a=xa, out_x_b=xb, out_y_a=ya, out_y_b=yb, out_z_a=za, out_z_b=zb,
        in_x_scale=xs, in_x_shift=shift, in_y_scale=ys, in_y_shift=shift,
        in_z_scale=zs, in_z_shift=shift,
        theta=_ptr(theta64), lattice=_ptr(lattice))
    return call, keep


def _run(fn, call: _Call) -> None:
    code = fn(ctypes.byref(call))
    if code != 0:
        raise RuntimeError(f"stnkit C++ warp kernel failed: {_ERRORS.get(code, code)}")


def _forward(input: Tensor, theta: Tensor, size, transform: str, mode: str, padding_mode: str,
             align: bool, deterministic: bool) -> Tensor:
    """output = sample(input, grid(theta)) computed without the grid."""
    out = torch.empty((*input.shape[:2], *size), dtype=input.dtype)
    if out.numel() == 0:
        return out
    input = input.detach().contiguous()
    call, keep = _call(input, theta, size, transform, mode, padding_mode, align, deterministic)
    call.input, call.output = _ptr(input), _ptr(out)
    _run(_LIB.stnkit_warp_forward, call)
    return out


def _backward(grad_out: Tensor, input: Tensor, theta: Tensor, size, transform: str, mode: str,
              padding_mode: str, align: bool, deterministic: bool, need_input: bool,
              need_theta_out: bool):
    """(grad_input or None, grad_theta or None): the formulas are in ``csrc/sampling.h``
    (sampler) and ``csrc/geometry.h`` (transforms)."""
    # nearest too: 0 to the source points, then through the transform (NaN where it is)
    work = compute_dtype(input, theta)
    gin = torch.zeros(input.shape, dtype=work) if need_input else None
    gtheta = torch.zeros(theta.shape[0], math.prod(theta.shape[1:]), dtype=torch.float64)
    if grad_out.numel() and (need_input or need_theta_out):
        input = input.detach().contiguous()
        grad_out = grad_out.detach().to(input.dtype).contiguous()
        call, keep = _call(input, theta, size, transform, mode, padding_mode, align,
                           deterministic)
        call.need_input, call.need_theta = int(need_input), int(need_theta_out)
        call.input, call.grad_output = _ptr(input), _ptr(grad_out)
        call.grad_input, call.grad_theta = _ptr(gin), _ptr(gtheta)
        _run(_LIB.stnkit_warp_backward, call)
    return ((None if gin is None else gin.to(input.dtype)),
            (gtheta.view(theta.shape).to(theta.dtype) if need_theta_out else None))


warp_op, warp_backward_op = register("warp_cpu", _forward, _backward)
