"""16-bit images for the Numba kernels, which have no float16 / bfloat16 type.

``numba_cpu`` widens a bfloat16 / float16 image (and upstream gradient) to float32 before a
kernel and narrows the float32 output (and grad_input) back after it, with these parallel
loops over the raw 16-bit patterns (``uint16`` views of the tensors). They run on Numba's
threads: the same conversions through ``Tensor.to`` start an OpenMP region right before the
Numba launch, and the two thread pools then compete for the cores (measured: a 256 x 28 x 28
bfloat16 -> float32 copy took 8 ms that way on a loaded 2-core machine, 0.1 ms here).

Bit-exact with ``Tensor.to`` (tested on every 16-bit pattern, on the ties between
neighbours and at the range limits): widening is exact; narrowing rounds to nearest, ties to
even, overflows to +-Inf, keeps subnormals, and maps NaN to a NaN of the same sign (payload
bits may differ from PyTorch's).

- bfloat16 is the top half of a float32: widen ``bits << 16``; narrow by adding
  ``0x7FFF + lsb`` and keeping the top half.
- float16: widen field by field (subnormals as m * 2**-24, exact in float32); narrow as PyTorch's
  ``fp16_ieee_from_fp32_value`` does, letting float32 arithmetic do the rounding: scaling
  |x| by 2**112 then 2**-110 and adding a power of two that aligns the float16 mantissa
  with float32's leaves the rounded float16 fields in the sum's bits.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from stnkit.ops.kernels._numba_runtime import jit

__all__ = ["narrow_bf16", "narrow_f16", "widen_bf16", "widen_f16"]


@intrinsic
def _f32(typingctx, bits):
    """The float32 whose bit pattern is the uint32 ``bits``."""
    if bits != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _bits(typingctx, x):
    """The bit pattern (uint32) of the float32 ``x``."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


# Integer work is done in int64 (Numba's natural width; no unsigned / signed mixing).

@jit()
def widen_bf16(src, dst):
    """dst (float32, n) = the bfloat16 values whose bits are src (uint16, n)."""
    for i in range(src.size):
        dst[i] = _f32(np.uint32(np.int64(src[i]) << 16))


@jit()
def narrow_bf16(src, dst):
    """dst (uint16, n) = bits of src (float32, n) rounded to bfloat16."""
    for i in range(src.size):
        u = np.int64(_bits(src[i]))
        if (u & 0x7FFFFFFF) > 0x7F800000:  # NaN: keep sign and a quiet payload
            dst[i] = np.uint16((u >> 16) | 0x40)
        else:  # round to nearest, ties to even (a carry into the exponent is right)
            dst[i] = np.uint16((u + 0x7FFF + ((u >> 16) & 1)) >> 16)


@jit()
def widen_f16(src, dst):
    """dst (float32, n) = the float16 values whose bits are src (uint16, n)."""
    to_sub = _f32(np.uint32(0x33800000))  # 2**-24, the float16 subnormal unit
    for i in range(src.size):
        h = np.int64(src[i])
        e = h & 0x7C00
        o = (h & 0x7FFF) << 13  # exponent and mantissa moved into float32's fields
        # normal: rebias the exponent (15 -> 127); subnormal m * 2**-24 (exact in float32);
        # Inf / NaN: all exponent bits set. Selects, no branches: the loop vectorises.
        sub = np.int64(_bits(np.float32(h & 0x3FF) * to_sub))
        bits = o + (112 << 23) if e != 0 else sub
        bits = o | 0x7F800000 if e == 0x7C00 else bits
        dst[i] = _f32(np.uint32(bits | ((h & 0x8000) << 16)))


@jit()
def narrow_f16(src, dst):
    """dst (uint16, n) = bits of src (float32, n) rounded to float16 (PyTorch's
    ``fp16_ieee_from_fp32_value``, see the module docstring)."""
    to_inf = _f32(np.uint32(0x77800000))  # 2**112
    to_zero = _f32(np.uint32(0x08800000))  # 2**-110
    for i in range(src.size):
        x = src[i]
        base = (abs(x) * to_inf) * to_zero
        w = np.int64(_bits(x))
        shl1 = (w + w) & 0xFFFFFFFF
        bias = shl1 & 0xFF000000
        if bias < 0x71000000:
            bias = 0x71000000
        base = _f32(np.uint32((bias >> 1) + 0x07800000)) + base
        b = np.int64(_bits(base))
        nonsign = ((b >> 13) & 0x7C00) + (b & 0x0FFF)
        if shl1 > 0xFF000000:  # NaN
            nonsign = 0x7E00
        dst[i] = np.uint16(((w & 0x80000000) >> 16) | nonsign)
