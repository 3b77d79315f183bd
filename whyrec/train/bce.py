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

import math
import os
import time
from dataclasses import asdict
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .loop import History, TrainConfig, _adam, _default_evaluate, _run_eval, resolve_device
from .losses import l2_reg
from .sampling import UniformNegativeSampler

__all__ = ["fit_bce", "observed_pairs", "write_bce_curves"]


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
    ks = tuple(config.ks) if not isinstance(config.ks, int) else (config.ks,)
    monitor = config.monitor if any(config.monitor == f"{m}@{k}" for k in ks
                                    for m in ("recall", "ndcg", "precision", "hit_rate", "mrr")) \
        else f"recall@{ks[0]}"
    hist = History(monitor=monitor, config={**asdict(config), "loss": "bce", "bce_negatives": negatives})
    evaluate = evaluate or _default_evaluate(config.eval_batch_size)
    old_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    t_start = time.perf_counter()
    try:
        device = resolve_device(config.device)
        model.to(device)
        if getattr(model, "adj", False) is None and hasattr(model, "set_graph"):
            model.set_graph(train_csr)
        torch.manual_seed(config.seed)
        users, items, targets = observed_pairs(train_csr, zero_users, zero_items)
        n = len(users)
        if n == 0:
            raise ValueError("no observed ratings to train on")
        sampler = UniformNegativeSampler(train_csr, seed=config.seed)
        opt = _adam(model.parameters(), config.lr, device)
        bs = int(config.batch_size)
        n_batches = max(1, math.ceil(n / bs))
        best_state, bad, last = None, 0, {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.epochs, desc=f"train {type(model).__name__} (BCE)", unit="epoch")
        for epoch in range(1, config.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            rng = np.random.default_rng([config.seed, epoch])
            perm = rng.permutation(n)
            eu, ei, ey = users[perm], items[perm], targets[perm]
            ej = sampler.negatives(eu, rng) if negatives else ei
            eu_t, ei_t, ej_t = (torch.from_numpy(a).to(device) for a in (eu, ei, ej))
            ey_t = torch.from_numpy(ey).to(device)
            sum_bce = torch.zeros((), device=device)
            sum_reg = torch.zeros((), device=device)
            for b in range(n_batches):
                sl = slice(b * bs, min((b + 1) * bs, n))
                u, i, j, y = eu_t[sl], ei_t[sl], ej_t[sl], ey_t[sl]
                be = model.batch_embeddings(u, i, j)
                s_obs = (be.users * be.pos).sum(-1)
                if negatives:
                    s_neg = (be.users * be.neg).sum(-1)
                    l_bce = F.binary_cross_entropy_with_logits(torch.cat([s_obs, s_neg]),
                                                               torch.cat([y, torch.zeros_like(y)]))
                    l_reg = l2_reg(config.reg, u.numel(), be.users0, be.pos0, be.neg0)
                else:
                    l_bce = F.binary_cross_entropy_with_logits(s_obs, y)
                    l_reg = l2_reg(config.reg, u.numel(), be.users0, be.pos0)
                loss = l_bce + l_reg
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sum_bce += l_bce.detach()
                sum_reg += l_reg.detach()
            row = {"epoch": epoch, "bce": float(sum_bce) / n_batches, "reg": float(sum_reg) / n_batches}
            row["loss"] = row["bce"] + row["reg"]
            row["seconds"] = time.perf_counter() - t0
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"loss is {row['loss']} at epoch {epoch}")
            stop = False
            if valid_csr is not None and (epoch % max(1, config.eval_every) == 0 or epoch == config.epochs):
                m = _run_eval(model, evaluate, train_csr, valid_csr, ks)
                last = m
                row.update(m)
                hist.evals.append((epoch, m))
                score = m.get(monitor)
                if score is None:
                    raise KeyError(f"evaluation returned no {monitor!r} (keys: {sorted(m)})")
                if hist.best_score is None or score > hist.best_score:
                    hist.best_epoch, hist.best_score, hist.best_metrics = epoch, score, m
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    bad = 0
                else:
                    bad += 1
                    stop = config.patience is not None and bad >= config.patience
            hist.epochs.append(row)
            if bar is not None:
                post = {"loss": f"{row['loss']:.4f}"}
                if monitor in last:
                    post[monitor] = f"{last[monitor]:.4f}"
                bar.set_postfix(post)
                bar.update(1)
            if stop:
                hist.stopped_early = True
                break
        if bar is not None:
            bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        if hasattr(model, "invalidate_cache"):
            model.invalidate_cache()
        model.eval()
    finally:
        if config.num_threads:
            torch.set_num_threads(old_threads)
        hist.seconds = time.perf_counter() - t_start
        if out_dir is not None and hist.epochs:
            write_bce_curves(hist, out_dir)
    return hist


def write_bce_curves(hist: History, out_dir) -> tuple[str, str]:
    """``curves.csv`` and ``curves.png`` (BCE loss and validation metrics per epoch)."""
    os.makedirs(out_dir, exist_ok=True)
    df = hist.to_frame()
    csv_path = os.path.join(out_dir, "curves.csv")
    df.to_csv(csv_path, index=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(df["epoch"], df["loss"], label="loss")
    ax1.plot(df["epoch"], df["bce"], label="BCE", alpha=0.7)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.legend()
    cols = [c for c in df.columns if "@" in c and c.split("@")[0] in ("recall", "ndcg")]
    for c in cols:
        d = df[["epoch", c]].dropna()
        ax2.plot(d["epoch"], d[c], marker="o", label=c)
    if hist.best_epoch:
        ax2.axvline(hist.best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {hist.best_epoch})")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation")
    if cols:
        ax2.legend()
    fig.tight_layout()
    png_path = os.path.join(out_dir, "curves.png")
    fig.savefig(png_path, dpi=100)
    return csv_path, png_path
