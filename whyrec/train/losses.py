"""BPR objective of LightGCN (paper Eq. 15) as computed by the authors' code.

For a batch of ``B`` triples ``(u, i, j)`` (``i`` a training positive of
``u``, ``j`` a sampled negative)::

    L_BPR = (1/B) Σ -ln σ(ŷ_ui - ŷ_uj) = mean softplus(ŷ_uj - ŷ_ui)
    L_reg = λ · ½ (‖E_u^(0)‖² + ‖E_i^(0)‖² + ‖E_j^(0)‖²) / B

where the norms are over the batch rows of the LAYER-0 embeddings (squared
Frobenius norms), as in LightGCN-PyTorch's ``bpr_loss``/``stageOne``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["bpr_loss", "l2_reg", "batch_l2"]


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """``mean(-log σ(pos - neg))`` (numerically stable softplus form); ``(b,)``,
    ``(b,)`` -> scalar."""
    return F.softplus(neg_scores - pos_scores).mean()


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
    return reg * 0.5 * be.sq_norm(*parts) / float(be.users.shape[0])
