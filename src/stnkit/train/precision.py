"""Training precision: ``fp32`` (the default), ``bf16`` or ``fp16`` (``config.precision``).

The weights, the optimizer state and the loss stay float32 in every precision ("master
weights"); ``bf16`` / ``fp16`` run the forward pass (and so its backward) under
``torch.autocast`` with that dtype, and the loss is computed from float32 logits. ``fp16``
adds a ``torch.amp.GradScaler`` (its small range would flush gradients to zero otherwise),
whose state travels in the checkpoint so a resumed run stays bitwise equal on the CPU.

Memory format: ``bf16`` / ``fp16`` runs of models with 2-D convolutions keep the weights and
the input batches channels_last (NHWC), which oneDNN's reduced-precision convolutions prefer:
measured faster than NCHW under bf16 on the CPU (``benchmarks/train_step.py``), while fp32
keeps today's NCHW. The choice is a pure function of the precision and the model, so a resumed
run makes the same one.

Speed: reduced precision pays only on hardware that computes in it (AMX or AVX512-BF16 on
the CPU, tensor cores on the GPU); without it oneDNN emulates and a bf16 step is several
times slower than fp32 (see docs/results/train-step-cpu.md). :func:`bf16_cpu_flags` says which
of those instructions this CPU has.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from stnkit.train.config import PRECISIONS

__all__ = ["PRECISIONS", "autocast", "bf16_cpu_flags", "channels_last", "dtype_of", "make_scaler",
           "to_memory_format"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def dtype_of(precision: str) -> torch.dtype:
    """The compute dtype of ``precision`` (``"fp32"`` -> ``torch.float32``...)."""
    return _DTYPES[precision]


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` for ``precision`` on ``device``; a no-op for ``"fp32"``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled for ``"fp16"`` only (a disabled one passes calls through)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def channels_last(precision: str, model: nn.Module) -> bool:
    """Whether a run keeps the weights and inputs channels_last (see the module docstring)."""
    return precision != "fp32" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def to_memory_format(x: Tensor, enabled: bool) -> Tensor:
    """``x`` channels_last when ``enabled`` and 4-D; else ``x`` itself."""
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.dim() == 4 else x


def scaler_state(scaler: torch.amp.GradScaler) -> dict[str, Any] | None:
    """The scaler's JSON state (``scale``, ``growth_tracker``, ...), None when disabled."""
    return scaler.state_dict() if scaler.is_enabled() else None


def bf16_cpu_flags() -> list[str]:
    """The bf16 instructions this CPU reports in /proc/cpuinfo (Linux; [] elsewhere)."""
    from stnkit._machine import cpu_info

    have = cpu_info()[1]
    return [f for f in CPU_BF16_FLAGS if f in have]
