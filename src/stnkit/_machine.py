"""What CPU this is, for every figure a benchmark or a results page prints (torch-free)."""

from __future__ import annotations

import os
import platform

__all__ = ["cpu_info", "load_average"]


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
