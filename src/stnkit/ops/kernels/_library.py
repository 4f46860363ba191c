"""The fused warp kernels as PyTorch operators (``torch.library``), namespace ``stnkit``.

Schemas (fixed: ``torch.export`` graphs and the ONNX translation refer to them by name)::

    stnkit::warp_cpu(Tensor input, Tensor theta, SymInt[] size, str transform, str mode,
                     str padding_mode, bool align_corners, bool deterministic) -> Tensor
    stnkit::warp_cpu_backward(Tensor grad_output, Tensor input, Tensor theta, SymInt[] size,
                              str transform, str mode, str padding_mode, bool align_corners,
                              bool deterministic, bool[] output_mask) -> (Tensor, Tensor)
    stnkit::warp_triton(...the arguments of stnkit::warp_cpu...) -> Tensor
    stnkit::warp_triton_backward(...the arguments of stnkit::warp_cpu_backward...)
        -> (Tensor, Tensor)

``stnkit::warp_cpu`` / ``warp_cpu_backward`` run the C++ kernels (CPU, ``custom_op``: opaque
to the compiler); ``warp_triton`` / ``warp_triton_backward`` the Triton kernels (CUDA,
``triton_op``: the compiler sees the kernels). Arguments: input (B, C, H, W) or
(B, C, D, H, W); theta (B, 2, 3) / (B, 3, 4) for ``transform="affine"`` (2-D / 3-D), (B, 3, 3)
for ``"projective"``, (B, K + 3, 2) for ``"tps"`` (2-D): the spline weights
``stnkit.ops.grids.tps_weights(src_points)`` over the default lattice of K control points
(K a perfect square >= 4; ``stnkit.ops.warp`` computes them, so the kernels never see a
size-dependent matrix), any floating dtypes each (the output and grad_input have the input's,
grad_theta theta's; computed in float64 if either is float64, else float32: the policy of
``stnkit.ops._precision``, which every kernel follows); size the output's spatial size;
mode ``"bilinear"`` / ``"nearest"``; padding_mode ``"zeros"`` / ``"border"`` /
``"reflection"``. The backward op returns (grad_input, grad_theta); an output whose
``output_mask`` entry is False is not computed and comes back as an empty (0,) tensor.

Autograd: ``warp``'s formula calls ``warp_backward`` (the kernels' hand-derived backward);
``warp_backward``'s own formula (double backward) recomputes the first derivatives on the
torch path (``affine_grid`` / ``projective_grid`` + ``stnkit.ops.sample``) with a graph and
returns their vector-Jacobian product, so second derivatives are those of the torch path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from stnkit._checks import check_choice, check_floating, fail, format_shape
from stnkit.ops._precision import compute_dtype

__all__ = ["TRANSFORMS", "MODES", "PADDING_MODES", "register"]

TRANSFORMS = ("affine", "projective", "tps")
MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")


def check_args(fn: str, input: Tensor, theta: Tensor, size: Sequence[int], transform: str,
               mode: str, padding_mode: str) -> None:
    """What a direct ``torch.ops.stnkit.*`` call must get right before the kernels trust it
    (``stnkit.ops.warp`` checks all of it and more first)."""
    check_choice(transform, TRANSFORMS, name="transform", fn=fn)
    check_choice(mode, MODES, name="mode", fn=fn)
    check_choice(padding_mode, PADDING_MODES, name="padding_mode", fn=fn)
    check_floating(input, name="input", fn=fn)
    check_floating(theta, name="theta", fn=fn)
    nd = input.dim() - 2
    if nd not in (2, 3) or (nd == 3 and transform != "affine"):
        fail(fn, "input", f"of shape (B, C, H, W){' or (B, C, D, H, W)' * (transform == 'affine')}"
             f" for transform={transform!r}", format_shape(input.shape))
    if transform == "tps":
        k = theta.shape[1] - 3 if theta.dim() == 3 else -1
        n = math.isqrt(k) if k >= 0 else 0
        if (theta.dim() != 3 or theta.shape[2] != 2 or theta.shape[0] != input.shape[0]
                or n < 2 or n * n != k):
            fail(fn, "theta", f"of shape ({input.shape[0]}, K + 3, 2) with K a perfect square "
                 ">= 4 (spline weights, see stnkit.ops.grids.tps_weights)",
                 format_shape(theta.shape))
    else:
        spec = (3, 3) if transform == "projective" else (nd, nd + 1)
        if (theta.dim() != 3 or tuple(theta.shape[1:]) != spec
                or theta.shape[0] != input.shape[0]):
            fail(fn, "theta", f"of shape {format_shape((input.shape[0], *spec))}",
                 format_shape(theta.shape))
    if len(size) != nd:
        fail(fn, "size", f"{nd} output sizes", repr(list(size)))


def torch_path(input: Tensor, theta: Tensor, size: Sequence[int], transform: str, mode: str,
               padding_mode: str, align_corners: bool) -> Tensor:
    """The reference the kernels match: grid generator + ``stnkit.ops.sample``."""
    from stnkit.ops.grids import affine_grid, projective_grid, tps_basis  # ops/ above kernels/
    from stnkit.ops.sample import sample

    theta = theta.to(compute_dtype(input, theta))  # as stnkit.ops.warp's torch path
    if transform == "tps":  # theta: spline weights (B, K + 3, 2)
        basis = tps_basis(tuple(size), theta.shape[1] - 3, align_corners=align_corners,
                          dtype=theta.dtype, device=theta.device)
        grid = torch.matmul(basis, theta).view(theta.shape[0], *size, 2)
    else:
        grid_fn = projective_grid if transform == "projective" else affine_grid
        grid = grid_fn(theta, tuple(size), align_corners=align_corners)
    return sample(input, grid, mode=mode, padding_mode=padding_mode,
                  align_corners=align_corners)


def _leaf(x: Tensor) -> Tensor:
    """``x`` itself when it is in a graph (higher derivatives flow on), else a leaf copy."""
    return x if x.requires_grad else x.detach().requires_grad_()


def register(name: str, forward: Callable, backward: Callable, *, triton: bool = False):
    """Define ``stnkit::<name>`` and ``stnkit::<name>_backward`` with fake implementations
    and autograd formulas; returns the two ops (``torch.ops.stnkit.<name>``, ...).

    ``forward(input, theta, size, transform, mode, padding_mode, align_corners,
    deterministic) -> Tensor`` and ``backward(grad_output, input, theta, size, ...,
    deterministic, need_input, need_theta) -> (Tensor | None, Tensor | None)`` run the
    kernels. With ``triton`` the ops are ``triton_op``s, whose bodies also serve as their fake
    implementations (they only call torch operators and ``wrap_triton`` kernels).
    """
    define = torch.library.triton_op if triton else torch.library.custom_op

    @define(f"stnkit::{name}", mutates_args=())
    def warp_op(input: Tensor, theta: Tensor, size: Sequence[int], transform: str, mode: str,
                padding_mode: str, align_corners: bool, deterministic: bool) -> Tensor:
        check_args(f"stnkit::{name}", input, theta, size, transform, mode, padding_mode)
        return forward(input, theta, size, transform, mode, padding_mode, align_corners,
                       deterministic)

    @define(f"stnkit::{name}_backward", mutates_args=())
    def backward_op(grad_output: Tensor, input: Tensor, theta: Tensor, size: Sequence[int],
                    transform: str, mode: str, padding_mode: str, align_corners: bool,
                    deterministic: bool, output_mask: Sequence[bool]) -> tuple[Tensor, Tensor]:
        gin, gtheta = backward(grad_output, input, theta, size, transform, mode, padding_mode,
                               align_corners, deterministic, output_mask[0], output_mask[1])
        return (input.new_empty(0) if gin is None else gin,
                theta.new_empty(0) if gtheta is None else gtheta)

    if not triton:
        @warp_op.register_fake
        def _(input, theta, size, transform, mode, padding_mode, align_corners, deterministic):
            return input.new_empty((*input.shape[:2], *size))

        @backward_op.register_fake
        def _(grad_output, input, theta, size, transform, mode, padding_mode, align_corners,
              deterministic, output_mask):
            return (input.new_empty(input.shape) if output_mask[0] else input.new_empty(0),
                    theta.new_empty(theta.shape) if output_mask[1] else theta.new_empty(0))

    def setup_context(ctx, inputs, output):
        input, theta, *options = inputs
        ctx.save_for_backward(input, theta)
        ctx.options = options  # size, transform, mode, padding_mode, align_corners, det.

    def warp_grad(ctx, grad_output):
        # d output / d (input, theta): the kernels' hand-derived backward
        input, theta = ctx.saved_tensors
        need = [bool(n) for n in ctx.needs_input_grad[:2]]
        gin, gtheta = backward_op(grad_output, input, theta, *ctx.options, need)
        return (gin if need[0] else None, gtheta if need[1] else None,
                None, None, None, None, None, None)

    warp_op.register_autograd(warp_grad, setup_context=setup_context)

    def backward_setup_context(ctx, inputs, output):
        grad_output, input, theta, *options, output_mask = inputs
        ctx.save_for_backward(grad_output, input, theta)
        ctx.options = options
        ctx.output_mask = output_mask

    def backward_grad(ctx, gg_input, gg_theta):
        # double backward: (grad_input, grad_theta) = J^T grad_output recomputed on the torch
        # path with a graph, then its vector-Jacobian product with (gg_input, gg_theta)
        grad_output, input, theta = ctx.saved_tensors
        size, transform, mode, padding_mode, align_corners, _ = ctx.options
        create_graph = torch.is_grad_enabled()  # a third derivative was asked for
        with torch.enable_grad():
            go, x, t = _leaf(grad_output), _leaf(input), _leaf(theta)
            out = torch_path(x, t, size, transform, mode, padding_mode, align_corners)
            firsts = torch.autograd.grad(out, (x, t), go, create_graph=True)
            pairs = [(f, gg) for f, gg, m in zip(firsts, (gg_input, gg_theta), ctx.output_mask)
                     if m and gg is not None and f.requires_grad]
            wrt = [v for v, n in zip((go, x, t), ctx.needs_input_grad[:3]) if n]
            grads = iter(torch.autograd.grad(
                [f for f, _ in pairs], wrt, [gg for _, gg in pairs], allow_unused=True,
                create_graph=create_graph) if pairs and wrt else ())
        res = [next(grads) if n else None for n in ctx.needs_input_grad[:3]]
        res = [torch.zeros_like(v) if r is None and n else r
               for r, v, n in zip(res, (grad_output, input, theta), ctx.needs_input_grad[:3])]
        return (*res, None, None, None, None, None, None, None)

    backward_op.register_autograd(backward_grad, setup_context=backward_setup_context)
    return warp_op, backward_op
