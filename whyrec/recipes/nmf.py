"""``--model nmf``: scikit-learn NMF on the binary training matrix (seed 002's NMF baseline:
16 factors, L1 = L2, coefficient 0.005). Options: ``--opt k=16 --opt alpha=0.005
--opt l1_ratio=0.5 --opt max_iter=500``. One closed fit, no epochs, no model selection
(validation metrics are reported)."""

from __future__ import annotations

import time

from ..models.nmf import NMFConfig, NMFRecommender
from ..train.loop import History, _default_evaluate, _run_eval
from . import Recipe, check_options

_KEYS = {"k": "n_components", "n_components": "n_components", "alpha": "alpha", "l1_ratio": "l1_ratio",
         "max_iter": "max_iter"}


def model_config(options: dict) -> dict:
    check_options("nmf", options, _KEYS)
    return {_KEYS[k]: v for k, v in options.items() if k in _KEYS}


def fit(model, inputs, valid, train_config, model_config, progress):
    t0 = time.perf_counter()
    model.config.seed = int(train_config.seed)
    model.fit_matrix(inputs.train)
    hist = History(monitor="ndcg@100", config={"seed": train_config.seed, "objective": "nmf",
                                               **model.config.__dict__})
    if valid is not None and valid.nnz:
        m = _run_eval(model, _default_evaluate(train_config.eval_batch_size), inputs.train, valid, (2, 10, 50, 100))
        hist.evals.append((0, m))
        hist.best_epoch, hist.best_score, hist.best_metrics = 0, m["ndcg@100"], m
    hist.seconds = time.perf_counter() - t0
    return hist


RECIPE = Recipe(
    name="nmf",
    build=lambda inputs, config: NMFRecommender(inputs.n_users, inputs.n_items, NMFConfig(**config)),
    model_config=model_config,
    description="non-negative matrix factorization (scikit-learn), seed 002's NMF baseline",
    fit=fit,
    explain_methods=("counterfactual", "shapley"),
)
