"""What CPU this is, for every figure a benchmark or a results page prints (torch-free)."""

from __future__ import annotations

import platform

__all__ = ["cpu_info"]


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
