"""The BPR loss of a final table and its gradient, on the CPU (C: ``bpr.c``).

For triple ``t = (u, i, j)`` with margin ``x_t = e_u · (e_i − e_j)`` and ``w_t = −σ(−x_t) / b``::

    L = (1/b) Σ_t softplus(−x_t)
    ∂L/∂e_u += w_t (e_i − e_j),   ∂L/∂e_i += w_t e_u,   ∂L/∂e_j −= w_t e_u

The margins are one compiled pass over the triples that only reads the table (no ``(b, d)`` gathers),
shared among Torch's OpenMP threads (:mod:`whyrec.native`: compiled once per machine; where it cannot be,
:func:`supports` is false and :func:`~whyrec.train.losses.bpr_loss_table` takes its Torch pass). The
gradient is then *pulled*, not scattered: ``∂L/∂table = M · table`` with ``M`` the ``(N, N)`` sparse matrix
of the four entries ``(u, i, w_t)``, ``(u, j, −w_t)``, ``(i, u, w_t)``, ``(j, u, −w_t)`` of every triple (its
rows written by the same pass, a counting sort), one row-parallel product (:func:`whyrec.spmm.addmm`) that
writes each row of the gradient once, every row's sum in triple order: the same bits on any number of
threads. Until 2026-12-04 the kernel added into the rows (Torch's CPU ``index_add_`` before it is an
element-by-element ``scatter_add_``), each thread into its own ``(N, d)`` buffer that was zeroed and summed;
numba's before 2026-12-03 (``docs/results.md``).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
from torch import Tensor

from ..native import function
from ..spmm import addmm as native_addmm

__all__ = ["bpr_table_loss_grad", "supports", "MAX_TRIPLES"]

#: most triples the kernel takes: its gradient's sparse matrix has 4 entries a triple, indexed by int32
MAX_TRIPLES = (2**31 - 1) // 4

_NAMES = {torch.float32: "whyrec_bpr_float", torch.float64: "whyrec_bpr_double"}


@functools.cache
def _kernels():
    """``({dtype: fn}, openmp)`` of the compiled ``bpr.c``, checked against the Torch pass on a small problem;
    ``None`` where it cannot be compiled or disagrees."""
    found = {dtype: function(Path(__file__).with_name("bpr.c"), name, "pqqpppqpppdi", ctypes.c_double)
             for dtype, name in _NAMES.items()}
    if any(f is None for f in found.values()):
        return None
    kernels = ({dtype: fn for dtype, (fn, _) in found.items()}, found[torch.float32][1])
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
    crow = torch.empty(n + 1, dtype=torch.int32) if want_grad else None
    col = torch.empty(4 * b, dtype=torch.int32) if want_grad else None
    val = table.new_empty(4 * b) if want_grad else None
    total = fns[table.dtype](table.data_ptr(), n, d, users.data_ptr(), pos.data_ptr(), neg.data_ptr(), b,
                             *(None if a is None else a.data_ptr() for a in (crow, col, val)), 1.0 / b,
                             max(1, threads) if openmp else 1)
    if total == -1.0:
        raise MemoryError(f"the BPR kernel could not allocate the weights of {b} triples and its row counts")
    if not want_grad:
        return table.new_tensor(total / b), None
    m = torch.sparse_csr_tensor(crow, col, val, (n, n), check_invariants=False)
    grad = native_addmm(m, table)  # the compiled row-parallel product (float32); Torch's otherwise
    return table.new_tensor(total / b), (torch.sparse.mm(m, table) if grad is None else grad)


def bpr_table_loss_grad(table: Tensor, users: Tensor, pos: Tensor, neg: Tensor, want_grad: bool = True,
                        threads: int | None = None) -> tuple[Tensor, Tensor | None]:
    """``(L, ∂L/∂table)`` of the BPR loss of the rows ``table[users]``, ``table[pos]``, ``table[neg]``.

    ``table``: ``(N, d)`` CPU float32/float64 (read, not changed). ``users``/``pos``/``neg``: ``(b,)`` row ids
    (any integer dtype, duplicates allowed, each in ``[0, N)`` -- :class:`IndexError` otherwise, before any
    work; ``4 b < 2³¹``). Returns the scalar loss (float64 sum, in ``table``'s dtype) and the ``(N, d)``
    gradient (``None`` without ``want_grad``). ``threads``: shares of the margins' pass computed at once
    (default Torch's thread count, at most one per 16,384 triples); the gradient's product runs on Torch's
    threads. :class:`RuntimeError` where :func:`supports` is false."""
    kernels = _kernels()
    if kernels is None or not supports(table):
        raise RuntimeError(f"no compiled BPR kernel for a {table.dtype} table on {table.device}")
    tab = table.detach().contiguous()
    n, b = tab.shape[0], int(users.numel())
    if b > MAX_TRIPLES or n >= 2**31:
        raise ValueError(f"the BPR kernel takes at most {MAX_TRIPLES} triples and fewer than 2^31 rows, got {b} and {n}")
    ids = [t.detach().reshape(-1).to(device="cpu", dtype=torch.int64).contiguous() for t in (users, pos, neg)]
    for name, a in zip(("users", "pos", "neg"), ids):
        if a.numel() and (int(a.min()) < 0 or int(a.max()) >= n):
            raise IndexError(f"{name} has a row id outside [0, {n}): {int(a.min())}..{int(a.max())}")
    if b == 0:
        return table.new_tensor(float("nan")), (torch.zeros_like(tab) if want_grad else None)
    shares = max(1, min(int(threads or torch.get_num_threads()), b // 16_384 or 1))
    return _run(kernels, tab, *ids, want_grad, shares)
