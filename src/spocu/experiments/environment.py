"""Package versions and hardware, recorded with every experiment.

Example:
    >>> info = environment("cpu")
    >>> sorted(info) == ["hardware", "versions"] and "spocu" in info["versions"]
    True
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

__all__ = ["environment", "cpu_model"]

_PACKAGES = ("spocu", "torch", "numpy", "scipy", "statsmodels", "scikit-learn", "matplotlib", "rich")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str, extra_packages: tuple[str, ...] = ()) -> dict:
    """Versions of Python and the packages used (and ``extra_packages``), and the machine (CPU, cores, GPU if used)."""
    versions = {"python": sys.version.split()[0]}
    for name in (*_PACKAGES, *(p for p in extra_packages if p not in _PACKAGES)):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    hardware = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "device": device,
    }
    if device.startswith("cuda") and "torch" in sys.modules:
        import torch

        hardware["gpu"] = torch.cuda.get_device_name(torch.device(device.split(" ")[0]))
        hardware["cuda"] = torch.version.cuda
    return {"versions": versions, "hardware": hardware}
