"""The trainer: one epoch loop, a pluggable objective, callbacks around it.

:class:`Trainer` runs ``config.epochs`` epochs of minibatch Adam steps on what an
:class:`Objective` says (which examples an epoch draws, the loss of a batch) and evaluates on
validation every ``config.eval_every`` epochs; everything else is a callback
(:mod:`whyrec.train.callbacks`): keeping the best weights and stopping early, the resumable
training state, the progress bar, the curves.

Objectives: :class:`BPR` (here), :class:`~whyrec.train.bce.BCE`,
:class:`~whyrec.train.elbo.ELBO` and :class:`~whyrec.train.alignment.Alignment` (BPR plus the
genre-CAV alignment term). BPR, per step, for a batch of ``B`` triples ``(u, i, j)``::

    loss = mean softplus(ŷ_uj - ŷ_ui) + reg · ½(‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²) / B

(:mod:`whyrec.train.losses`), one Adam step on the layer-0 embeddings. For LightGCN the
batch's final embeddings come from :meth:`~whyrec.models.LightGCN.batch_embeddings`: one
propagation of the whole graph per batch, backward through the symmetric sparse product.

Data parallelism (:mod:`whyrec.train.distributed`, ``torchrun``) is a strategy of the trainer:
:func:`minibatch_steps` computes the rank's share of each batch and sums the gradients over the
ranks before the step; rank 0 alone evaluates and runs the callbacks.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..models.base import GRAPH, Recommender, can
from .losses import batch_l2, bpr_loss, bpr_loss_table
from .sampling import UniformNegativeSampler, check_positives

__all__ = ["TrainConfig", "History", "Objective", "BPR", "Trainer", "fit", "minibatch_steps", "resolve_device",
           "check_monitor", "METRICS"]

EvaluateFn = Callable[[Recommender, object, object, tuple], dict]
LR_SCHEDULES = ("constant", "cosine")
#: the metric names :func:`whyrec.evaluate.ranking.evaluate_ranking` gives at every cut-off
METRICS = ("recall", "ndcg", "precision", "hit_rate", "mrr")


@dataclass
class TrainConfig:
    """Training settings, checked when made (a bad value is a ``ValueError`` naming it).

    Defaults: whyrec's fast BPR schedule (lr 5e-3, at most 150 epochs, evaluation every 10 with
    patience 5: about 15 s for LightGCN on ML-100K, within 0.01 Recall@20 of its best); the
    LightGCN paper's (1000 epochs, lr 1e-3, evaluation every 20) is ``whyrec train --preset paper``.
    Each recipe states its own deviations (:attr:`whyrec.recipes.Recipe.train_defaults`).

    ``eval_every``: evaluate on the validation matrix every that many epochs (and after the last
    one); ``patience``: stop after that many evaluations without improvement of ``monitor``
    (``None`` = never stop early); ``ks``: the validation cut-offs, ``monitor`` one of their
    metrics (:data:`METRICS`); ``device``: ``"auto"`` = CUDA if available else CPU;
    ``num_threads``: ``torch.set_num_threads`` for the run (``None`` = leave as is);
    ``lr_schedule``: ``"constant"`` or ``"cosine"`` (:func:`epoch_lr`); ``positives``: how the
    sampler picks positives, ``"interactions"`` or ``"users"`` (:mod:`whyrec.train.sampling`);
    ``resume``: continue from the ``training_state.pt`` an interrupted run left in ``out_dir``
    (:class:`whyrec.train.callbacks.Checkpoint`). ``reg`` is the objective's L2 weight.
    """

    epochs: int = 150
    batch_size: int = 2048
    lr: float = 5e-3
    reg: float = 1e-4
    seed: int = 2020
    eval_every: int = 10
    patience: Optional[int] = 5
    ks: tuple = (20,)
    monitor: str = "recall@20"
    device: str = "auto"
    eval_batch_size: int = 1024
    num_threads: Optional[int] = None
    lr_schedule: str = "constant"
    lr_min: float = 0.0
    positives: str = "interactions"
    resume: bool = False

    def __post_init__(self) -> None:
        self.ks = (int(self.ks),) if isinstance(self.ks, (int, np.integer)) else tuple(int(k) for k in self.ks)
        check_train_values(asdict(self))
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}")
        check_positives(self.positives)
        check_monitor(self.monitor, self.ks)


def check_train_values(values: dict, flags: bool = False) -> None:
    """Refuse settings that cannot train: ``epochs``, ``batch_size``, ``eval_every`` below 1, a learning
    rate or L2 weight that is not a finite number (lr > 0, reg >= 0). ``ValueError`` names the setting
    (as a command-line flag, ``--epochs``, with ``flags``); only the keys present are checked."""
    def name(key: str) -> str:
        return "--" + key.replace("_", "-") if flags else key

    for key in ("epochs", "batch_size", "eval_every"):
        v = values.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name(key)} must be a whole number of at least 1, got {v!r}")
    for key, low, strict in (("lr", 0.0, True), ("reg", 0.0, False), ("lr_min", 0.0, False)):
        v = values.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or (v <= low if strict else v < low):
            rule = "a finite number above 0" if strict else "a finite number of at least 0"
            raise ValueError(f"{name(key)} must be {rule}, got {v!r}")


def check_monitor(monitor: str, ks: Sequence[int], label: str = "monitor") -> str:
    """``monitor`` if it is a metric evaluated at the cut-offs ``ks`` (``recall@20`` with 20 in
    ``ks``), else a ``ValueError`` listing the valid names."""
    valid = [f"{m}@{k}" for k in ks for m in METRICS]
    if monitor not in valid:
        raise ValueError(f"{label} must be one of {', '.join(valid)}; got {monitor!r}")
    return monitor


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of 1-based ``epoch`` under ``config.lr_schedule``::

        constant: lr
        cosine:   lr_min + (lr - lr_min) · (1 + cos(π (epoch - 1) / epochs)) / 2
    """
    if config.lr_schedule == "cosine":
        frac = (epoch - 1) / max(1, int(config.epochs))
        return float(config.lr_min + (config.lr - config.lr_min) * 0.5 * (1.0 + math.cos(math.pi * frac)))
    return float(config.lr)


