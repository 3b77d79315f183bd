"""Binary cross-entropy over observed ratings (seed 000's objective), :class:`BCE`.

The seed trains with ``BCEWithLogitsLoss`` "over each observed rating r_{u,m}" but a 1–5 star
rating is not a probability, so a target has to be chosen. Here:

* **target 1**: the training positives -- ratings ``>= min_rating`` (4 by default, the project's
  positive rule, the same interactions BPR trains on);
* **target 0**: the *observed* ratings below the rule (1–3 stars on MovieLens): the user watched
  the film and did not like it. They are never validation/test targets (those are positives
  only), so no held-out positive is revealed; they come from the recipe's ``extras``;
* **target 0**, optional (``negatives=1``, the default): for every observed pair one item drawn
  uniformly from the user's non-training-positive items, re-drawn every epoch (the BPR sampler).

Why binarize instead of e.g. ``r / 5``: ranking metrics (and the recommendation the explanation is
about) treat ``>= 4`` as "liked"; ``r/5`` would make a 3-star film a 60 % positive and the logit
scale would mix "how much" with "whether". Why add unobserved negatives: a model fitted only on
watched films learns *liked vs disliked among watched* and never learns that unwatched films
should rank below watched-and-liked ones -- but Recall@20 ranks the whole catalogue; without them
the ranking quality collapses (see ``docs/explain_ig.md``). ``negatives=0`` gives the seed's
observed-ratings-only objective.

Per batch of ``B`` observed pairs ``(u, i, y)`` with sampled ``j``::

    loss = mean_{2B} BCEWithLogits([ŷ_ui, ŷ_uj], [y, 0]) + reg · ½(‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²) / B

(without negatives the first term is over the B observed pairs only). One Adam step on every
parameter per batch (:class:`whyrec.train.loop.Trainer`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .loop import BPR
from .losses import batch_l2

__all__ = ["BCE", "observed_pairs"]


def observed_pairs(train_csr, zero_users=None, zero_items=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(users, items, targets)``: every training positive with target 1 and every given
    observed non-positive ``(zero_users[k], zero_items[k])`` with target 0."""
    coo = train_csr.tocoo()
    u = [coo.row.astype(np.int64)]
    i = [coo.col.astype(np.int64)]
    y = [np.ones(coo.nnz, np.float32)]
    if zero_users is not None and len(zero_users):
        u.append(np.asarray(zero_users, np.int64))
        i.append(np.asarray(zero_items, np.int64))
        y.append(np.zeros(len(zero_users), np.float32))
    return np.concatenate(u), np.concatenate(i), np.concatenate(y)


class BCE(BPR):
    """BCE over the observed pairs (module docstring); ``zero_users``/``zero_items``: the observed
    non-positives (target 0); ``negatives``: 1 to add a sampled unobserved item per pair, 0 not to.
    Epoch rows log ``bce``, ``reg`` and ``loss``."""

    def __init__(self, zero_users=None, zero_items=None, negatives: int = 1):
        if negatives not in (0, 1):
            raise ValueError(f"bce_negatives must be 0 or 1, got {negatives!r}")
        self.zero_users, self.zero_items, self.negatives = zero_users, zero_items, negatives

    def setup(self, model, train_csr, config, device) -> None:
        super().setup(model, train_csr, config, device)
        self.pairs = observed_pairs(train_csr, self.zero_users, self.zero_items)
        if len(self.pairs[0]) == 0:
            raise ValueError("no observed ratings to train on")

    def epoch(self, epoch: int) -> tuple:
        rng = np.random.default_rng([self.config.seed, epoch])
        perm = rng.permutation(len(self.pairs[0]))
        eu, ei, ey = (a[perm] for a in self.pairs)
        ej = self.sampler.negatives(eu, rng) if self.negatives else ei
        return self.tensors(eu, ei, ej, ey)

    def loss(self, u, i, j, y) -> dict:
        be = self.model.batch_embeddings(u, i, j)
        s_obs = (be.users * be.pos).sum(-1)
        if self.negatives:
            s_neg = (be.users * be.neg).sum(-1)
            bce = F.binary_cross_entropy_with_logits(torch.cat([s_obs, s_neg]), torch.cat([y, torch.zeros_like(y)]))
            reg = batch_l2(self.config.reg, be)
        else:
            bce = F.binary_cross_entropy_with_logits(s_obs, y)
            reg = batch_l2(self.config.reg, be, "users", "pos")
        return {"bce": bce, "reg": reg, "loss": bce + reg}

    def info(self) -> dict:
        return {"loss": "bce", "bce_negatives": self.negatives}
