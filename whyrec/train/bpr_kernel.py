"""The BPR loss of a final table and its gradient in one pass over the triples, on the CPU (C: ``bpr.c``).

For triple ``t = (u, i, j)`` with margin ``x_t = e_u · (e_i − e_j)`` and ``w_t = −σ(−x_t) / b``::

    L = (1/b) Σ_t softplus(−x_t)
    ∂L/∂e_u += w_t (e_i − e_j),   ∂L/∂e_i += w_t e_u,   ∂L/∂e_j −= w_t e_u

Each triple reads its three rows once and adds into three rows of the gradient while they are in cache:
no ``(b, d)`` gathers, and no scatter through ``index_add_`` (Torch's CPU ``index_add_`` over rows is an
element-by-element ``scatter_add_``: on Gowalla's table, ~2/3 of :func:`whyrec.train.losses.bpr_loss_table`'s
chunked Torch pass). The triples, ordered by user, are split into one contiguous share per thread, each thread
adding into its own ``(N, d)`` gradient (the first into the result) and then summing a share of the rows of all
of them: the same result for the same thread count, whatever the scheduling. The threads are Torch's OpenMP
threads (:mod:`whyrec.native`: compiled once per machine; where it cannot be, :func:`supports` is false and
:func:`~whyrec.train.losses.bpr_loss_table` takes its Torch pass). Until 2026-12-03 this kernel was numba's, on
Python threads: on Gowalla's 65,536 triples (2 threads, one process, alternating) 26.8 ms against this one's
16.5 ms, 16.0 ms with one exponential per triple (``docs/results.md``).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
from torch import Tensor

from ..native import library

__all__ = ["bpr_table_loss_grad", "supports"]

_NAMES = {torch.float32: "whyrec_bpr_float", torch.float64: "whyrec_bpr_double"}


@functools.cache
def _kernels():
    """``({dtype: fn}, openmp)`` of the compiled ``bpr.c``, checked against the Torch pass on a small problem;
    ``None`` where it cannot be compiled or disagrees."""
    native = library(Path(__file__).with_name("bpr.c"))
    if native is None:
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    fns = {}
    for dtype, name in _NAMES.items():
        fn = getattr(native.lib, name)
        fn.argtypes = [p, i64, i64, p, p, p, i64, p, p, ctypes.c_double, ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_double
        fns[dtype] = fn
    kernels = (fns, native.openmp)
    from .losses import bpr_loss_table

    gen = torch.Generator().manual_seed(0)
    for dtype in _NAMES:
        table = torch.randn(40, 7, generator=gen, dtype=dtype)
        ids = [torch.randint(0, 40, (100,), generator=gen) for _ in range(3)]
        for threads in (1, 3):
            loss, grad = _run(kernels, table, *ids, True, threads)
            t = table.clone().requires_grad_()
            want = bpr_loss_table(t, *ids, kernel=False)
            want.backward()
            if not (torch.allclose(loss, want.detach(), rtol=1e-5) and torch.allclose(grad, t.grad, rtol=1e-4,
                                                                                     atol=1e-6)):
                return None
    return kernels


def supports(table: Tensor) -> bool:
    """Whether :func:`bpr_table_loss_grad` computes for ``table``: a CPU float32/float64 table, and the kernel
    compiled on this machine."""
    return table.device.type == "cpu" and table.dtype in _NAMES and table.dim() == 2 and _kernels() is not None


def _run(kernels, table: Tensor, users: Tensor, pos: Tensor, neg: Tensor, want_grad: bool,
         threads: int) -> tuple[Tensor, Tensor | None]:
    fns, openmp = kernels
    n, d = table.shape
    b = int(users.numel())
    threads = max(1, threads) if openmp and want_grad else 1
    grad = torch.empty_like(table) if want_grad else None
    extra = table.new_empty((threads - 1, n, d)) if threads > 1 else None
    total = fns[table.dtype](table.data_ptr(), n, d, users.data_ptr(), pos.data_ptr(), neg.data_ptr(), b,
                             None if grad is None else grad.data_ptr(), None if extra is None else extra.data_ptr(),
                             1.0 / b, int(want_grad), threads)
    if total == -1.0:
        raise MemoryError(f"the BPR kernel could not allocate {3 * b} triple ids")
    return table.new_tensor(total / b), grad


def bpr_table_loss_grad(table: Tensor, users: Tensor, pos: Tensor, neg: Tensor, want_grad: bool = True,
                        threads: int | None = None) -> tuple[Tensor, Tensor | None]:
    """``(L, ∂L/∂table)`` of the BPR loss of the rows ``table[users]``, ``table[pos]``, ``table[neg]``.

    ``table``: ``(N, d)`` CPU float32/float64 (read, not changed). ``users``/``pos``/``neg``: ``(b,)`` row ids
    (any integer dtype, duplicates allowed, each in ``[0, N)`` -- :class:`IndexError` otherwise, before any
    work). Returns the scalar loss (float64 sum, in ``table``'s dtype) and the ``(N, d)`` gradient (``None``
    without ``want_grad``). ``threads``: shares of the triples computed at once (default Torch's thread
    count, at most one per 16,384 triples); each share beyond the first needs its own ``(N, d)`` buffer.
    :class:`RuntimeError` where :func:`supports` is false."""
    kernels = _kernels()
    if kernels is None or not supports(table):
        raise RuntimeError(f"no compiled BPR kernel for a {table.dtype} table on {table.device}")
    tab = table.detach().contiguous()
    n, b = tab.shape[0], int(users.numel())
    ids = [t.detach().reshape(-1).to(device="cpu", dtype=torch.int64).contiguous() for t in (users, pos, neg)]
    for name, a in zip(("users", "pos", "neg"), ids):
        if a.numel() and (int(a.min()) < 0 or int(a.max()) >= n):
            raise IndexError(f"{name} has a row id outside [0, {n}): {int(a.min())}..{int(a.max())}")
    if b == 0:
        return table.new_tensor(float("nan")), (torch.zeros_like(tab) if want_grad else None)
    shares = max(1, min(int(threads or torch.get_num_threads()), b // 16_384 or 1))
    return _run(kernels, tab, *ids, want_grad, shares)
