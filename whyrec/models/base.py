"""The interface shared by every whyrec recommender.

All models are plain :class:`torch.nn.Module` s over ``n_users`` users and
``n_items`` items (0-based ids). The CLI, the evaluator, the explainers and the
web service only rely on:

* :meth:`Recommender.embeddings` -- final ``(n_users, d)``, ``(n_items, d)``;
* :meth:`Recommender.score_users` -- ``(b, n_items)`` scores, no masking;
* :meth:`Recommender.forward` -- ``(b,)`` scores of ``(user, item)`` pairs;

and the training loop additionally on :meth:`Recommender.batch_embeddings`
(final and layer-0 rows of a BPR batch) and :attr:`Recommender.trainable`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import LongTensor, Tensor, nn

from ..graph import weighted_sq_norm

__all__ = ["Recommender", "BatchEmbeddings", "binary_rows", "can", "DOT", "GRAPH", "RESCORE", "FOLD_IN", "NEW_ROW",
           "EXACT_HISTORY", "INTRINSIC", "FEATURES", "CUDA"]

# What a model can do, declared in its class's ``capabilities`` (callers ask ``model.can(X)`` instead of
# probing for methods):
DOT = "dot"                  #: score(u, i) = users[u] · items[i] of :meth:`Recommender.embeddings`
GRAPH = "graph"              #: LightGCN-type propagation over a normalized adjacency from layer-0 rows
RESCORE = "rescore"          #: ``score_histories(histories, users)``: scores from a changed history, exactly
FOLD_IN = "fold-in"          #: ``fold_in(items)``: a new user's vector by the model's own rule
NEW_ROW = "new-row"          #: ``score_items(items)``: a new user scored exactly as a new interaction row
EXACT_HISTORY = "exact-history"  #: ``history_contributions(history, items)``: the score's exact decomposition
INTRINSIC = "intrinsic"      #: ``importance(user, item)``: the model's own importances (seed 002's model)
FEATURES = "features"        #: ``projections()``, ``x_user``/``x_item``: layer-0 rows from side features
CUDA = "cuda"                #: computes on a CUDA device: everything it scores with moves with ``.to(device)``


def binary_rows(histories, n_items: int):
    """``histories`` (any scipy sparse ``(b, n_items)``) as a float32 CSR copy whose every stored non-zero is 1
    (a duplicate counts once); :class:`ValueError` for another width. What ``score_histories`` reads."""
    h = sp.csr_matrix(histories, dtype=np.float32, copy=True)
    if h.ndim != 2 or h.shape[1] != n_items:
        raise ValueError(f"histories must have {n_items} columns, got shape {h.shape}")
    h.sum_duplicates()
    h.eliminate_zeros()
    h.data[:] = 1.0
    return h


def can(model, capability: str) -> bool:
    """Whether ``model`` declares ``capability`` (``False`` for any object that declares nothing). A class
    declares ``capabilities``; a model whose abilities depend on its configuration (side features on
    or off) may override them per instance."""
    return capability in getattr(model, "capabilities", frozenset())


class _WeightedSqNorm(torch.autograd.Function):
    """``Σ_n w_n ‖t_n‖²`` for a table ``t (N, d)`` and weights ``w (N,)`` (no gradient for ``w``): one pass
    forward (the row norms), one backward (``∂/∂t = 2 g w_n t_n``), where autograd's ``w @ t.square().sum(1)``
    makes four (the square, its backward's power, two products)."""

    @staticmethod
    def forward(ctx, table: Tensor, weight: Tensor) -> Tensor:  # noqa: D401
        ctx.save_for_backward(table, weight)
        return weighted_sq_norm(table, weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        table, weight = ctx.saved_tensors
        return table * (weight * (2 * grad)).unsqueeze(1), None


@dataclass(frozen=True)
class BatchEmbeddings:
    """Rows needed by the BPR objective for a batch of ``b`` triples
    ``(u, i, j)`` (user, positive item, negative item).

    ``users``/``pos``/``neg``: final embeddings ``(b, d)`` (scores are their
    dot products). A model gives them as the three blocks (:meth:`from_rows`,
    :meth:`from_table`) or as its whole final table ``(N, d)`` with each part's row
    ids in it (:meth:`from_final`): a large batch's objective then never holds the
    ``(b, d)`` rows at once (:func:`whyrec.train.losses.bpr_loss_table` gathers them in
    chunks), and ``users``/``pos``/``neg`` are gathered only when asked for. The
    layer-0 (trainable) rows the L2 term needs come either as the three ``(b, d)``
    blocks or as the whole layer-0 table ``(N, d)`` plus each part's row ids, so that a
    large batch needs no gather: :meth:`sq_norm` is then ``Σ_n count_n ‖E⁰_n‖²``, one
    dense pass whose gradient needs no scatter. ``users0``/``pos0``/``neg0`` give the
    rows either way.
    """

    rows: Optional[tuple]  # the (users, pos, neg) final blocks (b, d) each; None until gathered from ``final``
    layer0: tuple  # (users0, pos0, neg0) blocks, or (table,)
    ids0: Optional[tuple] = None  # with a layer-0 table: the (b,) row ids of users, pos, neg in it
    final: Optional[Tensor] = None  # from_final: the (N, d) final table the rows come from
    final_ids: Optional[tuple] = None  # from_final: the (b,) row ids of users, pos, neg in ``final``
    sq_all: Optional[Tensor] = None  # sq_norm() of all three parts where the model computed it with the final table

    PARTS = ("users", "pos", "neg")

    @classmethod
    def from_rows(cls, users: Tensor, pos: Tensor, neg: Tensor,
                  users0: Tensor, pos0: Tensor, neg0: Tensor) -> "BatchEmbeddings":
        return cls((users, pos, neg), (users0, pos0, neg0))

    @classmethod
    def from_table(cls, users: Tensor, pos: Tensor, neg: Tensor, table: Tensor,
                   ids: tuple) -> "BatchEmbeddings":
        return cls((users, pos, neg), (table,), tuple(ids))

    @classmethod
    def from_final(cls, final: Tensor, final_ids: tuple, table: Tensor, ids: tuple,
                   sq_all: Optional[Tensor] = None) -> "BatchEmbeddings":
        """Final rows ``final[final_ids[k]]`` (not gathered) and layer-0 rows ``table[ids[k]]``, ``k`` =
        users, pos, neg; ``sq_all``: :meth:`sq_norm` of all three, where the model computed it in the same
        autograd node as ``final`` (:class:`whyrec.graph.LightGCNLocalStep`)."""
        return cls(None, (table,), tuple(ids), final, tuple(final_ids), sq_all)

    def final_table(self) -> Optional[tuple]:
        """``(final (N, d), (user ids, pos ids, neg ids))`` while the final rows have not been gathered,
        else ``None``: what a loss that gathers them in chunks reads."""
        return (self.final, self.final_ids) if self.rows is None else None

    def _final_rows(self) -> tuple:
        if self.rows is None:  # gathered once, on the first ask
            object.__setattr__(self, "rows", tuple(self.final.index_select(0, ids) for ids in self.final_ids))
        return self.rows

    @property
    def size(self) -> int:
        """``b``, the number of triples."""
        return int((self.final_ids if self.rows is None else self.rows)[0].shape[0])

    @property
    def users(self) -> Tensor:
        return self._final_rows()[0]

    @property
    def pos(self) -> Tensor:
        return self._final_rows()[1]

    @property
    def neg(self) -> Tensor:
        return self._final_rows()[2]

    def _rows0(self, k: int) -> Tensor:
        return self.layer0[0].index_select(0, self.ids0[k]) if self.ids0 is not None else self.layer0[k]

    @property
    def users0(self) -> Tensor:
        return self._rows0(0)

    @property
    def pos0(self) -> Tensor:
        return self._rows0(1)

    @property
    def neg0(self) -> Tensor:
        return self._rows0(2)

    def sq_norm(self, *parts: str) -> Tensor:
        """``Σ ‖e⁰‖²`` over the layer-0 rows of ``parts`` (default: all three), each row
        counted as often as it occurs in the batch; a 0-d tensor with autograd."""
        parts = parts or self.PARTS
        if self.sq_all is not None and sorted(parts) == sorted(self.PARTS):
            return self.sq_all
        ks = [self.PARTS.index(p) for p in parts]
        if self.ids0 is None:
            return sum(self.layer0[k].square().sum() for k in ks)
        table = self.layer0[0]
        count = torch.bincount(torch.cat([self.ids0[k] for k in ks]), minlength=table.shape[0]).to(table.dtype)
        return _WeightedSqNorm.apply(table, count)

    def replace(self, **changes: Tensor) -> "BatchEmbeddings":
        """A copy with some of the final rows ``users``/``pos``/``neg`` replaced (the others gathered)."""
        unknown = sorted(set(changes) - set(self.PARTS))
        if unknown:
            raise TypeError(f"BatchEmbeddings.replace takes {', '.join(self.PARTS)}, not {', '.join(unknown)}")
        rows = tuple(changes.get(name, row) for name, row in zip(self.PARTS, self._final_rows()))
        return dataclasses.replace(self, rows=rows, final=None, final_ids=None)


class Recommender(nn.Module):
    """Base class: a scorer ``s(u, i)`` over ``n_users x n_items``."""

    n_users: int
    n_items: int
    #: ``False`` for models without trainable parameters (fit is a no-op).
    trainable: bool = True
    #: what this model can do (the constants above)
    capabilities: frozenset = frozenset()

    def can(self, capability: str) -> bool:
        """Whether this model declares ``capability`` (:data:`DOT`, :data:`RESCORE`, ...)."""
        return can(self, capability)

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        if n_users <= 0 or n_items <= 0:
            raise ValueError(f"n_users and n_items must be positive, got {n_users}, {n_items}")
        self.n_users = int(n_users)
        self.n_items = int(n_items)

    # -- helpers ------------------------------------------------------------ #
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _ids(self, ids) -> Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long)
        return ids.to(self.device)

    # -- interface ---------------------------------------------------------- #
    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final embeddings ``(n_users, d)``, ``(n_items, d)``; ``score(u, i)
        = users[u] · items[i]``."""
        raise NotImplementedError

    def concept_embeddings(self) -> tuple[Tensor, Tensor]:
        """The user and item vectors concept activation vectors are fitted on: :meth:`embeddings` for a
        dot-product model (:data:`DOT`); models whose score is not a dot product override it."""
        return self.embeddings()

    def score_users(self, users: LongTensor) -> Tensor:
        """Scores of all items for ``users`` ``(b,)`` -> ``(b, n_items)``
        (training items are NOT masked)."""
        u, it = self.embeddings()
        return u[self._ids(users)] @ it.T

    def forward(self, users: LongTensor, items: LongTensor) -> Tensor:
        """Scores of pairs: ``users`` ``(b,)``, ``items`` ``(b,)`` -> ``(b,)``."""
        u, it = self.embeddings()
        return (u[self._ids(users)] * it[self._ids(items)]).sum(-1)

    def weights_version(self) -> tuple:
        """Changes whenever the weights do (in place or replaced): every parameter's in-place version
        and storage. What caches built from a trained model are keyed on."""
        return tuple((p._version, p.data_ptr()) for p in self.parameters())

    def invalidate_cache(self) -> None:
        """Drop whatever was derived from the weights (propagated embeddings, filters); called after
        the weights are replaced (a load, a resume, the end of training). Nothing to drop here."""

    def score_vectors(self, user_vectors: Tensor) -> Tensor:
        """Scores of all items for arbitrary user embeddings ``(b, d)`` or
        ``(d,)`` (e.g. from ``fold_in``) -> ``(b, n_items)`` / ``(n_items,)``."""
        _, it = self.embeddings()
        return user_vectors.to(it.device, it.dtype) @ it.T

    def batch_embeddings(self, users: LongTensor, pos: LongTensor, neg: LongTensor) -> BatchEmbeddings:
        """Final and layer-0 rows for a BPR batch (with autograd)."""
        raise NotImplementedError(f"{type(self).__name__} is not trainable with BPR")

    def extra_repr(self) -> str:
        return f"n_users={self.n_users}, n_items={self.n_items}"
