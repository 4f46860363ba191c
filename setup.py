"""Build of the optional C++ extension (everything else is in pyproject.toml).

``stnkit.ops.kernels._cpu_warp`` (and ``_cpu_warp_avx2`` on x86-64): the fused CPU warp
kernels of the ``"cpp"`` backend (``stnkit/ops/kernels/cpp_cpu.py``). A plain shared library without the Python C-API or
torch headers, loaded with ctypes; built with ``-fopenmp`` so that, loaded after torch, it
runs on torch's own OpenMP thread team. Optional: without a C++ compiler (or OpenMP) the
install still succeeds and ``stnkit.ops.warp`` uses the torch backend.
"""

import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = "src/stnkit/ops/kernels/csrc"
PACKAGE = "stnkit.ops.kernels"
# name -> extra flags. The same sources twice on x86-64: for the baseline, and with AVX2
# (8-wide vector loops, gathers), which cpp_cpu loads where torch's CPU capability is AVX2 or
# AVX-512. No -march=native: the wheel must run on any x86-64 it lands on.
VARIANTS = {"_cpu_warp": []}
if platform.machine().lower() in ("x86_64", "amd64"):
    VARIANTS["_cpu_warp_avx2"] = ["-mavx2", "-mf16c"]  # every AVX2 CPU has F16C


class BuildExt(build_ext):
    """Names each library ``<name>.so.1``: not an importable module name (any ``*.so`` in a
    package is one to ``pkgutil.walk_packages``, and importing it would fail, since it has no
    ``PyInit``)."""

    def get_ext_filename(self, fullname):
        name = super().get_ext_filename(fullname)
        short = fullname.split(".")[-1]
        if short in VARIANTS:  # called with either name
            name = os.path.join(os.path.dirname(name), f"{short}.so.1")
        return name


setup(
    ext_modules=[
        Extension(
            f"{PACKAGE}.{name}",
            sources=[f"{CSRC}/cpu_warp.cpp"],
            depends=[f"{CSRC}/geometry.h", f"{CSRC}/sampling.h", f"{CSRC}/storage.h"],
            language="c++",
            # -ffp-contract=off: no fused multiply-adds, so results do not depend on the CPU
            # or the build
            extra_compile_args=["-O3", "-std=c++17", "-fopenmp", "-ffp-contract=off",
                                "-fvisibility=hidden", "-g0", *flags],
            extra_link_args=["-fopenmp"],
            optional=True,
        )
        for name, flags in VARIANTS.items()
    ],
    cmdclass={"build_ext": BuildExt},
)
