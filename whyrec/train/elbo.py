"""ELBO training for the resolved model of seed 002 (eq. 14).

Each step takes a batch of ``B`` users (``TrainConfig.batch_size``, 128 in the seed's Table 1;
users without training items are skipped) and minimises the
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
* ``l2``: the Table 1 "l2 weight" on all parameters (``TrainConfig.reg``).
* ``input_dropout`` (``ResolvedConfig``): history items hidden from the encoder at each step
  (the target is still the whole history), Mult-VAE's denoising.
* Adam (``lr``), one reparameterized sample per step. Every ``eval_every`` epochs (and
  after the last) the validation users are ranked (full ranking, training items masked)
  and the weights with the best ``ndcg@100`` on validation are kept (the seed: "the
  model to be tested has the best performance on the validation dataset"; the recipe's
  ``ks`` are :data:`EVAL_KS`, its monitor :data:`MONITOR`).
  ``TrainConfig.patience`` evaluations without improvement stop training early.

The :class:`ELBO` objective runs on :class:`whyrec.train.loop.Trainer` like every other.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .loop import Objective

__all__ = ["ELBO", "elbo_step_loss", "EVAL_KS", "MONITOR"]

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
    p_drop = float(model.config.input_dropout) if sample else 0.0
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


class ELBO(Objective):
    """The negative ELBO of a :class:`~whyrec.models.resolved.Resolved` model (module docstring).

    An epoch is the users with a training item in a random order, ``config.batch_size`` users a
    step; ``config.reg`` is the l2 weight; ``beta``, ``anneal_epochs`` and ``input_dropout`` come
    from the model's config. Rows log ``loss``, ``nll``, ``kl``, ``l2`` and the last step's
    ``beta``. Not resumable: the user order and the reparameterization draws follow one random
    stream through the whole run.
    """

    resumable = False

    def setup(self, model, train_csr, config, device) -> None:
        super().setup(model, train_csr, config, device)
        model.set_history(train_csr)  # on the model's device
        self.active = np.flatnonzero(np.diff(model.history.indptr) > 0)
        if len(self.active) == 0:
            raise ValueError("no user has a training interaction")
        self.rng = np.random.default_rng(config.seed)
        self.n_steps = max(1, math.ceil(len(self.active) / config.batch_size))

    def epoch(self, epoch: int) -> tuple:
        self.epoch_no, self.step, self.beta = epoch, 0, self.model.config.beta
        return self.tensors(self.rng.permutation(self.active))

    def loss(self, users) -> dict:
        mc = self.model.config
        frac = (self.epoch_no - 1 + self.step / self.n_steps) / mc.anneal_epochs if mc.anneal_epochs > 0 else 1.0
        self.beta = mc.beta * min(1.0, frac)
        self.step += 1
        return elbo_step_loss(self.model, users, self.beta, self.config.reg)

    def end_epoch(self, row: dict) -> None:
        self.model.invalidate_cache()
        row["beta"] = self.beta

    def info(self) -> dict:
        mc = self.model.config
        return {"beta": mc.beta, "anneal_epochs": mc.anneal_epochs, "objective": "elbo"}
