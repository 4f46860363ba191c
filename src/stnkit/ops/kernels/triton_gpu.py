"""Fused GPU warp kernels (Triton): the sampling grid is never materialised.

Each output pixel's source coordinate is computed on the fly from theta and sampled at once
(affine, projective and thin-plate spline 2-D, affine 3-D; bilinear and nearest; zeros /
border / reflection padding; both ``align_corners``; float16, bfloat16, float32 and float64
images and theta in any mix). Same results as the ``"torch"`` backend
(``_library.torch_path``: the grid generator + ``stnkit.ops.sample``: ``F.grid_sample``
semantics, NaN/Inf or w <= 0 points outside, pixel coordinates within 2 eps size of an
integer snapped onto it), up to float rounding. A TPS arrives as its spline weights W
(B, K + 3, 2) over the default lattice (``stnkit.ops.grids.tps_weights``): the kernels
evaluate the spline per pixel, K control points unrolled (K is a compile-time constant: one
compilation per K, which a model fixes). Bicubic runs on the torch backend (``supports``
says so).

Precision (the policy of ``stnkit.ops._precision``): the kernels load pixels and upstream
gradients in their own dtype (16-bit included) and compute in float64 when the image or theta
is float64, else float32; the output is stored in the image's dtype, grad_input accumulated
in a compute-dtype buffer and cast to the image's dtype, grad_theta cast to theta's.

Operators (``_library``, ``triton_op``: torch.compile sees the kernels through
``wrap_triton``): ``stnkit::warp_triton`` runs ``_forward``, ``stnkit::warp_triton_backward``
``_backward`` (second derivatives: through the torch path, see ``_library``).

Backward:

- grad_theta directly: each program of ``BLOCK`` output pixels stores its sums of dL/dcf,
  the derivative with respect to the kernel coefficients (dL/dx * (j, i, 1), dL/dy * (j, i,
  1), and the w row for projective; (j, i, k, 1) and z in 3-D; dL/d(x, y) * [U_1(p), ...,
  U_K(p), 1, px, py] for TPS) into a (B, programs, NCF) float64 buffer, which torch sums in a
  fixed order; ``_theta_grad`` chains the result to theta: deterministic in both modes, and
  no (B, H, W, 2) grid gradient exists.
- grad_input, fast mode: atomic adds into (B, C, H, W) (order varies from run to run).
- grad_input, ``deterministic=True`` (or ``torch.use_deterministic_algorithms``): a race-free
  "pull" for any map: one kernel writes, for each (output pixel, tap), the input pixel it
  touches; a stable ``torch.sort`` groups them by input pixel; a second kernel lets each
  input pixel sum its list in ascending (output pixel, tap) order, recomputing the tap
  weights. Same bits on every run; costs a sort of 4 (3-D: 8) keys per output pixel
  (int32 keys and int64 positions: about 16-20 bytes a tap of extra memory at the peak,
  freed at the end of the backward).

Under ``TRITON_INTERPRET=1`` (Triton's CPU interpreter) CPU tensors are accepted, so the
kernels can be tested without a GPU (slowly: tiny shapes only).

Limits: fewer than 2**31 pixels per channel on either side (int32 spatial offsets) and at
most 65535 images. Reflection padding of finite coordinates more than about 2**24 image sizes
away (float32) relies on the GPU's float remainder, which may not be exact there; such points
still land inside the image (they are clipped after the fold).
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake
from torch.library import wrap_triton

from stnkit._checks import fail
from stnkit.ops._precision import compute_dtype
from stnkit.ops.kernels._geometry import axes_coefficients
from stnkit.ops.kernels._library import register

try:
    import triton
except ImportError as e:  # optional dependency: the "gpu" extra
    triton = None
    _IMPORT_ERROR = str(e)
else:
    _IMPORT_ERROR = ""

__all__ = ["supports", "warp"]

_FAMILIES = {"affine": 0, "projective": 1, "tps": 2}  # _triton_2d.AFFINE, PROJECTIVE, TPS
_MODES = {"bilinear": 0, "nearest": 1}
_PADS = {"zeros": 0, "border": 1, "reflection": 2}
_BLOCK = 256  # output pixels a program
_GATHER_BLOCK = 128  # input pixels a program (deterministic backward)
_MAX_PLANE = 2**31  # pixels per channel: int32 spatial indices
_MAX_GRID_Y = 65535  # the batch runs along CUDA's grid y
# Compile options of every launch. FMA contraction is asked for explicitly (Triton 3.9 warns when
# it is left to its default, and the default changes in 3.10): it is what PyTorch's CUDA
# kernels do too, and keeps identity exact (weights 1 and 0).
_OPTIONS = {"enable_fp_fusion": True, "num_warps": 4}


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _shapes_only(x: Tensor) -> bool:
    """Whether ``x`` is a fake tensor (shape propagation) that the interpreter must not launch
    on: it runs kernels at once, in numpy, where ``wrap_triton`` would record them."""
    return _interpreted() and is_fake(x)


def supports(input: Tensor, theta: Tensor, *, transform: str, mode: str,
             padding_mode: str) -> str | None:
    """None if the triton kernels handle this call, else a one-line reason."""
    if triton is None:
        return f"triton cannot be imported: {_IMPORT_ERROR}; pip install 'stnkit[gpu]'"
    if not input.is_cuda and not (_interpreted() and input.device.type == "cpu"):
        return f"the triton kernels run on CUDA tensors only (input is on {input.device})"
    if not (input.is_floating_point() and theta.is_floating_point()):
        return f"the triton kernels take floating images and theta (got {input.dtype}, " \
               f"{theta.dtype})"
    if transform not in _FAMILIES:
        return (f"transform {transform!r} runs on the torch backend (triton: affine, "
                "projective, tps)")
    if input.dim() == 5 and transform != "affine":
        return "5-D input supports the affine transform only"
    if mode not in _MODES:
        return f"mode {mode!r} runs on the torch backend (triton: bilinear, nearest)"
    if padding_mode not in _PADS:
        return f"unknown padding_mode {padding_mode!r}"
    if math.prod(input.shape[2:]) >= _MAX_PLANE:
        return "the input has 2**31 or more pixels per channel (32-bit offsets)"
    if input.shape[0] > _MAX_GRID_Y:
        return f"batch larger than {_MAX_GRID_Y} (CUDA grid limit)"
    return None


def warp(input: Tensor, theta: Tensor, *, transform: str, size: tuple[int, ...], mode: str,
         padding_mode: str, align_corners: bool, deterministic: bool) -> Tensor:
    """Fused grid + sample (arguments already validated by ``stnkit.ops.warp``).

    Args:
        input: (B, C, H, W) or (B, C, D, H, W), floating, CUDA (or CPU under
            ``TRITON_INTERPRET=1``).
        theta: (B, 2, 3) affine, (B, 3, 3) projective, (B, K + 3, 2) TPS spline weights or
            (B, 3, 4) 3-D affine, floating, device of ``input``.
        size: (H_out, W_out) or (D_out, H_out, W_out).
        deterministic: grad_input by the sorted pull instead of atomics (module docstring).
    Returns:
        (B, C, *size).
    """
    if math.prod(size) >= _MAX_PLANE:
        fail("warp", "size", "fewer than 2**31 output pixels per channel with backend "
             "'triton'", repr(tuple(size)))
    return warp_op(input, theta, list(size), transform, mode, padding_mode, align_corners,
                   deterministic)


# ---------------------------------------------------------------------------------------------
# Coefficients: theta -> output pixel index (j, i) to input pixel coordinates, and back
# ---------------------------------------------------------------------------------------------


def _output_matrix(axes, ref: Tensor) -> Tensor:
    """P (nd + 1, nd + 1) float64: normalised output point (x, y[, z], 1) = P @ (j, i[, k], 1)."""
    nd = len(axes)
    P = torch.zeros(nd + 1, nd + 1, dtype=torch.float64, device=ref.device)
    for d, ax in enumerate(axes):
        P[d, d], P[d, nd] = ax[0], ax[1]
    P[nd, nd] = 1.0
    return P


def _scales(axes, ref: Tensor, which: int) -> Tensor:
    """(nd,) float64: entry ``which`` of every axis (2: s, 3: o of ``axis_coefficients``)."""
    return torch.tensor([ax[which] for ax in axes], dtype=torch.float64, device=ref.device)


def _coefficients(theta: Tensor, transform: str, axes) -> Tensor:
    """(B, NCF) float64, the kernels' ``cf`` (layouts in ``_triton_2d`` / ``_triton_3d``):
    theta with the unnormalisations folded in. Affine: rows mapping (j, i[, k], 1) to input
    pixel coordinates (NCF 6, 3-D 12); projective: the two numerator rows and w (NCF 9); TPS:
    the spline weights in input pixel units, s W with o added to the constant row (NCF
    2 K + 6; the normalised output point stays in the kernel, ``_tps_frame``)."""
    B, nd = theta.shape[0], len(axes)
    s, o = _scales(axes, theta, 2), _scales(axes, theta, 3)
    if transform == "tps":  # pixel = s (sum_k W_k U_k + W_K + W_K+1 px + W_K+2 py) + o
        k = theta.shape[1] - 3
        cf = theta.detach().double() * s
        cf[:, k] += o
        return cf.reshape(B, 2 * k + 6)
    m = theta.detach().double() @ _output_matrix(axes, theta)  # rows in output indices
    if transform == "projective":  # pixel = (s u + o w) / w
        cf = torch.empty(B, 3, 3, dtype=torch.float64, device=theta.device)
        cf[:, :2] = s[None, :, None] * m[:, :2] + o[None, :, None] * m[:, 2:3]
        cf[:, 2] = m[:, 2]
    else:
        cf = s[None, :, None] * m
        cf[:, :, nd] += o
    return cf.reshape(B, -1)


def _tps_frame(k: int, axes, dtype: torch.dtype, device) -> Tensor:
    """``ctl`` of the TPS kernels, (4 + 2 K,): the output axes (ax, bx, ay, by: normalised
    output point = (ax j + bx, ay i + by)) and the default lattice ``tps_lattice(K)``."""
    from stnkit.ops.grids import tps_lattice  # ops/ above kernels/ (as _library.torch_path)

    lattice = tps_lattice(k, dtype=torch.float64)
    head = torch.tensor([axes[0][0], axes[0][1], axes[1][0], axes[1][1]], dtype=torch.float64)
    return torch.cat([head, lattice.reshape(-1)]).to(dtype=dtype, device=device)


def _theta_grad(dcf: Tensor, transform: str, axes, theta_shape) -> Tensor:
    """d L / d theta (float64) from d L / d cf (B, NCF): the chain of ``_coefficients``."""
    nd = len(axes)
    s = _scales(axes, dcf, 2)
    if transform == "tps":  # o is a constant: only the scale remains
        return dcf.reshape(theta_shape) * s
    P = _output_matrix(axes, dcf)
    dcf = dcf.reshape(dcf.shape[0], -1, nd + 1)
    if transform == "projective":
        o = _scales(axes, dcf, 3)
        dm = torch.empty_like(dcf)
        dm[:, :2] = s[None, :, None] * dcf[:, :2]
        dm[:, 2] = dcf[:, 2] + (o[None, :, None] * dcf[:, :2]).sum(dim=1)
    else:
        dm = s[None, :, None] * dcf
    return dm @ P.T


def _snap_tol(size: int, dtype: torch.dtype) -> float:
    """The snapping distance of ``stnkit.ops.sample._snap``: 2 eps size."""
    return 2 * torch.finfo(dtype).eps * max(size, 1)


# ---------------------------------------------------------------------------------------------
# The kernels behind the operators stnkit::warp_triton / warp_triton_backward (``_library``)
# ---------------------------------------------------------------------------------------------


def _device_guard(t: Tensor):
    """Launch on ``t``'s GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _forward(input: Tensor, theta: Tensor, size, transform: str, mode: str, padding_mode: str,
             align: bool, deterministic: bool) -> Tensor:
    """output = sample(input, grid(theta)) computed without the grid."""
    size, mode, pad = tuple(size), _MODES[mode], _PADS[padding_mode]
    B, C = input.shape[:2]
    axes = axes_coefficients(size, tuple(input.shape[2:]), align)
    work = compute_dtype(input, theta)
    x = input.contiguous()  # loaded in its own dtype
    out = torch.empty((B, C, *size), dtype=input.dtype, device=input.device)
    if out.numel() == 0 or _shapes_only(x):
        return out
    k, geometry, dims, tols, flags = _launch_args(x, theta, size, transform, axes, work)
    with _device_guard(input):
        wrap_triton(k.forward_kernel)[(triton.cdiv(math.prod(size), _BLOCK), B)](
            x, *geometry, out, C, *dims, *tols, MODE=mode, PAD=pad, ALIGN=align,
            BLOCK=_BLOCK, **flags, **_OPTIONS)
    return out


