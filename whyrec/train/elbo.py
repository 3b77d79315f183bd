"""ELBO training for the resolved model of seed 002 (eq. 14).

Each step takes a batch of ``B`` users (``ResolvedConfig.batch_users``, 128 in the
seed's Table 1; users without training items are skipped) and minimises the
negative ELBO scaled to one user::

    loss = 1/B Σ_{u∈B} [ −Σ_{t∈N_u} log p(t | u)  +  β KL(q(z_u) ‖ N(0, I)) ]
           + β Σ_{t} KL(q(z_t) ‖ N(0, I)) / n_users
           + l2 Σ_θ ‖θ‖²

* ``log p(t | u)``: the decoder of eq. 13 (no first term) normalized over **all** items,
  i.e. a multinomial likelihood of the user's history (Mult-VAE style; eq. 14 sums
  ``log p(Y_ut)`` over the observed interactions, which is this sum).
* ``q(z_u)``: the user's item and entity segments, ``q(z_t)``: every item's self and
  entity segments (eq. 11–12). The item KL is over the whole catalogue once per
  ``n_users`` users, so one epoch counts it once: the minibatch loss is an unbiased
  estimate of ``−ELBO / n_users``.
* ``β``: KL annealing (not in the seed; Mult-VAE's practice): ``β = beta · min(1,
  (epoch−1+step/n_steps) / anneal_epochs)``; ``anneal_epochs=0`` means ``β = beta``
  throughout. ``beta = 1`` is the plain ELBO.
* ``l2``: the Table 1 "l2 weight" on all parameters.
* ``input_dropout`` (``ResolvedConfig``): history items hidden from the encoder at each step
  (the target is still the whole history), Mult-VAE's denoising.
* Adam (``lr``), one reparameterized sample per step. Every ``eval_every`` epochs (and
  after the last) the validation users are ranked (full ranking, training items masked)
  and the weights with the best ``ndcg@100`` on validation are kept (the seed: "the
  model to be tested has the best performance on the validation dataset").
  ``TrainConfig.patience`` evaluations without improvement stop training early.

Reuses :class:`whyrec.train.loop.History`, its evaluation and Adam helpers.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Optional

import numpy as np
import torch

from .loop import History, TrainConfig, _adam, run_epochs

__all__ = ["fit_elbo", "elbo_step_loss", "EVAL_KS", "MONITOR"]

EVAL_KS = (2, 10, 50, 100)
MONITOR = "ndcg@100"


def _kl_diag(mu, logvar=None, var=None):
    """KL(N(mu, diag var) ‖ N(0, I)) summed over all but the first dim."""
    if var is None:
        var = torch.exp(logvar)
        logvar_ = logvar
    else:
        logvar_ = torch.log(var + 1e-12)
    kl = 0.5 * (mu ** 2 + var - 1.0 - logvar_)
    return kl.flatten(1).sum(1)


def elbo_step_loss(model, users: torch.Tensor, beta: float, l2: float, sample: bool = True) -> dict:
    """Loss terms of one batch of users (see the module docstring). Returns a dict of
    scalar tensors: ``loss``, ``nll``, ``kl`` (unweighted, per user), ``l2``."""
    u = users.detach().cpu().numpy()
    target_np = model.history[u]
    target = torch.from_numpy(np.asarray(target_np.todense(), np.float32)).to(model.ie_norm.device)
    inp = target
    p_drop = float(getattr(model.config, "input_dropout", 0.0)) if sample else 0.0
    if p_drop > 0:
        kept = target * (torch.rand_like(target) >= p_drop).float()
        empty = kept.sum(1, keepdim=True) == 0
        inp = torch.where(empty, target, kept)  # a user never loses their whole input
    hist = inp / inp.sum(1, keepdim=True).clamp_min(1.0)
    item_parts = model.item_entity_segments()
    seg = model.encode(hist, sample=sample, item_parts=item_parts)
    us = model._user_self(users, sample)
    logits = model.decode(seg, user_self=us)
    logp = torch.log_softmax(logits, dim=-1)
    nll = -(logp * target).sum(1).mean()
    kl_u = _kl_diag(seg["itm_mu"], logvar=seg["itm_logvar"]) + _kl_diag(seg["ent_mu"], var=seg["ent_var"])
    if us is not None:
        kl_u = kl_u + _kl_diag(model.user_self(users), logvar=model.user_self_logvar(users))
    kl_u = kl_u.mean()
    ent_mu_t, ent_logvar_t = item_parts[0], item_parts[1]
    kl_t = (_kl_diag(ent_mu_t, logvar=ent_logvar_t).sum()
            + _kl_diag(model.item_self.weight, logvar=model.item_self_logvar.weight).sum()) / model.n_users
    kl = kl_u + kl_t
    reg = sum((p ** 2).sum() for p in model.parameters()) * l2 if l2 else torch.zeros((), device=nll.device)
    loss = nll + beta * kl + reg
    return {"loss": loss, "nll": nll, "kl": kl, "l2": reg}


def fit_elbo(model, train_csr, valid_csr=None, config: Optional[TrainConfig] = None,
             out_dir: Optional[str | os.PathLike] = None, progress: bool = True, *,
             epochs: Optional[int] = None, lr: Optional[float] = None, batch_users: Optional[int] = None,
             l2: Optional[float] = None, eval_every: Optional[int] = None) -> History:
    """Train a :class:`~whyrec.models.resolved.Resolved` model by maximising the ELBO.

    Hyper-parameters default to ``model.config`` (the seed's Table 1); the keyword
    arguments override them. From ``config`` (:class:`TrainConfig`) only ``seed``,
    ``device``, ``patience``, ``num_threads`` and ``eval_batch_size`` are used.
    Returns a :class:`History` (one row per epoch: ``loss``, ``nll``, ``kl``, ``l2``,
    ``beta``, ``seconds`` and the validation metrics on evaluated epochs); the model ends
    in eval mode with the best validation weights.
    """
    config = config or TrainConfig()
    mc = model.config
    epochs = int(epochs if epochs is not None else mc.epochs)
    lr = float(lr if lr is not None else mc.lr)
    bs = int(batch_users if batch_users is not None else mc.batch_users)
    l2 = float(l2 if l2 is not None else mc.l2)
    eval_every = int(eval_every if eval_every is not None else mc.eval_every)
    if epochs < 1 or bs < 1 or lr <= 0:
        raise ValueError(f"epochs, batch size and learning rate must be positive (got {epochs}, {bs}, {lr})")
    if tuple(train_csr.shape) != (model.n_users, model.n_items):
        raise ValueError(f"train has shape {train_csr.shape}, model is {(model.n_users, model.n_items)}")
    model.set_history(train_csr)
    active = np.flatnonzero(np.diff(model.history.indptr) > 0)
    if len(active) == 0:
        raise ValueError("no user has a training interaction")
    run_config = replace(config, epochs=epochs, lr=lr, batch_size=bs, reg=l2, eval_every=eval_every,
                         ks=EVAL_KS, monitor=MONITOR)
    rng = np.random.default_rng(config.seed)
    n_steps = max(1, math.ceil(len(active) / bs))
    state: dict = {}

    def setup(device: torch.device) -> None:
        model.set_history(train_csr)  # on the model's device
        state["device"], state["opt"] = device, _adam(model.parameters(), lr, device)

    def elbo_epoch(epoch: int) -> dict:
        device, opt = state["device"], state["opt"]
        perm = rng.permutation(active)
        sums = {"loss": 0.0, "nll": 0.0, "kl": 0.0, "l2": 0.0}
        beta = mc.beta
        for s in range(n_steps):
            users = torch.from_numpy(perm[s * bs:(s + 1) * bs]).to(device)
            frac = (epoch - 1 + s / n_steps) / mc.anneal_epochs if mc.anneal_epochs > 0 else 1.0
            beta = mc.beta * min(1.0, frac)
            terms = elbo_step_loss(model, users, beta, l2)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            for k in sums:
                sums[k] += float(terms[k].detach())
        model.invalidate_cache()
        return {**{k: v / n_steps for k, v in sums.items()}, "beta": beta}

    valid = valid_csr if valid_csr is not None and valid_csr.nnz else None
    hist = run_epochs(model, elbo_epoch, train_csr, valid, run_config, out_dir, progress, setup=setup)
    hist.config.update({"beta": mc.beta, "anneal_epochs": mc.anneal_epochs, "objective": "elbo"})
    return hist
