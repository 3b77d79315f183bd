"""The library's face: a few obvious lines from data to explained recommendations.

>>> import whyrec
>>> data = whyrec.load_dataset("ml-100k", "../shared/datasets/ml-100k")
>>> run = whyrec.fit(data, model="gf-cf", seed=0)            # doctest: +SKIP
>>> run.evaluate(k=[10, 20])["recall@20"]                     # doctest: +SKIP
>>> run.recommend(user="1", k=10)[0].title                    # doctest: +SKIP
>>> run.explain(user="1", method="history").contributions[:3] # doctest: +SKIP
>>> run.save("runs/ml100k"); again = whyrec.load("runs/ml100k")  # doctest: +SKIP

``whyrec train`` and the service are thin wrappers over the same calls (:mod:`whyrec.pipeline`,
:class:`whyrec.run.Run`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

__all__ = ["fit", "load", "available_models", "MODELS"]

#: :func:`fit` keywords that are training settings (``whyrec train`` flags); every other keyword is
#: a model option (``--opt KEY=VALUE``)
TRAIN_KEYS = ("epochs", "batch_size", "lr", "reg", "eval_every", "lr_schedule", "lr_min", "positives", "monitor",
              "preset", "dim", "layers", "features")
RUN_KEYS = ("min_rating", "valid_ratio", "patience", "eval_on_test", "device", "threads")


def fit(data, model: str = "lightgcn", split: Optional[str] = None, seed: int = 2020, k=(10, 20),
        progress: bool = True, **settings):
    """Train ``model`` on ``data`` (an :class:`~whyrec.data.InteractionData`, e.g. from
    :func:`whyrec.load_dataset` or :func:`whyrec.from_interactions`) in memory and return a
    :class:`~whyrec.run.Run` (nothing is written; ``run.save(path)`` writes the run folder).

    ``split``: ``user-holdout``, ``edge``, ``heldout-users`` or ``official`` (default: the dataset's
    own). Keywords named like ``whyrec train``'s flags (``epochs``, ``lr``, ``batch_size``, ``reg``,
    ``eval_every``, ``dim``, ``layers``, ``patience``, ``min_rating``, ``valid_ratio``, ``device``,
    ``threads``, ``monitor``, ``preset="paper"``, ...) are those settings; any other keyword is a model option (``--opt``), e.g.
    ``fit(data, model="gf-cf", alpha=0.5)``. Unknown options are a :class:`ValueError`."""
    from .pipeline import plan_training, run_training
    from .run import Run

    train_kw = {k_: settings.pop(k_) for k_ in TRAIN_KEYS if k_ in settings}
    run_kw = {k_: settings.pop(k_) for k_ in RUN_KEYS if k_ in settings}
    plan = plan_training(model, options=settings, ks=(k,) if isinstance(k, int) else tuple(k), **train_kw)
    trained = run_training(plan, data, split=split, seed=seed, progress=progress, out_dir=None,
                           note=lambda text: warnings.warn(text, stacklevel=3), **run_kw)
    return Run.from_trained(trained) if trained is not None else None  # None: a torchrun rank but 0


def load(path: str | Path, device: str = "cpu"):
    """A run folder written by ``whyrec train`` or :meth:`Run.save`, checksums verified, its model on
    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; :meth:`whyrec.run.Run.to` moves it later)."""
    from .run import load_run

    return load_run(path, device=device)


def available_models() -> dict[str, str]:
    """The models :func:`fit` (``model=``) and ``whyrec train --model`` accept: name -> one-line
    description (what ``whyrec models`` lists)."""
    from .recipes import recipes

    return {name: recipe.description for name, recipe in recipes().items()}


def __getattr__(name: str):
    if name == "MODELS":  # the registry, read-only: name -> Recipe (imported on first use)
        from types import MappingProxyType

        from .recipes import recipes

        return MappingProxyType(recipes())
    raise AttributeError(f"module 'whyrec.api' has no attribute {name!r}")
