"""What CPU this is, for every figure a benchmark or a results page prints (torch-free)."""

from __future__ import annotations

import os
import platform

__all__ = ["ALLOCATOR_ENV", "allocator_settings", "cpu_info", "load_average"]

# glibc / PyTorch allocator settings that made timings stable on our 2-core machines (fresh
# large allocations page-fault and can double a timing); every benchmark prints them.
ALLOCATOR_ENV = {"THP_MEM_ALLOC_ENABLE": "1", "MALLOC_MMAP_THRESHOLD_": "33554432",
                 "MALLOC_TRIM_THRESHOLD_": "17179869184"}


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and its flags, read from ``/proc/cpuinfo`` (Linux); elsewhere
    ``platform.processor()`` (or the machine type) and no flags."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in (platform.processor(),
                                                              platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, "0.52 0.61 0.70" ("?" where the OS has none)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def allocator_settings() -> str:
    """The allocator variables of :data:`ALLOCATOR_ENV` as this process has them, for a
    benchmark's header: "THP_MEM_ALLOC_ENABLE=1, ..." ("unset" where absent), followed by
    the recommended values when they differ."""
    got = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ALLOCATOR_ENV)
    if any(os.environ.get(k) != v for k, v in ALLOCATOR_ENV.items()):
        got += " (recommended: " + " ".join(f"{k}={v}" for k, v in ALLOCATOR_ENV.items()) + ")"
    return got
