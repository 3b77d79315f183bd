"""Concept-alignment regularizer (seed 004's open question): reward agreement between users'
genre sensitivities ``S_C(u) = e_u · v_C`` and their actual, standardized genre preferences.

Design
------
*Preferences* (from the TRAINING interactions only, so nothing of validation/test leaks):
``share[u, C]`` = share of user u's training positives that are movies of genre C; ``Z[:, C]`` is
that column standardized over users (mean 0, std 1; users without training positives get 0).
Saved in the run's ``extras.npz`` (``align_genres`` ``(n_items, G)`` uint8, ``align_pref``
``(n_users, G)`` float32, ``align_genre_names`` ``(G,)``) by :func:`alignment_extras`.

*CAV directions*: ``V`` ``(G, d)``, one unit vector per genre, exactly the CAV of
:mod:`whyrec.explain.concepts` (class-balanced logistic regression of the genre's items vs all
other items on the current *final* item embeddings). They are re-fitted with scikit-learn every
``align_refit`` epochs (at the first batch of the epoch) and held constant in between, like a
target network: gradients do not flow through the CAV fit.

*Loss*: for a BPR batch with final user rows ``E_b`` ``(b, d)`` (users repeat as often as they
are sampled)::

    S_b = E_b @ V^T                                   (b, G)
    L_align = - (1/G) Σ_C  pearson_b(S_b[:, C], Z[u_b, C])
    loss    = BPR + L2 + align_weight · L_align

i.e. the mean over genres of the Pearson correlation across the batch's users between
sensitivity and standardized preference -- the agreement measured by ``whyrec concepts``
(``correlation_share``), made differentiable. Correlation is invariant to the scale of ``S``,
so the term cannot be gamed by inflating embedding norms. Through LightGCN's propagation the
gradient reaches both user and item layer-0 embeddings. ``--opt align_weight=W`` (default 0.1;
0 gives plain LightGCN), ``--opt align_refit=K`` (epochs between CAV re-fits, default 1).

How it plugs in
---------------
``--model lightgcn-aligned`` is a plain :class:`~whyrec.models.LightGCN` trained with the
:class:`Alignment` objective (:class:`whyrec.train.loop.BPR` plus the term above) on the common
:class:`~whyrec.train.loop.Trainer`; the run's weights and every later use (evaluation, a loaded
run, explanations) are LightGCN's. ``curves.csv`` gets the ``align`` column (mean ``L_align`` per
epoch).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .loop import BPR

__all__ = ["Alignment", "alignment_extras", "standardized_preferences", "batch_alignment_loss",
           "DEFAULT_ALIGN_WEIGHT", "DEFAULT_ALIGN_REFIT"]

DEFAULT_ALIGN_WEIGHT = 0.1
DEFAULT_ALIGN_REFIT = 1


def standardized_preferences(train_users: np.ndarray, train_items: np.ndarray, multi_hot: np.ndarray,
                             n_users: int) -> np.ndarray:
    """``(n_users, G)`` float32: each user's share of training positives per genre, z-scored per genre
    over users (users without training positives: 0)."""
    import scipy.sparse as sp

    T = sp.csr_matrix((np.ones(len(train_users)), (train_users, train_items)),
                      shape=(n_users, multi_hot.shape[0]))
    T.sum_duplicates()
    T.data[:] = 1.0
    counts = np.asarray((T @ sp.csr_matrix(multi_hot.astype(np.float64))).todense())
    tot = np.asarray(T.sum(1)).ravel()
    has = tot > 0
    share = np.zeros_like(counts)
    share[has] = counts[has] / tot[has, None]
    mu = share[has].mean(0)
    sd = share[has].std(0)
    z = np.where(has[:, None], (share - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    return z.astype(np.float32)


def alignment_extras(data, train_index: np.ndarray) -> dict:
    """The arrays the regularizer needs (saved in ``extras.npz``), from training interactions only.

    Genres with fewer than ``DEFAULT_MIN_ITEMS`` items (and ML-100k's ``unknown``) are left out.
    """
    from ..explain.concepts import ConceptError, genre_matrix, select_genres

    try:
        M, names = genre_matrix(data.item_genres, source=f"dataset {data.name}")
    except ConceptError as err:
        raise ConceptError(f"--model lightgcn-aligned needs item genres: {err}") from None
    cols, _ = select_genres(M, names)
    M, names = M[:, cols], [names[j] for j in cols]
    idx = np.asarray(train_index)
    pref = standardized_preferences(data.users[idx], data.items[idx], M, data.n_users)
    return {"align_genres": M.astype(np.uint8), "align_pref": pref,
            "align_genre_names": np.asarray(names, dtype=str)}


def _pearson_columns(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each column pair of ``x``, ``y`` ``(b, G)`` -> ``(G,)``."""
    xc = x - x.mean(0, keepdim=True)
    yc = y - y.mean(0, keepdim=True)
    return (xc * yc).sum(0) / torch.sqrt((xc.pow(2).sum(0) * yc.pow(2).sum(0)).clamp_min(eps))


def batch_alignment_loss(user_rows: Tensor, cavs: Tensor, pref_rows: Tensor) -> Tensor:
    """``-mean_C pearson(user_rows @ cavs^T, pref_rows)``: ``user_rows`` ``(b, d)``, ``cavs`` ``(G, d)``,
    ``pref_rows`` ``(b, G)`` -> scalar."""
    return -_pearson_columns(user_rows @ cavs.T, pref_rows).mean()


def fit_cav_directions(item_embeddings: np.ndarray, multi_hot: np.ndarray, seed: int = 0) -> np.ndarray:
    """Unit CAVs ``(G, d)`` on ``(n_items, d)`` embeddings (same classifier as the explainer, no hold-out)."""
    from ..explain.concepts import _classifier

    X = np.asarray(item_embeddings, dtype=np.float64)
    s = float(X.std()) or 1.0
    V = np.zeros((multi_hot.shape[1], X.shape[1]))
    for j in range(multi_hot.shape[1]):
        w = _classifier(seed, 1.0, 1000).fit(X / s, multi_hot[:, j].astype(bool)).coef_[0]
        V[j] = w / max(np.linalg.norm(w), 1e-300)
    return V


class Alignment(BPR):
    """BPR + ``weight · L_align`` (module docstring) as one objective.

    ``genres`` ``(n_items, G)`` bool, ``pref`` ``(n_users, G)`` standardized preferences (the
    ``align_*`` extras); the CAVs are re-fitted on the current final item embeddings at the first
    batch of every ``refit``-th epoch (1, 1 + refit, ...). Rows log ``bpr``, ``reg``, ``align``
    (mean ``L_align`` of the epoch, unweighted; NaN when ``weight`` is 0) and ``loss`` (the sum
    the optimizer minimises, ``bpr + reg + weight · align``).
    """

    def __init__(self, genres: np.ndarray, pref: np.ndarray, weight: float = DEFAULT_ALIGN_WEIGHT,
                 refit: int = DEFAULT_ALIGN_REFIT):
        self.genres = np.asarray(genres, dtype=bool)
        self.pref_np = np.asarray(pref, dtype=np.float32)
        self.weight, self.refit = float(weight), max(1, int(refit))
        self.cavs: Optional[Tensor] = None
        self.refits, self.refit_seconds = 0, 0.0

    def setup(self, model, train_csr, config, device) -> None:
        super().setup(model, train_csr, config, device)
        self.pref = torch.as_tensor(self.pref_np, device=device)

    def epoch(self, epoch: int) -> tuple:
        tensors = super().epoch(epoch)
        if self.weight and ((epoch - 1) % self.refit == 0 or self.cavs is None):
            self._refit()
        self.log: list = []
        return tensors

    def _refit(self) -> None:
        """CAVs ``(G, d)`` on the current final item embeddings (eval mode, no gradient)."""
        import time

        model = self.model
        t0 = time.perf_counter()
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                _, items = model.embeddings()
                V = fit_cav_directions(items.detach().cpu().double().numpy(), self.genres, self.config.seed)
        finally:
            model.train(was)
        self.cavs = torch.as_tensor(V, dtype=model.user_emb.weight.dtype, device=self.device)
        self.refits += 1
        self.refit_seconds += time.perf_counter() - t0

    def loss(self, u, i, j) -> dict:
        be = self.model.batch_embeddings(u, i, j)
        parts = self.terms(be)
        if self.weight:
            align = batch_alignment_loss(be.users, self.cavs, self.pref[u])
            self.log.append(align.detach())
            parts["loss"] = parts["loss"] + self.weight * align
        return parts

    def end_epoch(self, row: dict) -> None:
        row["align"] = float(torch.stack(self.log).mean()) if self.log else float("nan")

    def info(self) -> dict:
        return {"align_weight": self.weight, "align_refit": self.refit, "align_refits": self.refits,
                "align_refit_seconds": round(self.refit_seconds, 2)}
