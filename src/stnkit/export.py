"""Export to ONNX: ``to_onnx(model, example_input, path)``, checked with onnxruntime.

Uses PyTorch's own exporter (``torch.onnx.export(..., dynamo=True)``) and adds ONNX
translations of stnkit's custom operators (``torch.ops.stnkit.warp_cpu`` (C++) on CPU,
``torch.ops.stnkit.warp_triton`` on CUDA, the fused kernels) through its ``custom_translation_table``. The pure-torch path (``stnkit.ops.sample``
and the grid generators; the TPS models use it) is plain tensor code and exports as it is
(gathers and scatters instead of ``GridSample``: ~140 nodes for ``st-cnn-tps``, 30 for
``st-cnn-aff``).
An exported model has a symbolic batch dimension; a model on CUDA exports its
``warp_triton`` calls with the same translation (not exercised by the CPU-only tests).

Translation of ``warp(input, theta, size, transform, mode, padding_mode, align_corners,
deterministic)`` (ONNX opset >= 20, which has ``AffineGrid`` and N-D ``GridSample``):

- ``affine`` (2-D or 3-D): ``AffineGrid(theta, size) -> GridSample``. Both follow PyTorch's
  ``affine_grid`` / ``grid_sample`` conventions (theta maps output to input, normalised
  coordinates, the same ``align_corners``), so the semantics match exactly.
  Exception: ``align_corners=True`` with a size-1 output axis, where ONNX's AffineGrid puts
  the axis at -1 and PyTorch at 0: there the grid is built as for projective.
- ``projective``: a decomposition. ``(u, v, w) = theta @ (x, y, 1)`` over the normalised
  output coordinates (a constant), grid ``(u / w, v / w)``, NaN where ``w <= 0`` (as
  :func:`stnkit.ops.projective_grid`), then ``GridSample``.
- Every grid is then made safe for ``GridSample``, which leaves non-finite and huge
  coordinates undefined (onnxruntime casts them to integers): a point with a NaN or +-Inf
  coordinate samples 0 in every padding mode (stnkit's rule: its coordinate is set to 0 and
  its output to 0); finite coordinates are clamped to [-4, 4] for ``zeros`` / ``border``
  padding (beyond that every tap is outside / on the border, so nothing changes) and reduced
  modulo 4 (exact ``fmod``; the reflection's period) for ``reflection``.
- ``mode``: bilinear -> ``"linear"``, nearest -> ``"nearest"``. onnxruntime rounds nearest
  ties half to even, as PyTorch and stnkit do (checked at exact half pixels in the tests).
- ``deterministic`` has no meaning for an inference graph and is ignored.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from stnkit._checks import check_tensor, fail
from stnkit._errors import StnkitError
from stnkit._io import atomic_write_bytes
from stnkit.ops.grids import base_coordinates

__all__ = ["OPSET", "MissingDependencyError", "onnx_bytes", "onnx_session", "run_onnx",
           "to_onnx", "translation_table", "warp_to_onnx"]

OPSET = 20
"""The default and the lowest ONNX opset: the first with AffineGrid and N-D GridSample."""

_MODES = {"bilinear": "linear", "nearest": "nearest"}
_FAR = 4.0  # |normalised coordinate| beyond which zeros / border padding change nothing


class MissingDependencyError(StnkitError, ImportError):
    """onnx, onnxscript or onnxruntime (the ``onnx`` extra) is not installed; the message says
    how to install it. An ImportError, so ``except ImportError`` still catches it."""


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(f"stnkit.export needs {module}, which is not installed "
                                     f"({e}); install it with: pip install 'stnkit[onnx]'") from e


def warp_to_onnx(input, theta, size: Sequence[int], transform: str, mode: str,
                 padding_mode: str, align_corners: bool, deterministic: bool):
    """ONNX translation (onnxscript, traced) of ``stnkit::warp_cpu`` /
    ``stnkit::warp_triton`` (affine and projective; a TPS on a kernel has no translation).

    Args:
        input: (B, C, H, W), or (B, C, D, H, W) for 3-D affine.
        theta: (B, 2, 3) / (B, 3, 4) affine, (B, 3, 3) projective; maps output coordinates to
            input coordinates, normalised [-1, 1].
        size: the output's spatial size (H_out, W_out) / (D_out, H_out, W_out).
    Returns:
        (B, C, *size), as the operator. See the module docstring for the translation.
    """
    from onnxscript import opset20 as op

    fn = "to_onnx"
    if mode not in _MODES:
        fail(fn, "mode", "'bilinear' or 'nearest'", repr(mode))
    if transform not in ("affine", "projective"):
        fail(fn, "transform", "'affine' or 'projective'", repr(transform))
    size = [int(s) for s in size]
    nd = len(size)
    ac = bool(align_corners)
    batch = op.Shape(theta, start=0, end=1)
    if transform == "affine" and not (ac and 1 in size):
        # AffineGrid takes the full output shape (B, C, *size); only B and size matter.
        shape = op.Concat(op.Shape(input, start=0, end=2), op.Constant(value_ints=size), axis=0)
        grid = op.AffineGrid(theta, shape, align_corners=int(ac))  # (B, *size, n)
    else:
        # theta @ the homogeneous output coordinates, a constant (n + 1, P) matrix: the
        # projective grid, and the affine one where AffineGrid differs (it puts a size-1
        # axis at -1 under align_corners, PyTorch at 0).
        base = base_coordinates(tuple(size), ac, dtype=torch.float32).T.contiguous()
        coords = op.MatMul(theta, op.CastLike(op.Constant(value=_tensor_proto(base)), theta))
        if transform == "projective":  # coords (B, 3, P): rows u, v, w
            uv = op.Slice(coords, op.Constant(value_ints=[0]), op.Constant(value_ints=[2]),
                          op.Constant(value_ints=[1]))  # (B, 2, P)
            w = op.Slice(coords, op.Constant(value_ints=[2]), op.Constant(value_ints=[3]),
                         op.Constant(value_ints=[1]))  # (B, 1, P)
            nan = op.CastLike(op.Constant(value_float=float("nan")), theta)
            zero = op.CastLike(op.Constant(value_float=0.0), theta)
            coords = op.Where(op.Greater(w, zero), op.Div(uv, w), nan)  # w <= 0: outside
        grid_shape = op.Concat(batch, op.Constant(value_ints=[*size, nd]), axis=0)
        grid = op.Reshape(op.Transpose(coords, perm=[0, 2, 1]), grid_shape)  # (B, *size, n)

    # Non-finite points read 0 in every padding mode (stnkit's rule; ONNX leaves them, and
    # huge coordinates, undefined: onnxruntime casts them to integers). x * 0 is 0 for
    # finite x and NaN otherwise, so one NaN test per point finds them.
    bad = op.IsNaN(op.ReduceSum(op.Mul(grid, op.CastLike(op.Constant(value_float=0.0), grid)),
                                op.Constant(value_ints=[-1]), keepdims=1))  # (B, *size, 1)
    grid = op.Where(bad, op.CastLike(op.Constant(value_float=0.0), grid), grid)
    far = op.CastLike(op.Constant(value_float=_FAR), grid)
    if padding_mode == "reflection":
        grid = op.Mod(grid, far, fmod=1)  # exact; reflection has period 4 in [-1, 1] units
    else:
        grid = op.Clip(grid, op.Neg(far), far)  # beyond +-4 every tap is outside / on the border
    out = op.GridSample(input, grid, mode=_MODES[mode], padding_mode=padding_mode,
                        align_corners=int(ac))  # (B, C, *size)
    bad = op.Transpose(bad, perm=[0, nd + 1, *range(1, nd + 1)])  # (B, 1, *size)
    return op.Where(bad, op.CastLike(op.Constant(value_float=0.0), out), out)


def _tensor_proto(t: Tensor):
    return _require("onnx").numpy_helper.from_array(t.numpy(), name="base")


def translation_table() -> dict[Callable, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export``: stnkit's registered operators
    (``stnkit::warp_cpu`` when the C++ kernels' module imports, ``stnkit::warp_triton`` when
    Triton's does)."""
    for module in ("stnkit.ops.kernels.cpp_cpu", "stnkit.ops.kernels.triton_gpu"):
        try:  # importing a kernel module registers its operator
            importlib.import_module(module)
        except ImportError:
            pass
    table = {}
    for name in ("warp_cpu", "warp_triton"):
        packet = getattr(torch.ops.stnkit, name, None)
        if packet is not None:
            table[packet.default] = warp_to_onnx
    return table