@dataclass
class History:
    """What a :class:`Trainer` did. ``epochs``: one dict per trained epoch (``epoch`` 1-based,
    ``loss`` and the objective's parts, ``lr``, ``seconds``, ``sample_seconds`` and, on evaluated
    epochs, the metrics); ``evals``: ``(epoch, metrics)`` pairs; ``best_epoch``/``best_score``/
    ``best_metrics``: best evaluation of ``monitor`` (its weights are loaded back into the model)."""

    epochs: list = field(default_factory=list)
    evals: list = field(default_factory=list)
    monitor: str = "recall@20"
    best_epoch: Optional[int] = None
    best_score: Optional[float] = None
    best_metrics: dict = field(default_factory=dict)
    stopped_early: bool = False
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.epochs)

    @property
    def losses(self) -> list:
        return [r["loss"] for r in self.epochs]


def resolve_device(device: str | torch.device = "auto", model=None) -> torch.device:
    """:func:`whyrec.device.resolve_device`: ``auto`` = CUDA if available (and ``model`` computes there)."""
    from ..device import resolve_device as resolve

    return resolve(device, model)


def _adam(params, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused single-pass kernel where this torch build has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - older torch / exotic device
        return torch.optim.Adam(params, lr=lr)


def _default_evaluate(batch_size: int, strategy=None) -> EvaluateFn:
    def evaluate(model, train, valid, ks):
        from ..evaluate.ranking import evaluate_ranking  # lazy: optional module

        return evaluate_ranking(model.score_users, train, valid, ks=ks, batch_size=batch_size, strategy=strategy)

    return evaluate


def _run_eval(model, evaluate, train, valid, ks) -> dict:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            res = evaluate(model, train, valid, ks)
    finally:
        model.train(was_training)
    return {k: float(v) for k, v in res.items() if isinstance(v, (int, float, np.floating, np.integer))}


def minibatch_steps(opt: torch.optim.Optimizer, tensors: tuple, batch_size: int,
                    batch_loss: Callable[..., dict], strategy=None) -> dict:
    """One pass over the rows of ``tensors`` (same length, already shuffled) in batches of
    ``batch_size``: ``batch_loss(*batch_slices) -> {"loss": scalar tensor, other logged scalars}``,
    one optimizer step on ``"loss"`` per batch. Returns every entry's mean over the batches.
    ``strategy``: :class:`whyrec.train.distributed.DataParallel` to compute only this rank's share
    of each batch and sum the weighted gradients over the ranks (default: one process)."""
    from .distributed import Local

    strategy = strategy or Local()
    n = int(tensors[0].shape[0])
    bs = int(batch_size)
    if bs < strategy.world:
        raise ValueError(f"batch size {bs} is smaller than the {strategy.world} processes")
    n_batches = max(1, math.ceil(n / bs))
    sums: dict = {}
    for b in range(n_batches):
        lo, hi = b * bs, min((b + 1) * bs, n)
        start, stop = strategy.share(lo, hi)
        opt.zero_grad(set_to_none=True)
        if stop > start:
            parts = batch_loss(*(t[start:stop] for t in tensors))
            weight = (stop - start) / (hi - lo)
            (parts["loss"] * weight if strategy.world > 1 else parts["loss"]).backward()
        else:  # this rank's share of a short last batch is empty
            parts, weight = {k: torch.zeros(()) for k in sums}, 0.0
        parts = strategy.reduce(opt, parts, weight)
        opt.step()
        for name, value in parts.items():
            sums[name] = sums[name] + value.detach() if name in sums else value.detach()
    return {name: float(v) / n_batches for name, v in sums.items()}


class Objective:
    """What a :class:`Trainer` minimises.

    :meth:`setup` runs once, with the model on its device; :meth:`epoch` returns the epoch's
    examples as equally long tensors (rows in the order they are trained on); :meth:`loss` the
    ``{"loss": scalar, ...}`` of a batch of rows; :meth:`end_epoch` may add columns to the epoch's
    row; :meth:`info` is added to ``History.config``. ``resumable``: whether an epoch's examples
    depend only on ``(seed, epoch)``, so that an interrupted run can resume exactly.
    """

    resumable = True

    def setup(self, model: Recommender, train_csr, config: TrainConfig, device: torch.device) -> None:
        self.model, self.config, self.device = model, config, device

    def epoch(self, epoch: int) -> tuple:
        raise NotImplementedError

    def loss(self, *batch) -> dict:
        raise NotImplementedError

    def end_epoch(self, row: dict) -> None:
        pass

    def info(self) -> dict:
        return {}

    def tensors(self, *arrays) -> tuple:
        return tuple(torch.from_numpy(a).to(self.device) for a in arrays)


class BPR(Objective):
    """``mean softplus(ŷ_uj − ŷ_ui) + L2`` over uniformly sampled triples (module docstring)."""

    def setup(self, model, train_csr, config, device) -> None:
        super().setup(model, train_csr, config, device)
        self.sampler = UniformNegativeSampler(train_csr, seed=config.seed, positives=config.positives)

    def epoch(self, epoch: int) -> tuple:
        return self.tensors(*self.sampler.sample_epoch(epoch))

    def loss(self, u, i, j) -> dict:
        return self.terms(self.model.batch_embeddings(u, i, j))

    def terms(self, be) -> dict:
        """``{"bpr", "reg", "loss"}`` of a :class:`~whyrec.models.base.BatchEmbeddings`."""
        table = be.final_table()
        bpr = (bpr_loss_table(table[0], *table[1]) if table is not None
               else bpr_loss((be.users * be.pos).sum(-1), (be.users * be.neg).sum(-1)))
        reg = batch_l2(self.config.reg, be)
        return {"bpr": bpr, "reg": reg, "loss": bpr + reg}


class Trainer:
    """Train ``model`` with ``objective`` under ``config`` (:class:`TrainConfig`).

    ``callbacks``: see :mod:`whyrec.train.callbacks`; default (:func:`default_callbacks`):
    early stopping on ``config.monitor`` with the best weights restored, the resumable training
    state and the curves in ``out_dir`` (when given), a progress bar (``progress=True``), one line
    on stderr per evaluation (``"lines"``) or nothing (``False``). ``evaluate``:
    ``f(model, train_csr, valid_csr, ks) -> dict`` of metrics (default
    :func:`whyrec.evaluate.ranking.evaluate_ranking`, training items masked).

    During :meth:`fit` the callbacks see ``model``, ``objective``, ``config``, ``history``,
    ``opt``, ``device``, ``first_epoch``, ``at_eval`` (this epoch is an evaluation point) and set
    ``stop`` to end training after the current epoch.

    ``strategy``: :class:`whyrec.train.distributed.DataParallel` under torchrun; the default
    evaluation is sharded over its ranks (each scores a share of the users, the sums are reduced), a
    given ``evaluate`` runs on rank 0 alone; rank 0 alone runs the callbacks, and its weights (the best
    epoch's) are every rank's at the end (default: one process).
    """

    def __init__(self, model: Recommender, objective: Optional[Objective] = None,
                 config: Optional[TrainConfig] = None, callbacks: Optional[list] = None,
                 evaluate: Optional[EvaluateFn] = None, out_dir: Optional[str | os.PathLike] = None,
                 progress=True, strategy=None):
        from .callbacks import default_callbacks
        from .distributed import Local

        self.model, self.objective = model, objective or BPR()
        self.config = config or TrainConfig()
        self.strategy = strategy or Local()
        self.sharded_eval = evaluate is None  # every rank evaluates its share of the users
        self.evaluate = evaluate or _default_evaluate(self.config.eval_batch_size, self.strategy)
        self.out_dir = out_dir
        self.callbacks = default_callbacks(self.config, out_dir, progress, self.objective.resumable) \
            if callbacks is None else list(callbacks)
        if self.strategy.rank != 0:  # rank 0 stops, checkpoints and reports for all
            self.callbacks, self.out_dir = [], None
        self.history = History(monitor=self.config.monitor, config=asdict(self.config))
        self.opt: Optional[torch.optim.Optimizer] = None
        self.device: Optional[torch.device] = None
        self.first_epoch, self.stop, self.at_eval, self.t_start = 1, False, False, 0.0
        self._heap: Optional[contextlib.ExitStack] = None  # the open heap_only block of _train_epoch

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def fit(self, train_csr, valid_csr=None) -> History:
        """Train on ``train_csr`` (``(n_users, n_items)`` binary CSR), evaluating on ``valid_csr``
        (``None`` or empty: no evaluation, the final weights are kept). Returns the
        :class:`History`; the model ends in eval mode."""
        model, config, hist = self.model, self.config, self.history
        if tuple(train_csr.shape) != (model.n_users, model.n_items):
            raise ValueError(f"train has shape {train_csr.shape}, model is {(model.n_users, model.n_items)}")
        evaluates = self.strategy.rank == 0 or self.sharded_eval
        valid = valid_csr if valid_csr is not None and valid_csr.nnz and evaluates else None
        self.train_csr = train_csr
        old_threads = torch.get_num_threads()
        if config.num_threads:
            torch.set_num_threads(int(config.num_threads))
        self.t_start = time.perf_counter()
        began = completed = False
        try:
            self.device = resolve_device(config.device, model)
            if not model.trainable:
                model.to(self.device)
                if valid is not None:
                    m = _run_eval(model, self.evaluate, train_csr, valid, config.ks)
                    hist.evals.append((0, m))
                    hist.best_epoch, hist.best_score, hist.best_metrics = 0, m.get(hist.monitor), m
                model.eval()
                return hist
            if config.resume and self.strategy.rank == 0:
                if self.out_dir is None:
                    raise ValueError("resume needs the out_dir of the interrupted run")
                if not self.objective.resumable:
                    raise ValueError(f"{type(model).__name__}'s trainer keeps no resumable state; it cannot resume")
            if can(model, GRAPH) and model.adj is None:
                model.set_graph(train_csr)
            model.to(self.device)
            torch.manual_seed(config.seed)
            self.objective.setup(model, train_csr, config, self.device)
            self.opt = _adam(model.parameters(), config.lr)
            began = True
            self._call("on_begin")
            self.strategy.sync(self)
            for epoch in range(self.first_epoch, config.epochs + 1):
                self.at_eval = epoch % config.eval_every == 0 or epoch == config.epochs
                row = self._train_epoch(epoch)
                if valid is not None and self.at_eval:
                    m = _run_eval(model, self.evaluate, train_csr, valid, config.ks)
                    row.update(m)
                    hist.evals.append((epoch, m))
                hist.epochs.append(row)
                self._call("on_epoch", row)
                self.stop = self.strategy.agree(self.stop)
                if self.stop:
                    hist.stopped_early = True
                    break
            completed = True
        finally:
            self._release_heap()  # (an epoch that raised, a stop between evaluations)
            hist.seconds = time.perf_counter() - self.t_start  # training, without writing the curves
            if began:
                self._call("on_end", completed)
            if completed:
                self.strategy.share_weights(model)  # rank 0's (best) weights everywhere
                model.invalidate_cache()
                model.eval()
            if config.num_threads:
                torch.set_num_threads(old_threads)
        hist.config.update(self.objective.info())
        return hist

    def _train_epoch(self, epoch: int) -> dict:
        """One epoch of the objective's minibatch steps -> its row of the history, in
        :func:`whyrec.graph.heap_only` (a step's freed tensors are reused, not faulted in again). The block stays
        open across the epochs up to the next evaluation epoch (``at_eval``, the last one too), so that the heap's pages stay
        mapped from one epoch to the next; it closes (``malloc_trim``) after that epoch, before the evaluation,
        and when training ends. Until 2026-12-04 every epoch closed it: each epoch's first steps then faulted
        the heap's pages in again (Gowalla's fast preset: 0.84× the epoch with the block held open, measured
        in a fast phase of the host; 0.98× in a slow one; ``docs/results.md``)."""
        from ..graph import heap_only

        if self._heap is None:
            self._heap = contextlib.ExitStack()
            self._heap.enter_context(heap_only())
        try:
            return self._train_epoch_steps(epoch)
        finally:
            if self.at_eval:
                self._release_heap()

    def _release_heap(self) -> None:
        """Close :meth:`_train_epoch`'s ``heap_only`` block, if open (the heap's free pages go back)."""
        heap, self._heap = self._heap, None
        if heap is not None:
            heap.close()

    def _train_epoch_steps(self, epoch: int) -> dict:
        self.model.train()
        t0 = time.perf_counter()
        lr = epoch_lr(self.config, epoch)
        for group in self.opt.param_groups:
            group["lr"] = lr
        tensors = self.objective.epoch(epoch)
        t_sample = time.perf_counter() - t0
        row = {"epoch": epoch, **minibatch_steps(self.opt, tensors, self.config.batch_size, self.objective.loss,
                                                 self.strategy)}
        self.objective.end_epoch(row)
        row.update(sample_seconds=t_sample, lr=lr, seconds=time.perf_counter() - t0)
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(f"loss is {row['loss']} at epoch {epoch}")
        return row


def fit(model: Recommender, train_csr, valid_csr=None, config: Optional[TrainConfig] = None,
        out_dir: Optional[str | os.PathLike] = None, progress=True, evaluate: Optional[EvaluateFn] = None,
        objective: Optional[Objective] = None, callbacks: Optional[list] = None) -> History:
    """``Trainer(model, objective or BPR(), config, ...).fit(train_csr, valid_csr)``.

    Args:
        model: a :class:`~whyrec.models.base.Recommender`; a LightGCN without a graph gets
            ``train_csr`` as its graph. Models with ``trainable = False`` (Popularity) are only
            evaluated once when ``valid_csr`` is given.
        train_csr: ``(n_users, n_items)`` scipy binary training matrix.
        valid_csr: same shape, validation positives (``None``: no evaluation, no early stopping).
        config: :class:`TrainConfig`. out_dir: curves and the resumable state go there.
        progress: ``True`` (bar), ``"lines"`` or ``False``. evaluate: see :class:`Trainer`.

    Returns:
        :class:`History`. At return the model holds the best evaluated weights (in eval mode).
    """
    trainer = Trainer(model, objective, config, callbacks=callbacks, evaluate=evaluate, out_dir=out_dir,
                      progress=progress)
    return trainer.fit(train_csr, valid_csr)
