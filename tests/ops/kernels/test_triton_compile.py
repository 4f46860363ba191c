"""The Triton kernels compile for a real GPU (CUDA sm_90: PTX, then ptxas), checked without one.

Triton's interpreter (``test_triton_gpu.py``) runs the kernels as Python and accepts code that
the compiler rejects (a non-constexpr global, a float64 ``tl.log``, a ``static_range`` over a
runtime value), so without a GPU nothing else would catch it. Every kernel is compiled for
every transform family in float32 and float64, in a subprocess: this process may have
imported triton in interpreter mode, and compiling needs it in compiled mode.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import inspect, sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from stnkit.ops.kernels import _triton_2d as k2, _triton_3d as k3

    def compile_(fn, types, consts):
        names = list(inspect.signature(fn.fn).parameters)
        sig = {n: "constexpr" if n in consts else types[n] for n in names}
        cx = {(i,): consts[n] for i, n in enumerate(names) if n in consts}
        triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cx),
                       target=GPUTarget("cuda", 90, 32),
                       options={"enable_fp_fusion": True, "num_warps": 4})

    for t in ("fp32", "fp64"):
        types = dict(inp="*fp16", out="*fp16", gout="*bf16", cf="*" + t, ctl="*" + t,
                     gin="*" + t, part="*fp64", keys="*i32", perm="*i64", bounds="*i32",
                     SENTINEL="i32", TOTAL="i32", NBLK="i32", tolx="fp32", toly="fp32",
                     tolz="fp32", **dict.fromkeys(["C", "D", "H", "W", "Do", "Ho", "Wo"],
                                                  "i32"))
        for family, n, ncf in ((0, 0, 6), (1, 0, 9), (2, 16, 38), (None, 0, 12)):
            k = k2 if family is not None else k3
            geo = dict(FAMILY=family, K=n) if family is not None else {}
            common = dict(geo, MODE=0, PAD=2, ALIGN=False)
            bwd = dict(common, SCATTER=True, THETA=True, BLOCK=256)
            if family is not None:
                bwd["NCF"] = ncf
            for name, fn, consts in (
                    ("forward", k.forward_kernel, dict(common, BLOCK=256)),
                    ("backward", k.backward_kernel, bwd),
                    ("keys", k.keys_kernel, dict(common, NT=4, BLOCK=256)),
                    ("gather", k.gather_kernel, dict(common, NT=4, BLOCK=128))):
                compile_(fn, types, consts)
                print(t, "2-D family %s" % family if family is not None else "3-D", name,
                      "ok", flush=True)
''')


@pytest.mark.slow  # ~40 s on 2 cores: 32 compilations
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_kernels_compile_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a real compilation, and no sm_90 files left
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                       timeout=600, env=env, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count(" ok") == 32, r.stdout
