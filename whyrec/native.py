"""whyrec's C kernels, compiled once per machine: :func:`library` ``(source) -> Native | None``.

The hot loops of a LightGCN step on the CPU are C shipped with the package (``whyrec/spmm.c``, the CSR
product; ``whyrec/train/bpr.c``, the BPR loss and gradient; ``whyrec/train/sampling.c``, the negative sampler's
membership test), compiled at their first use with the system's
compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``; ``-O3 -march=native``, OpenMP where the compiler has
it; ~0.5 s) into ``$WHYREC_CACHE/kernels`` (default ``$XDG_CACHE_HOME/whyrec`` or ``~/.cache/whyrec``), keyed by
the source, the compiler and the CPU's flags, written atomically (a concurrent process sees the whole library or
none), and loaded with :mod:`ctypes`.

**One OpenMP runtime.** The libraries ask for ``libgomp.so.1``, which the dynamic loader resolves to the copy
Torch loaded already (the same soname): the kernels run on Torch's own OpenMP threads. Plain Python threads
next to them lose ~20 % of a LightGCN step to Torch's workers, which spin for a while after each of Torch's
parallel operations (measured on Gowalla's step, 2 threads; ``docs/results.md``).

Without a compiler, when compiling fails, or with ``WHYREC_NATIVE=0``, :func:`library` returns ``None`` and the
callers use their Torch code: the same results to float rounding, slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

__all__ = ["Native", "library", "function"]

log = logging.getLogger(__name__)

_COMMON = Path(__file__).with_name("native.c")
#: compiler flags tried in turn, the first that compiles wins: 512-bit vectors where the compiler takes the x86
#: option (Gowalla's product 0.87x the time of GCC's default 256-bit choice on a Sapphire Rapids core)
_FLAGS = (["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"], ["-O3", "-march=native", "-fopenmp"],
          ["-O3", "-march=native"], ["-O3"])


class Native(NamedTuple):
    """A loaded library and whether it was compiled with OpenMP (else its kernels run on one thread)."""

    lib: ctypes.CDLL
    openmp: bool


def _cache_dir() -> Path:
    root = os.environ.get("WHYREC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "whyrec")
    path = Path(root) / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = Path(tempfile.gettempdir()) / f"whyrec-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _compile(source: Path) -> Optional[Path]:
    """The shared library of ``source`` (with ``native.c``), compiled now if this machine's cache lacks it;
    ``None`` without a compiler or when every flag set fails."""
    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None or not source.is_file():
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256(b"\0".join([source.read_bytes(), _COMMON.read_bytes(), cc.encode(), version,
                                     _cpu_flags().encode(), platform.machine().encode()])).hexdigest()[:20]
    target = _cache_dir() / f"{source.stem}-{key}.so"
    if target.is_file():
        return target
    for flags in _FLAGS:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([cc, *flags, "-shared", "-fPIC", "-o", tmp, str(source), str(_COMMON), "-lm"],
                                  capture_output=True, timeout=120)
            if done.returncode == 0:
                os.replace(tmp, target)
                return target
            log.debug("%s: %s %s failed: %s", source.name, cc, " ".join(flags), done.stderr.decode(errors="replace"))
        except (OSError, subprocess.SubprocessError) as e:
            log.debug("%s: %s", source.name, e)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return None


@functools.cache
def library(source: str | os.PathLike) -> Optional[Native]:
    """The compiled ``source`` (a C file of the package), loaded; ``None`` where it cannot be (see the module)."""
    if os.environ.get("WHYREC_NATIVE", "1") == "0":
        return None
    source = Path(source)
    try:
        path = _compile(source)
        if path is None:
            return None
        lib = ctypes.CDLL(str(path))
    except OSError as e:  # pragma: no cover - a library that does not load
        log.debug("%s: %s", source.name, e)
        return None
    return Native(lib, bool(lib.whyrec_openmp()))


#: :func:`function`'s argument codes: the ctypes type of each letter
_CTYPES = {"p": ctypes.c_void_p, "q": ctypes.c_int64, "i": ctypes.c_int, "f": ctypes.c_float, "d": ctypes.c_double}


def function(source: str | os.PathLike, name: str, args: str, restype=None):
    """``(fn, openmp)``: the C function ``name`` of the compiled ``source`` with its argument types set from
    ``args``, one letter each (``p`` a pointer, ``q`` int64, ``i`` int, ``f`` float, ``d`` double) and its
    ``restype``; ``None`` where :func:`library` is. Torch is imported first, so that the library's OpenMP runtime
    is Torch's (see the module)."""
    import torch  # noqa: F401

    native = library(source)
    if native is None:
        return None
    fn = getattr(native.lib, name)
    fn.argtypes = [_CTYPES[c] for c in args]
    fn.restype = restype
    return fn, native.openmp
