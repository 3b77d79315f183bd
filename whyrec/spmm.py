"""CSR × dense products on the CPU with a compiled kernel (``whyrec/spmm.c``), Torch's where it does not apply.

``addmm(adj, x, y, beta, alpha)`` computes ``alpha · Â x + beta · y`` for a CPU CSR ``Â`` (int32 indices,
float32 values) and float32 rows, in disjoint row ranges of equal stored entries on Torch's thread count (plain
Python threads: ``ctypes`` calls run without the GIL). Against Torch's CSR product (MKL):

* **the x rows of the entries 16 places ahead are prefetched** (across row ends): a product of a sparse
  graph waits on those gathers, not on arithmetic. Gowalla's ``(N, 64)`` product in its locality order,
  2 threads: 0.76x MKL's time, the same bits (each row summed in storage order, as MKL does;
  ``benchmarks/bench_spmm.py``);
* **``y`` is a separate input**: ``beta · y + alpha · Â x`` into a fresh ``out`` with no copy of ``y``
  first (Torch's out-of-place ``addmm`` copies ``y`` into the result, then scales it in place), so
  Horner's rule ``H ← α_k G + Â H`` costs its products and nothing else.

The kernel is C compiled once per machine with the system's compiler (``$CC``, else ``cc``, ``gcc`` or
``clang``; ``-O3 -march=native``; ~0.4 s) into ``$WHYREC_CACHE`` (default ``$XDG_CACHE_HOME/whyrec`` or
``~/.cache/whyrec``), keyed by the source, the compiler and the CPU's flags, and checked against a dense
product before first use. Without a compiler, when it fails, or with ``WHYREC_NATIVE_SPMM=0``, :func:`addmm`
returns ``None`` and the callers (:mod:`whyrec.graph`) use Torch's product: the same results to float
rounding, slower.
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
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["addmm", "available", "thread_pool"]

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_suffix(".c")
#: compiler flags tried in turn (the first that compiles wins): 512-bit vectors where the compiler takes the
#: x86 option (Gowalla's product 0.87x the time of GCC's default 256-bit choice on a Sapphire Rapids core);
#: OpenMP where the compiler has it -- its ``libgomp.so.1`` is then the one Torch loaded (one runtime, one set of
#: threads: Python threads beside Torch's spinning OpenMP workers lose ~20 % of a step to them)
_FLAGS = (["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"], ["-O3", "-march=native", "-fopenmp"],
          ["-O3", "-march=native"], ["-O3"])
#: fewest stored entries per thread's share: below, one thread does the whole product
MIN_ENTRIES_PER_THREAD = 50_000

_POOL: Optional[ThreadPoolExecutor] = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of at least ``workers`` threads for compiled kernels that release the GIL (this
    module's product, :mod:`whyrec.train.bpr_kernel`); grown, never shrunk."""
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)  # idle between calls: its threads end now
            _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whyrec"), workers
        return _POOL


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


def _compile() -> Optional[Path]:
    """The shared library's path, compiled now if this machine's cache lacks it; ``None`` without a compiler
    or when every flag set fails."""
    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None or not _SOURCE.is_file():
        return None
    source = _SOURCE.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256(b"\0".join([source, cc.encode(), version, _cpu_flags().encode(),
                                     platform.machine().encode()])).hexdigest()[:20]
    target = _cache_dir() / f"spmm-{key}.so"
    if target.is_file():
        return target
    for flags in _FLAGS:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([cc, *flags, "-shared", "-fPIC", "-o", tmp, str(_SOURCE)],
                                  capture_output=True, timeout=120)
            if done.returncode == 0:
                os.replace(tmp, target)  # atomic: a concurrent process sees the whole library or none
                return target
            log.debug("spmm kernel: %s %s failed: %s", cc, " ".join(flags), done.stderr.decode(errors="replace"))
        except (OSError, subprocess.SubprocessError) as e:
            log.debug("spmm kernel: %s", e)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return None


@functools.cache
def _kernel():
    """``(whyrec_csr_addmm_f32, openmp)`` compiled and checked against a dense product, or ``None``."""
    if os.environ.get("WHYREC_NATIVE_SPMM", "1") == "0":
        return None
    try:
        path = _compile()
        if path is None:
            return None
        lib = ctypes.CDLL(str(path))
    except OSError as e:  # pragma: no cover - a library that does not load
        log.debug("spmm kernel: %s", e)
        return None
    fn = lib.whyrec_csr_addmm_f32
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    fn.argtypes = [i64, i64, p, p, p, p, i64, p, f32, f32, p, ctypes.c_int]
    fn.restype = None
    kernel = (fn, bool(lib.whyrec_openmp()))
    return kernel if _self_check(kernel) else None


