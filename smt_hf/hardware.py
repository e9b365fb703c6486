"""Name the machine a result was measured on (recipes and benchmarks record it with every number)."""

from __future__ import annotations

import os
import platform

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU/GPU, core and thread counts, and library versions, as a JSON-able dict."""
    import transformers

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cpu": cpu_name()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def describe_machine() -> str:
    """One line, e.g. 'CPU AMD EPYC, 2 cores, 1 threads (torch 2.13.0+cpu)'."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"CPU {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads (torch {torch.__version__})"


__all__ = ["cpu_name", "machine_info", "describe_machine"]