def _quiet_export(*args, **kwargs):
    """``torch.onnx.export`` without its progress lines and its internal deprecation noise."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning,
                                    message=r".*LeafSpec.*is deprecated")
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
            return torch.onnx.export(*args, verbose=False, **kwargs)
    finally:
        logger.setLevel(level)


def onnx_bytes(model: nn.Module, example_input: Tensor | tuple[Tensor, ...], *,
               opset: int = OPSET, dynamic_batch: bool = True) -> bytes:
    """The serialised ONNX model of ``model`` (in eval mode) traced on ``example_input``.

    Args:
        model: maps the input tensor(s) to a tensor; put in eval mode for the export and
            returned to its previous mode after.
        example_input: a (B, ...) tensor, or a tuple of them (one per argument of
            ``model.forward``); only shapes, dtypes and devices matter.
        opset: ONNX opset, >= 20 (:data:`OPSET`).
        dynamic_batch: dimension 0 of every input is symbolic; False fixes it to B.
    Returns:
        the ``ModelProto`` bytes. A model of one tensor has one input named ``"input"`` and
        its output named ``"output"``.
    """
    fn = "to_onnx"
    if not isinstance(model, nn.Module):
        fail(fn, "model", "an nn.Module", type(model).__name__, error=TypeError)
    inputs = (example_input,) if isinstance(example_input, Tensor) else example_input
    if not isinstance(inputs, tuple) or not inputs:
        fail(fn, "example_input", "a tensor or a non-empty tuple of tensors",
             type(example_input).__name__, error=TypeError)
    for i, t in enumerate(inputs):
        name = "example_input" if len(inputs) == 1 else f"example_input[{i}]"
        check_tensor(t, name=name, fn=fn)
        if t.dim() < 1 or t.shape[0] < 1:
            fail(fn, name, "a batch of at least one sample", tuple(t.shape))
    if isinstance(opset, bool) or not isinstance(opset, int):
        fail(fn, "opset", "an int", repr(opset), error=TypeError)
    if opset < OPSET:
        fail(fn, "opset", f">= {OPSET} (AffineGrid and N-D GridSample)", repr(opset))
    if not isinstance(dynamic_batch, bool):
        fail(fn, "dynamic_batch", "a bool", repr(dynamic_batch), error=TypeError)
    for module in ("onnx", "onnxscript"):
        _require(module)
    dynamic = tuple({0: torch.export.Dim.DYNAMIC} for _ in inputs) if dynamic_batch else None
    names = {"input_names": ["input"], "output_names": ["output"]} if len(inputs) == 1 else {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # One forward first: a TPS SpatialTransformer built without an output or input
            # size solves its matrix there, as torch.export cannot (data-dependent checks).
            model(*inputs)
        program = _quiet_export(model, inputs, dynamo=True, opset_version=opset,
                                dynamic_shapes=dynamic, **names,
                                custom_translation_table=translation_table())
    finally:
        model.train(was_training)
    return program.model_proto.SerializeToString()


def to_onnx(model: nn.Module, example_input: Tensor | tuple[Tensor, ...],
            path: str | os.PathLike, *, opset: int = OPSET, dynamic_batch: bool = True) -> Path:
    """Export ``model`` to an ONNX file at ``path`` (written atomically); returns the path.

    See :func:`onnx_bytes` for the arguments and the module docstring for how stnkit's
    operators are translated. Check the file with :func:`onnx_session` / :func:`run_onnx`.

    >>> import torch
    >>> from stnkit.export import onnx_session, run_onnx, to_onnx
    >>> from stnkit.models import create_model
    >>> model = create_model("st-cnn-aff", input_size=(1, 28, 28)).eval()
    >>> path = to_onnx(model, torch.rand(1, 1, 28, 28), "st-cnn-aff.onnx")
    >>> x = torch.rand(4, 1, 28, 28)  # any batch size: the batch dimension is symbolic
    >>> torch.allclose(run_onnx(onnx_session(path), x), model(x), atol=1e-4)
    True
    """
    data = onnx_bytes(model, example_input, opset=opset, dynamic_batch=dynamic_batch)
    atomic_write_bytes(path, data)
    return Path(path)


def onnx_session(model: bytes | str | os.PathLike):
    """An onnxruntime ``InferenceSession`` on the CPU for an ONNX file or its bytes."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_onnx(session, input: Tensor) -> Tensor:
    """Run an exported model (one input, one output) on ``input`` with onnxruntime."""
    name = session.get_inputs()[0].name
    out = session.run(None, {name: input.detach().cpu().numpy()})[0]
    return torch.from_numpy(out)