def _self_check(kernel) -> bool:
    """The kernel against numpy's dense product on a small matrix with empty rows, at the specialised widths and
    an odd one, with and without ``y``, on one and on three threads."""
    rng = np.random.default_rng(0)
    dense = (rng.random((37, 41)) < 0.15) * rng.standard_normal((37, 41))
    dense[[3, 20]] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch's "sparse CSR support is in beta"
        a = torch.from_numpy(dense.astype(np.float32)).to_sparse_csr()
        a = torch.sparse_csr_tensor(a.crow_indices().to(torch.int32), a.col_indices().to(torch.int32), a.values(),
                                    size=a.shape, check_invariants=False)
    for d in (16, 32, 64, 128, 7):
        x = torch.from_numpy(rng.standard_normal((41, d)).astype(np.float32))
        y = torch.from_numpy(rng.standard_normal((37, d)).astype(np.float32))
        for yy, beta in ((None, 0.0), (y, 0.5)):
            for threads in (1, 3):
                out = _run(kernel, a, x, yy, beta, 2.0, torch.empty(37, d), threads)
                want = 2.0 * dense.astype(np.float32) @ x.numpy() + (0.0 if yy is None else beta * y.numpy())
                if not np.allclose(out.numpy(), want, rtol=1e-5, atol=1e-5):
                    log.warning("whyrec.spmm: the compiled kernel disagrees with a dense product; using Torch's")
                    return False
    return True


def _run(kernel, adj: Tensor, x: Tensor, y: Optional[Tensor], beta: float, alpha: float, out: Tensor,
         threads: int) -> Tensor:
    """The product on ``threads`` threads: OpenMP's inside the kernel, else shares of equal stored entries on
    this module's Python threads (the first on the calling one)."""
    fn, openmp = kernel
    crow, val = adj.crow_indices(), adj.values()
    n, nnz = adj.shape[0], int(val.numel())
    args = (crow.data_ptr(), adj.col_indices().data_ptr(), val.data_ptr(), x.data_ptr(), x.shape[1],
            None if y is None else y.data_ptr(), float(beta), float(alpha), out.data_ptr())
    if openmp or threads == 1:
        fn(0, n, *args, threads)
        return out
    bounds = np.searchsorted(crow.numpy(), np.linspace(0, nnz, threads + 1)[1:-1]).tolist()
    edges = [0, *bounds, n]
    futures = [thread_pool(threads - 1).submit(fn, edges[s], edges[s + 1], *args, 1) for s in range(1, threads)]
    fn(edges[0], edges[1], *args, 1)
    for f in futures:
        f.result()
    return out


def available() -> bool:
    """Whether the compiled kernel is in use (compiled and checked, not switched off)."""
    return _kernel() is not None


def _overlap(a: Tensor, b: Tensor) -> bool:
    sa, sb = a.data_ptr(), b.data_ptr()
    return sa < sb + b.numel() * b.element_size() and sb < sa + a.numel() * a.element_size()


def addmm(adj: Tensor, x: Tensor, y: Optional[Tensor] = None, beta: float = 0.0, alpha: float = 1.0,
          out: Optional[Tensor] = None) -> Optional[Tensor]:
    """``alpha · adj @ x + beta · y`` (``y`` ignored where ``beta`` is 0, as BLAS does), written into ``out``
    (default a new tensor; may be ``y`` itself, not ``x``); ``None`` where the kernel does not apply -- then the
    caller uses Torch.

    ``adj``: ``(n, m)`` CPU ``sparse_csr`` float32 with int32 indices; ``x``: ``(m, d)`` float32; ``y``, ``out``:
    ``(n, d)`` float32 contiguous. Inputs that need autograd are left to Torch (the kernel records no graph)."""
    if adj.layout != torch.sparse_csr or adj.device.type != "cpu" or adj.dtype != torch.float32 \
            or x.dtype != torch.float32 or x.dim() != 2 or x.device.type != "cpu" or x.shape[0] != adj.shape[1]:
        return None
    if beta == 0.0:
        y = None
    if torch.is_grad_enabled() and (x.requires_grad or (y is not None and y.requires_grad)):
        return None
    n, d = adj.shape[0], x.shape[1]
    if y is not None and (y.dtype != torch.float32 or tuple(y.shape) != (n, d) or not y.is_contiguous()):
        return None
    crow, col = adj.crow_indices(), adj.col_indices()
    if crow.dtype != torch.int32 or col.dtype != torch.int32:
        return None
    kernel = _kernel()
    if kernel is None:
        return None
    x = x.contiguous()
    if out is None:
        out = x.new_empty(n, d)
    elif out.dtype != torch.float32 or tuple(out.shape) != (n, d) or not out.is_contiguous() or _overlap(out, x):
        return None
    if n == 0 or d == 0:
        return out
    threads = max(1, min(torch.get_num_threads(), adj.values().numel() // MIN_ENTRIES_PER_THREAD))
    return _run(kernel, adj, x, y, beta, alpha, out, threads)
