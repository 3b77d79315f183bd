"""BPR training loop (Adam, uniform negatives, early stopping on validation).

Per step, for a batch of ``B`` triples ``(u, i, j)``::

    loss = mean softplus(ŷ_uj - ŷ_ui) + reg · ½(‖e_u⁰‖² + ‖e_i⁰‖² + ‖e_j⁰‖²) / B

(:mod:`whyrec.train.losses`), one Adam step on the layer-0 embeddings. For
LightGCN the batch's final embeddings come from
:meth:`~whyrec.models.LightGCN.batch_embeddings`: one propagation of the whole
graph per batch (``K - 1`` full sparse products + the batch rows of the last
layer), backward through the symmetric sparse product.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from ..models.base import Recommender
from .checkpoint import TRAINING_STATE, load_training_state, save_training_state, train_fingerprint
from .losses import batch_l2, bpr_loss
from .sampling import UniformNegativeSampler, check_positives

__all__ = ["TrainConfig", "History", "fit", "run_epochs", "minibatch_steps", "resolve_device"]

EvaluateFn = Callable[[Recommender, object, object, tuple], dict]


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: the LightGCN paper's Gowalla setup).

    ``eval_every``: evaluate on the validation matrix every that many epochs
    (and after the last one); ``patience``: stop after that many evaluations
    without improvement of ``monitor`` (``None`` = never stop early);
    ``device``: ``"auto"`` = CUDA if available else CPU; ``num_threads``: set
    ``torch.set_num_threads`` for the run (``None`` = leave as is);
    ``lr_schedule``: ``"constant"`` (the paper's) or ``"cosine"`` -- the learning
    rate follows a half cosine from ``lr`` down to ``lr_min`` over ``epochs``
    epochs, stepped once per epoch (used by the fast Gowalla preset);
    ``positives``: how the sampler picks positives, ``"interactions"`` (each
    training interaction once an epoch) or ``"users"`` (uniform users, as the
    LightGCN authors' code does) -- see :mod:`whyrec.train.sampling`;
    ``resume``: continue from the ``training_state.pt`` an interrupted run left in
    ``out_dir`` (see :func:`run_epochs`).
    """

    epochs: int = 1000
    batch_size: int = 2048
    lr: float = 1e-3
    reg: float = 1e-4
    seed: int = 2020
    eval_every: int = 20
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
        check_train_values(asdict(self))


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


