"""LightGCN in history-only mode (``--model lightgcn --opt user_repr=history``): a user is represented
only by their history, as a new user is, so that every explanation of a score over the history is an
exact counterfactual.

With the trained layers ``E^(k) = Â^k E^(0)`` (:class:`~whyrec.models.lightgcn.LightGCN`) every item
``i`` sends the *message* ``g_i = Σ_{k=0}^{K-1} α_{k+1} e_i^(k)`` ``(d,)``, and a user with history ``H``
and degree ``d_u`` is::

    e_u(H) = Σ_{i ∈ H} g_i / sqrt(d_u d_i)          ŷ(u, t) = e_u(H) · e_t,   e_t = Σ_{k=0}^{K} α_k e_t^(k)

``d_i`` is the item's training degree; ``d_u`` the user's training degree (a new user: ``|H|``), both held
fixed when items are removed from ``H`` (as history Integrated Gradients holds the normalization fixed).
For a training user's own history this is LightGCN's final embedding **without its free layer-0 term**:
``e_u(H_u) = Σ_{k≥1} α_k e_u^(k) = e_u − α_0 e_u^(0)``, so the "learned profile" no history explanation
can name is gone and the score of an empty history is 0.

The score is linear in the history, so (capabilities)

* ``RESCORE``: :meth:`score_histories` re-scores any changed history exactly (items and degrees fixed);
* ``EXACT_HISTORY``: :meth:`history_contributions` gives ``c(j, t) = g_j · e_t / sqrt(d_u d_j)``, which sum to
  the score, and removing ``j`` lowers it by exactly ``c(j, t)`` -- the explanation *is* the counterfactual;
* ``DOT`` and ``FOLD_IN`` (a new user: :meth:`fold_in` is the same rule with ``d_u = |L|``).

Training in this mode (the BPR loss sees ``e_u − α_0 e_u^(0)``) keeps the user layer-0 rows: they still
reach the items through the propagation. Nothing of :class:`LightGCN`'s propagation is changed.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import LongTensor, Tensor

from ..graph import node_degrees
from .base import CUDA, DOT, EXACT_HISTORY, FOLD_IN, RESCORE, BatchEmbeddings, binary_rows
from .lightgcn import LightGCN

__all__ = ["LightGCNHistory", "USER_REPRS"]

#: ``--opt user_repr=``: ``free`` (LightGCN's own layer-0 user embeddings) or ``history`` (this module)
USER_REPRS = ("free", "history")


class LightGCNHistory(LightGCN):
    """:class:`LightGCN` scoring every user from their history alone (module docstring)."""

    capabilities = frozenset({DOT, FOLD_IN, RESCORE, EXACT_HISTORY, CUDA})

    def _drop_user0(self, users: Tensor, users0: Tensor) -> Tensor:
        return users - self.alphas[0] * users0

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """``e_u(H_u)`` ``(n_users, d)`` and LightGCN's item embeddings ``(n_items, d)``."""
        users, items = super().embeddings()
        if self.training and torch.is_grad_enabled():
            return self._drop_user0(users, self.user_emb.weight), items
        with torch.no_grad():  # outside training: detached, as LightGCN's cached embeddings are
            return self._drop_user0(users, self.user_emb.weight), items

    def batch_embeddings(self, users: LongTensor, pos: LongTensor, neg: LongTensor) -> BatchEmbeddings:
        b = super().batch_embeddings(users, pos, neg)
        return b.replace(users=self._drop_user0(b.users, b.users0))

    def messages(self) -> Tensor:
        """``g`` ``(n_items, d)``: ``g_i = Σ_{k<K} α_{k+1} e_i^(k)`` (no autograd)."""
        with torch.no_grad():
            layers = self.layer_embeddings()
            g = torch.zeros_like(layers[0][self.n_users:])
            for k in range(self.n_layers):
                g = g + self.alphas[k + 1] * layers[k][self.n_users:]
        return g

    def _item_scale(self) -> Tensor:
        """``1 / sqrt(d_i)`` ``(n_items,)`` (an item without training edges: degree 1)."""
        d = node_degrees(self._require_graph())[self.n_users:].clamp(min=1)
        return d.to(self.user_emb.weight.dtype).rsqrt()

    def score_histories(self, histories: sp.spmatrix, users: Optional[LongTensor] = None) -> Tensor:
        """Scores ``(b, n_items)`` of the binary rows ``histories`` ``(b, n_items)``: ``e_u(H) · e_t`` with
        ``d_u`` = the training degree of ``users[r]`` (given) or the row's size (a new user)."""
        h = binary_rows(histories, self.n_items)
        if users is not None:
            d_u = node_degrees(self._require_graph())[:self.n_users][torch.as_tensor(users, dtype=torch.long)]
        else:
            d_u = torch.as_tensor(np.diff(h.indptr))
        with torch.no_grad():
            _, items = super().embeddings()
            g = self.messages() * self._item_scale().unsqueeze(1)
            e = torch.from_numpy(np.asarray(h @ g.double().cpu().numpy())).to(g)  # (b, d): Σ_{i∈H} g_i / sqrt(d_i)
            e = e * d_u.clamp(min=1).to(g).rsqrt().unsqueeze(1)
            return e @ items.T

    def history_contributions(self, history, items) -> Tensor:
        """``c(j, t)`` ``(len(history), len(items))`` for a user whose history is ``history`` (``d_u =
        |history|``: a training user's own history, or a new user's): they sum to the score."""
        history = torch.as_tensor(np.asarray(history, dtype=np.int64).reshape(-1))
        items_t = torch.as_tensor(np.asarray(items, dtype=np.int64).reshape(-1))
        if history.numel() == 0:
            return torch.zeros(0, len(items_t))
        with torch.no_grad():
            _, item_emb = super().embeddings()
            g = self.messages()[history] * self._item_scale()[history].unsqueeze(1)
            return (g @ item_emb[items_t].T) / float(np.sqrt(history.numel()))

    def fold_in(self, liked_items, user_layer0: Optional[Tensor] = None) -> Tensor:
        """A new user's ``e_u(L)`` ``(d,)`` (``d_u = |L|``; ``user_layer0`` is not used: there is none)."""
        items = self._liked(liked_items)
        with torch.no_grad():
            g = self.messages()[items] * self._item_scale()[items].unsqueeze(1)
            return g.sum(0) / float(np.sqrt(items.numel()))
