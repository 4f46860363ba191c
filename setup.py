"""Build of the optional C++ extension (everything else is in pyproject.toml).

``stnkit.ops.kernels._cpu_warp``: the fused CPU warp kernels of the ``"cpp"`` backend
(``stnkit/ops/kernels/cpp_cpu.py``). A plain shared library without the Python C-API or
torch headers, loaded with ctypes; built with ``-fopenmp`` so that, loaded after torch, it
runs on torch's own OpenMP thread team. Optional: without a C++ compiler (or OpenMP) the
install still succeeds and ``stnkit.ops.warp`` uses the numba or torch backends.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = "src/stnkit/ops/kernels/csrc"
LIBRARY = "stnkit.ops.kernels._cpu_warp"


class BuildExt(build_ext):
    """Names the library ``_cpu_warp.so.1``: not an importable module name (any ``*.so``
    in a package is one to ``pkgutil.walk_packages``, and importing it would fail, since it
    has no ``PyInit``)."""

    def get_ext_filename(self, fullname):
        name = super().get_ext_filename(fullname)
        if fullname.split(".")[-1] == LIBRARY.split(".")[-1]:  # called with either name
            name = os.path.join(os.path.dirname(name), "_cpu_warp.so.1")
        return name


setup(
    ext_modules=[
        Extension(
            LIBRARY,
            sources=[f"{CSRC}/cpu_warp.cpp"],
            depends=[f"{CSRC}/geometry.h", f"{CSRC}/sampling.h", f"{CSRC}/storage.h"],
            language="c++",
            # no -march=native: the library must run on any x86-64 the wheel lands on;
            # -ffp-contract=off: no fused multiply-adds, so results do not depend on the CPU
            extra_compile_args=["-O3", "-std=c++17", "-fopenmp", "-ffp-contract=off",
                                "-fvisibility=hidden", "-g0"],
            extra_link_args=["-fopenmp"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
