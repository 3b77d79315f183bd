"""The BPR loss of a final table and its gradient in one pass over the triples, on the CPU (numba).

For triple ``t = (u, i, j)`` with margin ``x_t = e_u · (e_i − e_j)`` and ``w_t = −σ(−x_t) / b``::

    L = (1/b) Σ_t softplus(−x_t)
    ∂L/∂e_u += w_t (e_i − e_j),   ∂L/∂e_i += w_t e_u,   ∂L/∂e_j −= w_t e_u

Each triple reads its three rows once and adds into three rows of the gradient while they are in cache:
no ``(b, d)`` gathers, and no scatter through ``index_add_`` (Torch's CPU ``index_add_`` over rows is an
element-by-element ``scatter_add_``: on Gowalla's table, ~2/3 of :func:`whyrec.train.losses.bpr_loss_table`'s
chunked Torch pass). The triples are split into one contiguous share per thread, each thread adding into
its own ``(N, d)`` gradient (the first thread into the result), summed at the end: the same result for
the same thread count, whatever the scheduling. The threads are plain Python threads running the kernel
without the GIL (numba's ``nogil``), so no numba threading layer is involved (a training step may be
called from any thread).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from ..spmm import thread_pool

__all__ = ["bpr_table_loss_grad", "supports"]


@functools.cache
def _kernels():
    """The compiled functions ``(by_user, block)`` of :mod:`whyrec.train._bpr_numba`, imported at the first use
    (importing numba takes ~0.7 s, which nothing that does not train on the CPU should pay; ``cache=True`` keeps
    the machine code for the next process). ``block`` is the prefetching kernel where it compiles and agrees
    with the plain one on a small problem, else the plain one (an LLVM without the ``llvm.prefetch.p0i8``
    intrinsic's name)."""
    from . import _bpr_numba as nb

    rng = np.random.default_rng(0)
    table = rng.standard_normal((8, 4)).astype(np.float32)
    ids = [rng.integers(0, 8, 32) for _ in range(3)]
    try:
        got, want = (np.zeros_like(table), np.zeros_like(table))
        a = nb.block_prefetch(table, *ids, got, 0, 32, 1 / 32, True)
        b = nb.block(table, *ids, want, 0, 32, 1 / 32, True)
        if a == b and np.array_equal(got, want):
            return nb.by_user, nb.block_prefetch
    except Exception:  # pragma: no cover - an LLVM that lacks the intrinsic
        pass
    return nb.by_user, nb.block  # pragma: no cover


def supports(table: Tensor) -> bool:
    """Whether :func:`bpr_table_loss_grad` computes for ``table``: a CPU float32/float64 table."""
    return table.device.type == "cpu" and table.dtype in (torch.float32, torch.float64) and table.dim() == 2


def bpr_table_loss_grad(table: Tensor, users: Tensor, pos: Tensor, neg: Tensor, want_grad: bool = True,
                        threads: int | None = None) -> tuple[Tensor, Tensor | None]:
    """``(L, ∂L/∂table)`` of the BPR loss of the rows ``table[users]``, ``table[pos]``, ``table[neg]``.

    ``table``: ``(N, d)`` CPU float32/float64 (read, not changed). ``users``/``pos``/``neg``: ``(b,)`` row ids
    (any integer dtype, duplicates allowed, each in ``[0, N)`` -- :class:`IndexError` otherwise, before any
    work). Returns the scalar loss (float64 sum, in ``table``'s dtype) and the ``(N, d)`` gradient (``None``
    without ``want_grad``). ``threads``: shares of the triples computed at once (default Torch's thread
    count, at most one per 16,384 triples); each share beyond the first needs its own ``(N, d)`` buffer."""
    tab = table.detach().contiguous().numpy()
    n, b = tab.shape[0], int(users.numel())
    ids = [np.ascontiguousarray(t.detach().reshape(-1).cpu().numpy(), dtype=np.int64) for t in (users, pos, neg)]
    for name, a in zip(("users", "pos", "neg"), ids):
        if a.size and (a.min() < 0 or a.max() >= n):
            raise IndexError(f"{name} has a row id outside [0, {n}): {int(a.min())}..{int(a.max())}")
    grad = np.zeros_like(tab) if want_grad else np.zeros((1, tab.shape[1]), dtype=tab.dtype)
    if b == 0:
        return table.new_tensor(float("nan")), (torch.from_numpy(grad) if want_grad else None)
    shares = max(1, min(int(threads or torch.get_num_threads()), b // 16_384 or 1))
    bounds = np.linspace(0, b, shares + 1).astype(np.int64)
    scale = 1.0 / b
    by_user, block = _kernels()
    ids = by_user(*ids, n)  # a user's triples one after another: their user row stays in cache
    if shares == 1:
        total = block(tab, *ids, grad, 0, b, scale, want_grad)
    else:
        bufs = [grad] + [np.zeros_like(grad) for _ in range(shares - 1)]
        futures = [thread_pool(shares).submit(block, tab, *ids, bufs[s], int(bounds[s]), int(bounds[s + 1]), scale,
                                        want_grad) for s in range(shares)]
        total = sum(f.result() for f in futures)
        for extra in bufs[1:]:
            np.add(grad, extra, out=grad)
    loss = table.new_tensor(total / b)
    return loss, (torch.from_numpy(grad) if want_grad else None)
