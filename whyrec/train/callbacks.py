"""Callbacks of :class:`whyrec.train.loop.Trainer`: everything around the epoch loop.

A callback has three hooks, called in list order with the trainer as first argument:
``on_begin(trainer)`` before the first epoch (optimizer and objective ready), ``on_epoch(trainer,
row)`` after each epoch (``row`` holds the validation metrics when ``trainer.at_eval`` and a
validation matrix was given), ``on_end(trainer, completed)`` always, also after an error or
Ctrl-C (``completed`` is then ``False``). Setting ``trainer.stop`` ends training after the epoch.

* :class:`EarlyStopping` — best weights of a checked monitor, restored at the end; stops after
  ``patience`` evaluations without improvement.
* :class:`Checkpoint` — the resumable ``training_state.pt`` (:mod:`whyrec.train.checkpoint`).
* :class:`Progress` — a tqdm bar, or one line on stderr per evaluation.
* :class:`Curves` — ``curves.csv`` and ``curves.png``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from typing import Optional

from .checkpoint import TRAINING_STATE, load_training_state, save_training_state, train_fingerprint
from .loop import History, TrainConfig, check_monitor

__all__ = ["Callback", "EarlyStopping", "Checkpoint", "Progress", "Curves", "default_callbacks", "write_curves"]


class Callback:
    """No-op hooks; subclasses override what they need."""

    def on_begin(self, trainer) -> None:
        pass

    def on_epoch(self, trainer, row: dict) -> None:
        pass

    def on_end(self, trainer, completed: bool) -> None:
        pass


class EarlyStopping(Callback):
    """Keep the weights of the best evaluation of ``monitor`` (``history.best_*``); stop after
    ``patience`` evaluations in a row without a strictly better score (``None``: never); load the
    best weights back at the end. ``monitor`` must be one of the metrics at ``ks``."""

    def __init__(self, monitor: str = "recall@20", patience: Optional[int] = 5, ks=(20,)):
        self.monitor = check_monitor(monitor, ks)
        self.patience = patience
        self.best_state: Optional[dict] = None
        self.bad = 0

    def on_epoch(self, trainer, row: dict) -> None:
        if not trainer.at_eval or not trainer.history.evals or trainer.history.evals[-1][0] != row["epoch"]:
            return
        hist, metrics = trainer.history, trainer.history.evals[-1][1]
        score = metrics.get(self.monitor)
        if score is None:
            raise KeyError(f"evaluation returned no {self.monitor!r} (keys: {sorted(metrics)})")
        if hist.best_score is None or score > hist.best_score:
            hist.best_epoch, hist.best_score, hist.best_metrics = row["epoch"], score, metrics
            self.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            self.bad = 0
        else:
            self.bad += 1
            if self.patience is not None and self.bad >= self.patience:
                trainer.stop = True

    def on_end(self, trainer, completed: bool) -> None:
        if completed and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


#: settings a resumed run may change
_NOT_PART_OF_RESUME = ("device", "num_threads", "eval_batch_size", "patience", "resume")


def _resume_config(config: TrainConfig) -> dict:
    """The config a resumed run must share with the interrupted one (``epochs`` too, unless the
    learning rate is constant: then it may simply train on)."""
    out = {k: v for k, v in asdict(config).items() if k not in _NOT_PART_OF_RESUME}
    if config.lr_schedule == "constant":
        out.pop("epochs")
    return out


class Checkpoint(Callback):
    """At every evaluation point (but the one that stops training) write ``out_dir/training_state.pt``:
    current and best weights, Adam's moments, the history, and the config and training matrix it
    belongs to; remove it when training completes. With ``config.resume`` the trainer continues
    from it at the next epoch; since each epoch's examples depend only on ``(seed, epoch)``, the
    resumed run trains exactly as the uninterrupted one would. ``stopping``: the
    :class:`EarlyStopping` whose best weights and count are part of the state."""

    def __init__(self, out_dir: str | os.PathLike, stopping: Optional[EarlyStopping] = None):
        self.path = os.path.join(out_dir, TRAINING_STATE)
        self.stopping = stopping or EarlyStopping(patience=None)

    def on_begin(self, trainer) -> None:
        self.identity = {"config": _resume_config(trainer.config), "train": train_fingerprint(trainer.train_csr)}
        if not trainer.config.resume:
            return
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.path}: no training state to resume from")
        model, device, hist = trainer.model, trainer.device, trainer.history
        saved = load_training_state(self.path, model, self.identity)
        info = saved["info"]
        model.load_state_dict({k: v.to(device) for k, v in saved["model"].items()})
        trainer.opt.load_state_dict(saved["optimizer"])
        model.invalidate_cache()
        hist.epochs = list(info["epochs"])
        hist.evals = [(int(e), m) for e, m in info["evals"]]
        hist.best_epoch, hist.best_score, hist.best_metrics = info["best_epoch"], info["best_score"], info["best_metrics"]
        self.stopping.best_state = {k: v.to(device) for k, v in saved["best"].items()} if saved["best"] else None
        self.stopping.bad = int(info["bad"])
        trainer.first_epoch = int(info["epoch"]) + 1
        trainer.t_start -= float(info["seconds"])

    def on_epoch(self, trainer, row: dict) -> None:
        if not trainer.at_eval or trainer.stop:
            return
        hist = trainer.history
        save_training_state(self.path, model=trainer.model, optimizer=trainer.opt, best_state=self.stopping.best_state,
                            info={**self.identity, "epoch": row["epoch"], "bad": self.stopping.bad,
                                  "seconds": time.perf_counter() - trainer.t_start, "epochs": hist.epochs,
                                  "evals": hist.evals, "best_epoch": hist.best_epoch, "best_score": hist.best_score,
                                  "best_metrics": hist.best_metrics})

    def on_end(self, trainer, completed: bool) -> None:
        if completed and os.path.exists(self.path):
            os.remove(self.path)  # finished: the run's result is the model itself


class Progress(Callback):
    """``bar=True``: a tqdm bar with the loss and the last metrics; ``bar=False``: one line on
    stderr per evaluation point (``epoch 10/150  loss 0.1234  recall@20 0.3012  ndcg@20 0.2501``)."""

    def __init__(self, bar: bool = True):
        self.bar = bar
        self._tqdm = None

    def _shown(self, trainer) -> list[str]:
        return list(dict.fromkeys((trainer.history.monitor, f"ndcg@{trainer.config.ks[0]}")))

    def on_begin(self, trainer) -> None:
        if self.bar:
            from tqdm.auto import tqdm

            self._tqdm = tqdm(total=trainer.config.epochs, initial=trainer.first_epoch - 1,
                              desc=f"train {type(trainer.model).__name__}", unit="epoch")

    def on_epoch(self, trainer, row: dict) -> None:
        if self._tqdm is None:
            if trainer.at_eval:
                parts = [f"epoch {row['epoch']}/{trainer.config.epochs}", f"loss {row['loss']:.4f}"]
                parts += [f"{k} {row[k]:.4f}" for k in self._shown(trainer) if k in row]
                print("  ".join(parts), file=sys.stderr, flush=True)
            return
        last = trainer.history.evals[-1][1] if trainer.history.evals else {}
        post = {"loss": f"{row['loss']:.4f}", **{k: f"{last[k]:.4f}" for k in self._shown(trainer) if k in last}}
        self._tqdm.set_postfix(post)
        self._tqdm.update(1)

    def on_end(self, trainer, completed: bool) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None


class Curves(Callback):
    """Write ``curves.csv``/``curves.png`` into ``out_dir`` at the end (also of an interrupted run)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = out_dir

    def on_end(self, trainer, completed: bool) -> None:
        if trainer.history.epochs:
            write_curves(trainer.history, self.out_dir)


def default_callbacks(config: TrainConfig, out_dir=None, progress=True, resumable: bool = True) -> list:
    """Early stopping on ``config.monitor``; with ``out_dir`` the training state (``resumable``
    objectives) and the curves; :class:`Progress` unless ``progress`` is false (``"lines"``: lines)."""
    stopping = EarlyStopping(config.monitor, config.patience, config.ks)
    out: list = [stopping]
    if out_dir is not None and resumable:
        out.append(Checkpoint(out_dir, stopping))
    if progress:
        out.append(Progress(bar=progress != "lines"))
    if out_dir is not None:
        out.append(Curves(out_dir))
    return out


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
    for part in ("bpr", "bce", "nll", "kl", "align"):  # the loss's parts, whichever the objective logs
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
