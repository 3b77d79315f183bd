"""CSR × dense products on the CPU with a compiled kernel (``whyrec/spmm.c``), Torch's where it does not apply.

``addmm(adj, x, y, beta, alpha)`` computes ``alpha · Â x + beta · y`` for a CPU CSR ``Â`` (int32 indices,
float32 values) and float32 rows, on Torch's thread count (its OpenMP threads, each a contiguous range of rows
holding an equal share of the stored entries: :mod:`whyrec.native`). Against Torch's CSR product (MKL):

* **the x rows of the entries 16 places ahead are prefetched** (across row ends): a product of a sparse
  graph waits on those gathers, not on arithmetic. Gowalla's ``(N, 64)`` product in its locality order,
  2 threads: ~0.8x MKL's time on an Intel host, the same bits (each row summed in storage order, as MKL does
  there; on an AMD host MKL took 2.9x the kernel's time, with differences of 3e-7; ``benchmarks/bench_spmm.py``);
* **results of 8 MiB or more are streamed** (non-temporal stores; ``y``/``z`` prefetched with the
  non-temporal hint): the once-touched streams no longer evict the ``x`` rows the gathers reuse (Gowalla's
  fused products ~0.8x the time with plain stores, the same bits);
* **``y`` is a separate input**: ``beta · y + alpha · Â x`` into a fresh ``out`` with no copy of ``y``
  first (Torch's out-of-place ``addmm`` copies ``y`` into the result, then scales it in place), so
  Horner's rule ``H ← α_k G + Â H`` costs its products and nothing else.

The kernel is checked against a dense product before its first use. Where it cannot be compiled (see
:mod:`whyrec.native`; ``WHYREC_NATIVE=0`` switches it off), or for inputs it does not take, :func:`addmm`
returns ``None`` and the callers (:mod:`whyrec.graph`) use Torch's product.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .native import function

__all__ = ["addmm", "available", "gather_in_order"]

log = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.bfloat16)

#: fewest stored entries per thread's share: below, one thread does the whole product
MIN_ENTRIES_PER_THREAD = 50_000


@functools.cache
def _gather_kernel():
    """``(whyrec_gather_rows_f32, openmp)`` of the same library (checked with it by :func:`_kernel`), or ``None``."""
    if _kernel() is None:
        return None
    return function(Path(__file__).with_suffix(".c"), "whyrec_gather_rows_f32", "ppqpqqpppi", ctypes.c_double)


@functools.cache
def _kernel():
    """``(whyrec_csr_addmm_f32, openmp)``, compiled and checked against a dense product, or ``None``."""
    kernel = function(Path(__file__).with_suffix(".c"), "whyrec_csr_addmm_f32", "qqppppiqpffpppppi")
    return kernel if kernel is not None and _self_check(kernel) else None


def _self_check(kernel) -> bool:
    """The kernel against numpy's dense product on a small matrix with empty rows, at the specialised widths and
    an odd one, with and without ``y``, on one and on three threads (an empty share among them)."""
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


def _ptr(t: Optional[Tensor]):
    return None if t is None else t.data_ptr()


def _run(kernel, adj: Tensor, x: Tensor, y: Optional[Tensor], beta: float, alpha: float, out: Tensor,
         threads: int, z: Optional[Tensor] = None, z_scale: Optional[Tensor] = None,
         out_rows: Optional[Tensor] = None) -> Tensor:
    fn, openmp = kernel
    low = out.dtype == torch.bfloat16
    fn(0, adj.shape[0], adj.crow_indices().data_ptr(), adj.col_indices().data_ptr(), adj.values().data_ptr(),
       x.data_ptr(), int(x.dtype == torch.bfloat16), x.shape[1], _ptr(y), float(beta), float(alpha), _ptr(z),
       _ptr(z_scale), _ptr(out_rows), None if low else out.data_ptr(), out.data_ptr() if low else None,
       threads if openmp else 1)
    return out


def available() -> bool:
    """Whether the compiled kernel is in use (compiled and checked, not switched off)."""
    return _kernel() is not None


def _overlap(a: Tensor, b: Tensor) -> bool:
    sa, sb = a.data_ptr(), b.data_ptr()
    return sa < sb + b.numel() * b.element_size() and sb < sa + a.numel() * a.element_size()


def addmm(adj: Tensor, x: Tensor, y: Optional[Tensor] = None, beta: float = 0.0, alpha: float = 1.0,
          out: Optional[Tensor] = None, z: Optional[Tensor] = None, z_scale: Optional[Tensor] = None,
          out_rows: Optional[Tensor] = None, out_dtype: torch.dtype = torch.float32) -> Optional[Tensor]:
    """``alpha · adj @ x + beta · y + z_scale[:, None] · z`` (``y`` ignored where ``beta`` is 0, as BLAS does;
    the ``z`` term only with both ``z`` and ``z_scale``), its row ``r`` written to row ``out_rows[r]`` of ``out``
    (default row ``r``); ``out`` default a new tensor, and may be ``y`` itself where ``out_rows`` is not given,
    never ``x`` or ``z``. ``None`` where the kernel does not apply -- then the caller uses Torch.

    ``adj``: ``(n, m)`` CPU ``sparse_csr`` float32 with int32 indices; ``x``: ``(m, d)`` float32 or bfloat16 (its
    rows gathered at half the bytes, summed in float32); ``y``, ``z``: ``(n, d)`` float32 contiguous; ``out``:
    ``(n, d)`` float32, or bfloat16 (each value rounded to nearest even), contiguous (``out_dtype`` where it is
    allocated); ``z_scale``: ``(n,)`` float32; ``out_rows``: ``(n,)`` int64, a
    permutation of ``range(n)`` (not checked: a repeated row leaves another unwritten). Inputs that need
    autograd are left to Torch (the kernel records no graph)."""
    if adj.layout != torch.sparse_csr or adj.device.type != "cpu" or adj.dtype != torch.float32 \
            or x.dtype not in _DTYPES or x.dim() != 2 or x.device.type != "cpu" or x.shape[0] != adj.shape[1] \
            or out_dtype not in _DTYPES:
        return None
    if beta == 0.0:
        y = None
    if z is None or z_scale is None:
        z = z_scale = None
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, y, z, z_scale)):
        return None
    n, d = adj.shape[0], x.shape[1]
    for t, shape in ((y, (n, d)), (z, (n, d)), (z_scale, (n,))):
        if t is not None and (t.dtype != torch.float32 or tuple(t.shape) != shape or not t.is_contiguous()
                              or t.device.type != "cpu"):
            return None
    if out_rows is not None and (out_rows.dtype != torch.int64 or tuple(out_rows.shape) != (n,)
                                 or not out_rows.is_contiguous() or out_rows.device.type != "cpu"):
        return None
    crow, col = adj.crow_indices(), adj.col_indices()
    if crow.dtype != torch.int32 or col.dtype != torch.int32:
        return None
    kernel = _kernel()
    if kernel is None:
        return None
    x = x.contiguous()
    if out is None:
        out = x.new_empty(n, d, dtype=out_dtype)
    elif out.dtype not in _DTYPES or tuple(out.shape) != (n, d) or not out.is_contiguous():
        return None
    if _overlap(out, x) or (z is not None and _overlap(out, z)) or (y is not None and _overlap(out, y) and (
            out_rows is not None or y.data_ptr() != out.data_ptr() or out.dtype != y.dtype)):
        return None
    if n == 0 or d == 0:
        return out
    threads = max(1, min(torch.get_num_threads(), adj.values().numel() // MIN_ENTRIES_PER_THREAD))
    return _run(kernel, adj, x, y, beta, alpha, out, threads, z, z_scale, out_rows)


def gather_in_order(user_w: Tensor, item_w: Tensor, order: Tensor, count: Tensor, bf16: bool = False):
    """``(x0, sq, x0_bf16)``: ``x0 = cat([user_w, item_w])[order]`` ``(N, d)`` for an ``order`` that numbers the
    users first (``order[:U] < U <= order[U:]``, not checked), ``sq = Σ_r count[r] ‖x0[r]‖²`` (0-d, summed in
    float64 per thread) and, with ``bf16``, ``x0`` rounded to bfloat16 (else ``None``): one pass of the compiled
    kernel where a gather, a norm pass and a conversion pass were three. ``None`` where the kernel does not
    apply (no compiler, not CPU float32 contiguous tables, inputs that need autograd: the kernel records no
    graph)."""
    kernel = _gather_kernel()
    tables = (user_w, item_w)
    if kernel is None or any(t.dtype != torch.float32 or t.device.type != "cpu" or t.dim() != 2 or not t.is_contiguous()
                             for t in tables) or user_w.shape[1] != item_w.shape[1] \
            or (torch.is_grad_enabled() and any(t.requires_grad for t in tables)) \
            or order.dtype != torch.int64 or count.dtype != torch.float32 \
            or tuple(order.shape) != (user_w.shape[0] + item_w.shape[0],) or tuple(count.shape) != tuple(order.shape):
        return None
    fn, openmp = kernel
    order, count = order.contiguous(), count.contiguous()
    n, d = order.shape[0], user_w.shape[1]
    out = user_w.new_empty(n, d)
    out16 = user_w.new_empty(n, d, dtype=torch.bfloat16) if bf16 else None
    threads = max(1, min(torch.get_num_threads(), n * d // 65_536)) if openmp else 1
    sq = fn(user_w.data_ptr(), item_w.data_ptr(), user_w.shape[0], order.data_ptr(), n, d, count.data_ptr(),
            out.data_ptr(), None if out16 is None else out16.data_ptr(), threads)
    return out, out.new_tensor(sq), out16
