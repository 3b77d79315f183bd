"""Binary cross-entropy training over observed ratings (seed 000's objective).

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
parameter; evaluation, early stopping and best-weights restore as :func:`whyrec.train.loop.fit`,
whose helpers are used.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .loop import History, TrainConfig, minibatch_steps, run_epochs, sampled_setup, set_epoch_lr
from .losses import batch_l2

__all__ = ["fit_bce", "observed_pairs"]


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


def fit_bce(model, train_csr, valid_csr=None, config: Optional[TrainConfig] = None, *,
            zero_users=None, zero_items=None, negatives: int = 1, out_dir=None, progress: bool = True,
            evaluate=None) -> History:
    """Train ``model`` (any recommender with ``batch_embeddings``) with BCE (module docstring).

    Returns a :class:`~whyrec.train.loop.History`; each epoch row has ``bce``, ``reg``,
    ``loss``, ``seconds`` (and metrics on evaluated epochs). The model ends with the best
    evaluated weights, in eval mode."""
    config = config or TrainConfig()
    if negatives not in (0, 1):
        raise ValueError(f"bce_negatives must be 0 or 1, got {negatives!r}")
    if getattr(model, "adj", False) is None and hasattr(model, "set_graph"):
        model.set_graph(train_csr)
    users, items, targets = observed_pairs(train_csr, zero_users, zero_items)
    n = len(users)
    if n == 0:
        raise ValueError("no observed ratings to train on")
    state: dict = {}
    setup = sampled_setup(model, train_csr, config, state)

    def bce_epoch(epoch: int) -> dict:
        device, sampler, opt = state["device"], state["sampler"], state["opt"]
        set_epoch_lr(opt, config, epoch)
        rng = np.random.default_rng([config.seed, epoch])
        perm = rng.permutation(n)
        eu, ei, ey = users[perm], items[perm], targets[perm]
        ej = sampler.negatives(eu, rng) if negatives else ei
        tensors = tuple(torch.from_numpy(a).to(device) for a in (eu, ei, ej, ey))

        def bce_batch(u, i, j, y) -> dict:
            be = model.batch_embeddings(u, i, j)
            s_obs = (be.users * be.pos).sum(-1)
            if negatives:
                s_neg = (be.users * be.neg).sum(-1)
                l_bce = F.binary_cross_entropy_with_logits(torch.cat([s_obs, s_neg]),
                                                           torch.cat([y, torch.zeros_like(y)]))
                return {"bce": l_bce, "reg": batch_l2(config.reg, be)}
            return {"bce": F.binary_cross_entropy_with_logits(s_obs, y),
                    "reg": batch_l2(config.reg, be, "users", "pos")}

        return minibatch_steps(opt, tensors, config.batch_size, bce_batch)

    hist = run_epochs(model, bce_epoch, train_csr, valid_csr, config, out_dir, progress, evaluate, setup)
    hist.config.update({"loss": "bce", "bce_negatives": negatives})
    return hist
