"""BPR objective of LightGCN (paper Eq. 15) as computed by the authors' code.

For a batch of ``B`` triples ``(u, i, j)`` (``i`` a training positive of
``u``, ``j`` a sampled negative)::

    L_BPR = (1/B) Σ -ln σ(ŷ_ui - ŷ_uj) = mean softplus(ŷ_uj - ŷ_ui)
    L_reg = λ · ½ (‖E_u^(0)‖² + ‖E_i^(0)‖² + ‖E_j^(0)‖²) / B

where the norms are over the batch rows of the LAYER-0 embeddings (squared
Frobenius norms), as in LightGCN-PyTorch's ``bpr_loss``/``stageOne``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .bpr_kernel import MAX_TRIPLES, bpr_table_loss_grad, supports

__all__ = ["bpr_loss", "bpr_loss_table", "l2_reg", "batch_l2", "BPR_CHUNK"]

#: triples per chunk of :func:`bpr_loss_table` (a chunk's three ``(c, d)`` gathers are ~50 MB at d = 64)
BPR_CHUNK = 65_536


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """``mean(-log σ(pos - neg))`` (numerically stable softplus form); ``(b,)``,
    ``(b,)`` -> scalar."""
    return F.softplus(neg_scores - pos_scores).mean()


class _BPRTable(torch.autograd.Function):
    """:func:`bpr_loss_table`: the loss and its gradient in one pass over chunks of triples; the backward
    scales the gradient kept by the forward."""

    @staticmethod
    def forward(ctx, table: Tensor, u: Tensor, i: Tensor, j: Tensor, chunk: int, kernel: bool) -> Tensor:  # noqa: D401
        if kernel:
            loss, ctx.grad_table = bpr_table_loss_grad(table, u, i, j, want_grad=ctx.needs_input_grad[0])
            return loss
        b = u.numel()
        total = table.new_zeros(())
        G = torch.zeros_like(table) if ctx.needs_input_grad[0] else None
        for s in range(0, b, chunk):
            c = slice(s, s + chunk)
            eu = table.index_select(0, u[c])
            d = table.index_select(0, i[c]).sub_(table.index_select(0, j[c]))  # e_i − e_j
            x = (eu * d).sum(1)
            total += F.softplus(-x).sum()
            if G is not None:
                w = torch.sigmoid(-x).mul_(-1.0 / b)[:, None]  # dL/dx_t
                G.index_add_(0, u[c], d.mul_(w))
                eu.mul_(w)
                G.index_add_(0, i[c], eu)
                G.index_add_(0, j[c], eu, alpha=-1.0)
        ctx.grad_table = G
        return total / b

    @staticmethod
    def backward(ctx, grad: Tensor):
        G = ctx.grad_table  # kept (not scaled in place): a second backward through the graph gets it again
        return (G if bool(grad == 1) else G * grad), None, None, None, None, None


def bpr_loss_table(table: Tensor, users: Tensor, pos: Tensor, neg: Tensor, chunk: int = BPR_CHUNK,
                   kernel: bool | None = None) -> Tensor:
    """:func:`bpr_loss` of the rows ``table[users]``, ``table[pos]``, ``table[neg]`` of a final table ``(N, d)``
    (row ids ``(b,)`` each, duplicates allowed), without holding the ``(b, d)`` rows: with the margin
    ``x_t = e_u · (e_i − e_j)`` of triple ``t``, ``L = (1/b) Σ_t softplus(−x_t)`` and ``dL/dx_t = −σ(−x_t)/b``, so

        ∂L/∂e_u += dL/dx_t (e_i − e_j),   ∂L/∂e_i += dL/dx_t e_u,   ∂L/∂e_j −= dL/dx_t e_u

    computed ``chunk`` triples at a time, the gradient while each chunk's rows are at hand: the forward
    gathers every row once and keeps ``∂L/∂table`` ``(N, d)``, the backward scales it by the upstream
    gradient (the loss is a scalar, its gradient linear in that). Memory beyond the table: one ``(N, d)``
    gradient and ``O(chunk · d)`` instead of autograd's several ``(b, d)`` blocks. A scalar with autograd
    to ``table``.

    ``kernel``: on a CPU table (default ``None``: wherever :func:`whyrec.train.bpr_kernel.supports` it) the
    same sums run as one compiled pass over the triples (:func:`~whyrec.train.bpr_kernel.bpr_table_loss_grad`,
    each triple's rows read once, its gradient added into the rows directly, the triples shared among Torch's
    threads); ``False``: the chunked Torch pass (any device)."""
    if not users.numel() == pos.numel() == neg.numel():
        raise ValueError(f"users, pos and neg must be equally long, got {users.numel()}, {pos.numel()}, {neg.numel()}")
    if kernel is None:
        kernel = supports(table) and users.numel() <= MAX_TRIPLES
    elif kernel and not supports(table):
        raise ValueError(f"the compiled BPR pass needs a CPU float32/float64 table and a C compiler at first use "
                         f"(whyrec.native), got {table.dtype} on {table.device}")
    return _BPRTable.apply(table, users, pos, neg, max(1, int(chunk)), bool(kernel))


def l2_reg(reg: float, batch_size: int, *layer0_rows: Tensor) -> Tensor:
    """``reg · ½ Σ_t ‖t‖² / batch_size`` over the given layer-0 row blocks."""
    if not layer0_rows:
        raise ValueError("l2_reg needs at least one tensor")
    sq = sum(t.pow(2).sum() for t in layer0_rows)
    return reg * 0.5 * sq / float(batch_size)


def batch_l2(reg: float, be, *parts: str) -> Tensor:
    """:func:`l2_reg` of a :class:`~whyrec.models.base.BatchEmbeddings`' layer-0 rows of ``parts``
    (default all three: users, pos, neg), over its ``b`` triples, without gathering the rows when
    the model gave its whole layer-0 table (:meth:`BatchEmbeddings.sq_norm`)."""
    return reg * 0.5 * be.sq_norm(*parts) / float(be.size)