def _backward(grad_out: Tensor, input: Tensor, theta: Tensor, size, transform: str, mode: str,
              padding_mode: str, align: bool, deterministic: bool, need_input: bool,
              need_theta_out: bool):
    """(grad_input or None, grad_theta or None) as described in the module docstring (formulas
    in ``_triton_2d`` / ``_triton_3d.backward_kernel``)."""
    size, mode, pad = tuple(size), _MODES[mode], _PADS[padding_mode]
    x = input.contiguous()  # pixels and grad_out are loaded in their own dtype
    axes = axes_coefficients(size, tuple(x.shape[2:]), align)
    dt = compute_dtype(input, theta)
    nd = x.dim() - 2
    need_theta = need_theta_out and mode == 0  # nearest: zero grid gradient
    B, C = x.shape[:2]
    N, P = math.prod(size), math.prod(x.shape[2:])
    dev = x.device
    # grad_input is accumulated in the compute dtype and cast to the input's at the end
    gin = torch.zeros(x.shape, dtype=dt, device=dev) if need_input else None
    gtheta = torch.zeros(theta.shape, dtype=theta.dtype, device=dev) if need_theta_out else None
    if x.numel() == 0 or N == 0 or not (need_input or need_theta) or _shapes_only(x):
        return (None if gin is None else gin.to(input.dtype)), gtheta
    g = grad_out.contiguous()
    k, geometry, dims, tols, flags = _launch_args(x, theta, size, transform, axes, dt)
    flags.update(MODE=mode, PAD=pad, ALIGN=align)
    scatter = need_input and not deterministic
    nblk = triton.cdiv(N, _BLOCK)
    ncf = geometry[0].shape[1]  # part holds sums of dL/dcf in cf's layout
    part = torch.empty((B, nblk if need_theta else 0, ncf), dtype=torch.float64, device=dev)
    row = {"NCF": ncf} if nd == 2 else {}  # 3-D: 12, fixed in the kernel
    dummy = torch.empty(1, dtype=dt, device=dev)
    with _device_guard(x):
        if scatter or need_theta:
            wrap_triton(k.backward_kernel)[(nblk, B)](
                x, *geometry, g, gin if scatter else dummy, part, C, *dims, *tols, nblk,
                SCATTER=scatter, THETA=need_theta, BLOCK=_BLOCK, **row, **flags, **_OPTIONS)
        if need_input and deterministic:
            nt = 2**nd if mode == 0 else 1
            total = B * P
            # int32 keys where they fit: half the sort's traffic
            kt = torch.int32 if total < 2**31 - 1 else torch.int64
            keys = torch.empty(B * N * nt, dtype=kt, device=dev)
            wrap_triton(k.keys_kernel)[(nblk, B)](*geometry, keys, *dims, *tols, total, NT=nt,
                                                  BLOCK=_BLOCK, **flags, **_OPTIONS)
            sorted_keys, perm = torch.sort(keys, stable=True)
            del keys
            bounds = torch.searchsorted(
                sorted_keys, torch.arange(total + 1, dtype=kt, device=dev))
            del sorted_keys
            wrap_triton(k.gather_kernel)[(triton.cdiv(total, _GATHER_BLOCK),)](
                *geometry, g, gin, perm, bounds, C, *dims, *tols, total, NT=nt,
                BLOCK=_GATHER_BLOCK, **flags, **_OPTIONS)
    if need_theta:
        dcf = part.sum(dim=1)  # (B, NCF), a fixed order
        gtheta = _theta_grad(dcf, transform, axes, theta.shape).to(theta.dtype)
    return (None if gin is None else gin.to(input.dtype)), gtheta