LR_SCHEDULES = ("constant", "cosine")


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of 1-based ``epoch`` under ``config.lr_schedule``::

        constant: lr
        cosine:   lr_min + (lr - lr_min) · (1 + cos(π (epoch - 1) / epochs)) / 2
    """
    if config.lr_schedule == "constant":
        return float(config.lr)
    if config.lr_schedule == "cosine":
        frac = (epoch - 1) / max(1, int(config.epochs))
        return float(config.lr_min + (config.lr - config.lr_min) * 0.5 * (1.0 + math.cos(math.pi * frac)))
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {config.lr_schedule!r}")


def set_epoch_lr(opt: torch.optim.Optimizer, config: TrainConfig, epoch: int) -> float:
    """Put :func:`epoch_lr` into every parameter group of ``opt``; returns it."""
    lr = epoch_lr(config, epoch)
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


@dataclass
class History:
    """What :func:`fit` did. ``epochs``: one dict per trained epoch (``epoch``
    1-based, ``loss``, ``bpr``, ``reg``, ``seconds``, ``sample_seconds`` and,
    on evaluated epochs, the metrics); ``evals``: ``(epoch, metrics)`` pairs;
    ``best_epoch``/``best_score``/``best_metrics``: best evaluation of
    ``monitor`` (its weights are loaded back into the model)."""

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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _adam(params, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam; the fused single-pass kernel where this torch build has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - older torch / exotic device
        return torch.optim.Adam(params, lr=lr)


def _default_evaluate(batch_size: int) -> EvaluateFn:
    def evaluate(model, train, valid, ks):
        from ..evaluate.ranking import evaluate_ranking  # lazy: optional module

        return evaluate_ranking(model.score_users, train, valid, ks=ks, batch_size=batch_size)

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


EpochFn = Callable[[int], dict]


def sampled_setup(model: Recommender, train_csr, config: TrainConfig, state: dict) -> Callable[[torch.device], None]:
    """The ``setup`` of :func:`run_epochs` for the trainers that sample negatives (BPR, BCE): puts
    the device, a :class:`UniformNegativeSampler` and Adam into ``state``. An unknown
    ``config.lr_schedule`` or ``config.positives`` fails here, before any work."""
    epoch_lr(config, 1)
    check_positives(config.positives)

    def setup(device: torch.device) -> torch.optim.Optimizer:
        state["device"] = device
        state["sampler"] = UniformNegativeSampler(train_csr, seed=config.seed, positives=config.positives)
        state["opt"] = _adam(model.parameters(), config.lr, device)
        return state["opt"]

    return setup


def minibatch_steps(opt: torch.optim.Optimizer, tensors: tuple, batch_size: int,
                    batch_loss: Callable[..., dict]) -> dict:
    """One pass over the rows of ``tensors`` (same length, already shuffled) in batches of
    ``batch_size``: ``batch_loss(*batch_slices) -> {part name: scalar tensor}``, one optimizer step on
    the sum of the parts. Returns each part's mean over the batches and ``"loss"``, their sum."""
    n = int(tensors[0].shape[0])
    bs = int(batch_size)
    n_batches = max(1, math.ceil(n / bs))
    sums: dict = {}
    for b in range(n_batches):
        sl = slice(b * bs, min((b + 1) * bs, n))
        parts = batch_loss(*(t[sl] for t in tensors))
        loss = sum(parts.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for name, value in parts.items():
            sums[name] = sums[name] + value.detach() if name in sums else value.detach()
    row = {name: float(v) / n_batches for name, v in sums.items()}
    row["loss"] = sum(row.values())
    return row


def run_epochs(model: Recommender, train_epoch: EpochFn, train_csr, valid_csr=None,
               config: Optional[TrainConfig] = None, out_dir: Optional[str | os.PathLike] = None,
               progress: bool = True, evaluate: Optional[EvaluateFn] = None,
               setup: Optional[Callable[[torch.device], None]] = None) -> History:
    """The epoch driver every whyrec trainer shares.

    Calls ``train_epoch(epoch) -> dict`` (at least ``"loss"``; any other floats
    are logged) for ``config.epochs`` epochs; every ``config.eval_every`` epochs
    (and after the last) evaluates on ``valid_csr``, keeps the best weights of
    ``config.monitor``, stops early after ``config.patience`` evaluations
    without improvement, shows a tqdm bar with the loss and the last metrics,
    and writes ``curves.csv``/``curves.png`` into ``out_dir``.  ``setup(device)``
    runs once after the model is moved to its device (build optimisers there) and
    may return the optimizer.

    Interruption: with ``out_dir`` and an optimizer from ``setup``, every
    evaluation also writes ``out_dir/training_state.pt`` (current and best
    weights, Adam's moments, the history; removed when training ends normally).
    ``config.resume`` continues from it at the next epoch; since each epoch's
    samples depend only on ``(seed, epoch)``, the resumed run trains exactly as
    the uninterrupted one would. The training config (but ``device``,
    ``num_threads``, ``eval_batch_size``, ``patience``, and ``epochs`` under a
    constant learning rate) and the training matrix must be the same.
    Models with ``trainable = False`` are only evaluated once.
    """
    config = config or TrainConfig()
    ks = tuple(config.ks) if not isinstance(config.ks, int) else (config.ks,)
    monitor = config.monitor if any(config.monitor == f"{m}@{k}" for k in ks
                                    for m in ("recall", "ndcg", "precision", "hit_rate", "mrr")) \
        else f"recall@{ks[0]}"
    hist = History(monitor=monitor, config=asdict(config))
    if evaluate is None:
        evaluate = _default_evaluate(config.eval_batch_size)
    if tuple(train_csr.shape) != (model.n_users, model.n_items):
        raise ValueError(f"train has shape {train_csr.shape}, model is {(model.n_users, model.n_items)}")
    old_threads = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    t_start = time.perf_counter()
    try:
        device = resolve_device(config.device)
        model.to(device)
        if not getattr(model, "trainable", True):
            if valid_csr is not None:
                m = _run_eval(model, evaluate, train_csr, valid_csr, ks)
                hist.evals.append((0, m))
                hist.best_epoch, hist.best_score, hist.best_metrics = 0, m.get(monitor), m
            model.eval()
            return hist
        torch.manual_seed(config.seed)
        opt = setup(device) if setup is not None else None
        state_path = os.path.join(out_dir, TRAINING_STATE) if out_dir is not None and opt is not None else None
        identity = {"config": _resume_config(config), "train": train_fingerprint(train_csr)} if state_path else {}
        best_state = None
        bad = 0
        first = 1
        last_metrics: dict = {}
        if config.resume:
            if out_dir is None:
                raise ValueError("resume needs the out_dir of the interrupted run")
            if opt is None:
                raise ValueError(f"{type(model).__name__}'s trainer keeps no resumable state; it cannot resume")
            if not os.path.exists(state_path):
                raise FileNotFoundError(f"{state_path}: no training state to resume from")
            first, best_state, bad, t_before = _restore(state_path, model, opt, hist, identity, device)
            t_start -= t_before
            last_metrics = hist.evals[-1][1] if hist.evals else {}
        bar = None
        if progress and progress != "lines":  # "lines": no bar, one line on stderr per evaluation
            from tqdm.auto import tqdm

            bar = tqdm(total=config.epochs, initial=first - 1, desc=f"train {type(model).__name__}", unit="epoch")
        for epoch in range(first, config.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            row = {"epoch": epoch, **train_epoch(epoch)}
            row["seconds"] = time.perf_counter() - t0
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"loss is {row['loss']} at epoch {epoch}")
            stop = False
            checkpoint = epoch % max(1, config.eval_every) == 0 or epoch == config.epochs
            if valid_csr is not None and checkpoint:
                m = _run_eval(model, evaluate, train_csr, valid_csr, ks)
                last_metrics = m
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
                    if config.patience is not None and bad >= config.patience:
                        stop = True
            hist.epochs.append(row)
            if progress == "lines" and checkpoint:
                _print_line(epoch, config.epochs, row, monitor, ks)
            if state_path is not None and checkpoint and not stop:
                save_training_state(state_path, model=model, optimizer=opt, best_state=best_state, info={
                    **identity, "epoch": epoch, "bad": bad, "seconds": time.perf_counter() - t_start,
                    "epochs": hist.epochs, "evals": hist.evals, "best_epoch": hist.best_epoch,
                    "best_score": hist.best_score, "best_metrics": hist.best_metrics})
            if bar is not None:
                post = {"loss": f"{row['loss']:.4f}"}
                for k in (monitor, f"ndcg@{ks[0]}"):
                    if k in last_metrics:
                        post[k] = f"{last_metrics[k]:.4f}"
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
        if state_path is not None and os.path.exists(state_path):
            os.remove(state_path)  # finished: the run's result is the model itself
    finally:
        if config.num_threads:
            torch.set_num_threads(old_threads)
        hist.seconds = time.perf_counter() - t_start
        if out_dir is not None and hist.epochs:
            write_curves(hist, out_dir)
    return hist


def _print_line(epoch: int, epochs: int, row: dict, monitor: str, ks: tuple) -> None:
    parts = [f"epoch {epoch}/{epochs}", f"loss {row['loss']:.4f}"]
    parts += [f"{k} {row[k]:.4f}" for k in dict.fromkeys((monitor, f"ndcg@{ks[0]}")) if k in row]
    print("  ".join(parts), file=sys.stderr, flush=True)


_NOT_PART_OF_RESUME = ("device", "num_threads", "eval_batch_size", "patience", "resume")


def _resume_config(config: TrainConfig) -> dict:
    """The config a resumed run must share with the interrupted one."""
    out = {k: v for k, v in asdict(config).items() if k not in _NOT_PART_OF_RESUME}
    if config.lr_schedule == "constant":
        out.pop("epochs")  # a constant rate can simply train on for more epochs
    return out


def _restore(path: str, model: Recommender, opt: torch.optim.Optimizer, hist: History, identity: dict,
             device: torch.device) -> tuple[int, Optional[dict], int, float]:
    """Load an interrupted run's state into ``model``, ``opt`` and ``hist``; returns ``(first epoch to
    train, best weights, evaluations without improvement, training seconds so far)``."""
    saved = load_training_state(path, model, identity)
    info = saved["info"]
    model.load_state_dict({k: v.to(device) for k, v in saved["model"].items()})
    opt.load_state_dict(saved["optimizer"])
    if hasattr(model, "invalidate_cache"):
        model.invalidate_cache()
    hist.epochs = list(info["epochs"])
    hist.evals = [(int(e), m) for e, m in info["evals"]]
    hist.best_epoch, hist.best_score, hist.best_metrics = info["best_epoch"], info["best_score"], info["best_metrics"]
    best = {k: v.to(device) for k, v in saved["best"].items()} if saved["best"] else None
    return int(info["epoch"]) + 1, best, int(info["bad"]), float(info["seconds"])


def fit(model: Recommender, train_csr, valid_csr=None, config: Optional[TrainConfig] = None,
        out_dir: Optional[str | os.PathLike] = None, progress: bool = True,
        evaluate: Optional[EvaluateFn] = None) -> History:
    """Train ``model`` with BPR on ``train_csr``.

    Args:
        model: a :class:`~whyrec.models.base.Recommender`; a LightGCN without
            a graph gets ``train_csr`` as its graph. Models with
            ``trainable = False`` (Popularity) are not trained (no-op); they
            are only evaluated once when ``valid_csr`` is given.
        train_csr: ``(n_users, n_items)`` scipy binary training matrix.
        valid_csr: same shape, validation positives (``None``: no evaluation,
            no early stopping; the final weights are kept).
        config: :class:`TrainConfig`.
        out_dir: if given, ``curves.csv`` and ``curves.png`` are written there.
        progress: tqdm progress bars (loss and last metrics in the postfix).
        evaluate: ``f(model, train_csr, valid_csr, ks) -> dict`` of metrics;
            default :func:`whyrec.evaluate.ranking.evaluate_ranking` with
            ``model.score_users`` (training items masked).

    Returns:
        :class:`History`. At return the model holds the best evaluated
        weights (in eval mode).
    """
    config = config or TrainConfig()
    if getattr(model, "trainable", True) and getattr(model, "adj", False) is None and hasattr(model, "set_graph"):
        model.set_graph(train_csr)
    state: dict = {}
    setup = sampled_setup(model, train_csr, config, state)

    def bpr_epoch(epoch: int) -> dict:
        device, sampler, opt = state["device"], state["sampler"], state["opt"]
        lr = set_epoch_lr(opt, config, epoch)
        t0 = time.perf_counter()
        users, pos, neg = sampler.sample_epoch(epoch)
        t_sample = time.perf_counter() - t0
        tensors = tuple(torch.from_numpy(a).to(device) for a in (users, pos, neg))

        def bpr_batch(u, i, j) -> dict:
            be = model.batch_embeddings(u, i, j)
            s_pos = (be.users * be.pos).sum(-1)
            s_neg = (be.users * be.neg).sum(-1)
            return {"bpr": bpr_loss(s_pos, s_neg), "reg": batch_l2(config.reg, be)}

        row = minibatch_steps(opt, tensors, config.batch_size, bpr_batch)
        row["sample_seconds"] = t_sample
        row["lr"] = lr
        return row

    return run_epochs(model, bpr_epoch, train_csr, valid_csr, config, out_dir, progress, evaluate, setup)


def write_curves(hist: History, out_dir: str | os.PathLike) -> tuple[str, str]:
    """Write ``curves.csv`` (one row per epoch) and ``curves.png`` (loss and
    validation metrics vs epoch) into ``out_dir``; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    df = hist.to_frame()
    csv_path = os.path.join(out_dir, "curves.csv")
    df.to_csv(csv_path, index=False)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric_cols = [c for c in df.columns if "@" in c and not c.startswith("coverage")
                   and c.split("@")[0] in ("recall", "ndcg")]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1 = fig.add_subplot(1, 2, 1)
    ax1.plot(df["epoch"], df["loss"], label="loss")
    for part in ("bpr", "bce", "nll", "kl", "align"):  # the loss's parts, whichever the trainer logs
        if part in df.columns:
            ax1.plot(df["epoch"], df[part], label=part.upper() if part in ("bpr", "bce", "kl") else part, alpha=0.7)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.legend()
    ax2 = fig.add_subplot(1, 2, 2)
    for c in metric_cols:
        d = df[["epoch", c]].dropna()
        ax2.plot(d["epoch"], d[c], marker="o", label=c)
    if hist.best_epoch:
        ax2.axvline(hist.best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {hist.best_epoch})")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation")
    if metric_cols:
        ax2.legend()
    fig.tight_layout()
    png_path = os.path.join(out_dir, "curves.png")
    fig.savefig(png_path, dpi=100)
    return csv_path, png_path
