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

How it plugs into :func:`whyrec.train.loop.fit` without editing the loop
-----------------------------------------------------------------------
The loop computes ``BPR(be) + L2(be)`` from ``model.batch_embeddings(u, i, j)``. The model here,
:class:`AlignedLightGCN`, is a LightGCN whose ``batch_embeddings`` returns the same rows, but
with ``users`` passed through :class:`_AddLoss`: the identity in the forward pass whose backward
also sends gradient 1 into ``align_weight · L_align``. The optimizer step therefore sees
``∇(BPR + L2 + align_weight · L_align)`` exactly; only the *logged* loss lacks the alignment term,
which is recorded separately and added to ``curves.csv`` as the ``align`` column (mean
``L_align`` per epoch). Outside :func:`fit_aligned` (evaluation, a loaded run) the model is
exactly LightGCN with the same state dict.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..models import LightGCN, LightGCNConfig
from ..models.base import BatchEmbeddings

__all__ = ["AlignedLightGCN", "alignment_extras", "standardized_preferences", "fit_aligned",
           "batch_alignment_loss", "DEFAULT_ALIGN_WEIGHT", "DEFAULT_ALIGN_REFIT"]

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


class _AddLoss(torch.autograd.Function):
    """``forward(x, aux) = x``; ``backward`` passes the gradient of ``x`` through and gives ``aux``
    gradient 1, so that ``aux`` (a scalar loss) is minimized along with whatever uses ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, aux: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, torch.ones((), dtype=grad.dtype, device=grad.device)


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


class AlignedLightGCN(LightGCN):
    """LightGCN plus the alignment regularizer while :meth:`enable_alignment` is on.

    Same parameters and state dict as :class:`LightGCN`; the alignment settings live in plain
    attributes (``align_weight``, ``align_refit``) and the arrays are given to
    :meth:`enable_alignment` by :func:`fit_aligned`.
    """

    def __init__(self, n_users: int, n_items: int, config: Optional[LightGCNConfig] = None, graph=None,
                 align_weight: float = DEFAULT_ALIGN_WEIGHT, align_refit: int = DEFAULT_ALIGN_REFIT):
        super().__init__(n_users, n_items, config, graph)
        self.align_weight = float(align_weight)
        self.align_refit = int(align_refit)
        self._align: Optional[dict] = None

    def enable_alignment(self, genres: np.ndarray, pref: np.ndarray, steps_per_epoch: int, seed: int = 0) -> None:
        """Switch the regularizer on: ``genres`` ``(n_items, G)``, ``pref`` ``(n_users, G)`` standardized
        preferences; CAVs are re-fitted every ``align_refit * steps_per_epoch`` training steps."""
        self._align = {
            "genres": np.asarray(genres, dtype=bool),
            "pref": torch.as_tensor(np.asarray(pref, dtype=np.float32)),
            "every": max(1, self.align_refit) * max(1, steps_per_epoch),
            "steps_per_epoch": max(1, steps_per_epoch),
            "step": 0, "cavs": None, "seed": seed, "log": [], "refits": 0, "refit_seconds": 0.0,
        }

    def disable_alignment(self) -> dict:
        """Switch it off; returns the bookkeeping (per-step losses, refit count and time)."""
        state, self._align = self._align, None
        return state or {}

    def _refit(self) -> None:
        import time

        a = self._align
        t0 = time.perf_counter()
        with torch.no_grad():
            _, items = self.embeddings()
            V = fit_cav_directions(items.detach().cpu().double().numpy(), a["genres"], a["seed"])
        a["cavs"] = torch.as_tensor(V, dtype=self.user_emb.weight.dtype, device=self.user_emb.weight.device)
        a["pref"] = a["pref"].to(self.user_emb.weight.device)
        a["refits"] += 1
        a["refit_seconds"] += time.perf_counter() - t0

    def batch_embeddings(self, users, pos, neg) -> BatchEmbeddings:
        be = super().batch_embeddings(users, pos, neg)
        a = self._align
        if a is None or self.align_weight == 0 or not (self.training and torch.is_grad_enabled()):
            return be
        if a["step"] % a["every"] == 0 or a["cavs"] is None:
            was = self.training
            self.eval()
            try:
                self._refit()
            finally:
                self.train(was)
        a["step"] += 1
        u = self._ids(users)
        loss = batch_alignment_loss(be.users, a["cavs"], a["pref"][u])
        a["log"].append(float(loss.detach()))
        return be.replace(users=_AddLoss.apply(be.users, self.align_weight * loss))


def fit_aligned(model: AlignedLightGCN, inputs, valid, config, out_dir=None, progress: bool = True):
    """Recipe ``fit``: :func:`whyrec.train.loop.fit` with the regularizer switched on.

    Adds ``align`` (mean ``L_align`` of the epoch, i.e. minus the mean batch correlation) to each
    epoch row of the history and rewrites ``curves.csv/.png``; ``history.config`` gets
    ``align_weight``, ``align_refit``, ``align_refits`` and ``align_refit_seconds``.
    """
    from .loop import fit, write_curves

    ex = inputs.extras
    if "align_genres" not in ex or "align_pref" not in ex:
        raise ValueError("lightgcn-aligned needs align_genres/align_pref extras (made by its recipe)")
    steps = max(1, math.ceil(int(inputs.train.nnz) / int(config.batch_size)))
    model.enable_alignment(ex["align_genres"], ex["align_pref"], steps, seed=int(config.seed))
    try:
        hist = fit(model, inputs.train, valid, config, out_dir=out_dir, progress=progress)
    finally:
        state = model.disable_alignment()
    log = np.asarray(state.get("log", []))
    for row in hist.epochs:
        e = int(row["epoch"])
        chunk = log[(e - 1) * steps: e * steps]
        row["align"] = float(chunk.mean()) if len(chunk) else float("nan")
    hist.config.update(align_weight=model.align_weight, align_refit=model.align_refit,
                       align_refits=int(state.get("refits", 0)),
                       align_refit_seconds=round(float(state.get("refit_seconds", 0.0)), 2))
    if out_dir is not None and hist.epochs:
        write_curves(hist, out_dir)
    return hist