if triton is not None:
    warp_op, warp_backward_op = register("warp_triton", _forward, _backward, triton=True)


def _launch_args(x: Tensor, theta: Tensor, size, transform: str, axes, work: torch.dtype):
    """(kernel module, geometry tensors (``cf`` and, in 2-D, ``ctl``) in the compute dtype
    ``work``, spatial sizes (input then output), snapping distances (x, y[, z]), the
    geometry's compile-time flags)."""
    nd = x.dim() - 2
    cf = _coefficients(theta, transform, axes).to(work).contiguous()
    if nd == 2:
        from stnkit.ops.kernels import _triton_2d as k
        n_ctl = theta.shape[1] - 3 if transform == "tps" else 0
        # ctl: the TPS frame; the other families never read it (cf stands in)
        ctl = _tps_frame(n_ctl, axes, work, x.device) if n_ctl else cf
        geometry, flags = (cf, ctl), {"FAMILY": _FAMILIES[transform], "K": n_ctl}
    else:
        from stnkit.ops.kernels import _triton_3d as k
        geometry, flags = (cf,), {}
    in_size = tuple(x.shape[2:])
    tols = tuple(_snap_tol(in_size[nd - 1 - d], work) for d in range(nd))
    return k, geometry, (*in_size, *size), tols, flags
