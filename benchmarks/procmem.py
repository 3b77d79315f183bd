"""A process's memory as Linux reports it, for the benchmarks (``/proc/PID/status``, ``getrusage``)."""

from __future__ import annotations

import ctypes
import resource
import sys
from pathlib import Path


def status_mb(field: str = "VmRSS", pid: int | str = "self") -> float:
    """``field`` of ``/proc/PID/status`` (``VmRSS``: resident now, ``VmHWM``: its peak) in MB; NaN where there is
    no such file or field (not Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mb(trim: bool = False) -> float:
    """This process's resident memory in MB; ``trim``: first ``malloc_trim(0)`` (glibc) and reset the peak
    (``/proc/self/clear_refs``), so that :func:`peak_since_mb` is the peak from now on."""
    if trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS")


def peak_since_mb() -> float:
    """The peak resident memory since the last ``rss_mb(trim=True)`` (or the process's start), in MB."""
    return status_mb("VmHWM")


def peak_rss_mb() -> float:
    """This process's peak resident memory over its whole life (``getrusage``), in MB."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20
