"""Fitting the graph filters (``gf-cf``, ``bspm``, ``cheby-cf``): no epochs, no gradients.

1. The truncated SVD of ``R̃`` (:meth:`whyrec.models.spectral.LinearFilter.fit_basis`), with as many
   columns as the largest rank the selection grid tries.
2. **Selection** (:func:`whyrec.train.select.select_config`): when the split has a validation part
   and ``--opt select=false`` was not given, every combination of the model's grid — minus the
   settings the user fixed with ``--opt`` — is scored on the validation users (at most
   ``select_users``, default 5,000, a seeded sample) by Recall@20, and the best is kept. Without a
   validation part (Gowalla's official split unless ``--valid-ratio``) the paper's values stand.
3. The basis is cut to the chosen rank; the chosen settings are the run's ``model_config`` and the
   whole grid with its scores is saved in ``config.json`` under ``train_config.selection``.
"""

from __future__ import annotations

import dataclasses
import time
import typing

from ..evaluate.ranking import evaluate_ranking
from ..train.loop import History
from . import COMMON_OPTIONS, Recipe, check_options
from ..train.select import select_config

__all__ = ["filter_recipe", "SELECT_OPTIONS"]

#: ``--opt`` keys that steer the selection rather than the model
SELECT_OPTIONS = {"select": "true/false: choose the grid's settings on validation (default true)",
                  "select_users": "validation users scored per setting (default 5000)"}


def _coerce(model: str, key: str, value, kind):
    """``--opt`` value (already JSON-parsed) as the config field's type, or a one-line error."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if out != out or out in (float("inf"), float("-inf")):
                raise ValueError
            return out
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{model}: --opt {key} must be {kind.__name__}, got {value!r}") from None


def filter_recipe(name: str, model_cls, config_cls, grid: dict, description: str) -> Recipe:
    """The :class:`Recipe` of a graph filter: ``--opt FIELD=VALUE`` for every field of
    ``config_cls`` (typed, checked) plus :data:`SELECT_OPTIONS`; ``grid`` lists, per field, the
    values selection tries (the paper's value first)."""
    hints = typing.get_type_hints(config_cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}

    def model_config(options: dict) -> dict:
        described = ", ".join([*fields, *SELECT_OPTIONS])
        check_options(name, options, {*fields, *SELECT_OPTIONS}, described)
        out = {k: _coerce(name, k, v, fields[k]) for k, v in options.items() if k in fields}
        out["_fixed"] = sorted(out)  # what selection must not change
        for k in SELECT_OPTIONS:
            if k in options:
                out[f"_{k}"] = _coerce(name, k, options[k], bool if k == "select" else int)
        return out

    def config_of(config: dict):
        return config_cls(**{k: v for k, v in config.items() if not k.startswith("_") and k not in COMMON_OPTIONS})

    def build(inputs, config: dict):
        return model_cls(inputs.train, config_of(config))

    def fit(model, inputs, valid, train_config, options: dict, progress):
        t0 = time.perf_counter()
        fixed = set(options.get("_fixed", ()))
        full = min(model.n_users, model.n_items)
        space = {k: list(dict.fromkeys(min(int(v), full) for v in vs)) if k == "rank" else list(vs)
                 for k, vs in grid.items() if k not in fixed}  # ranks clipped to what exists, in grid order
        select = options.get("_select", True) and valid is not None and valid.nnz > 0 and bool(space)
        ranks = space.get("rank", []) if select else []
        model.fit_basis(seed=int(train_config.seed), rank=max([model.config.rank, *ranks]))
        hist = History(monitor="recall@20")
        selection = None
        if select:
            selection = select_config(model, space, inputs.train, valid, monitor="recall@20", ks=(20,),
                                      max_users=options.get("_select_users", 5000), seed=int(train_config.seed),
                                      progress=progress is True)
        model.truncate_basis()
        if valid is not None and valid.nnz:
            metrics = evaluate_ranking(model.score_users, inputs.train, valid, ks=(10, 20))
            metrics = {k: float(v) for k, v in metrics.items()}
            hist.evals.append((0, metrics))
            hist.best_epoch, hist.best_score, hist.best_metrics = 0, metrics["recall@20"], metrics
        hist.seconds = time.perf_counter() - t0
        hist.config = {"seed": int(train_config.seed), "objective": "closed form (training-free filter)",
                       "selection": selection if selection else
                       ("none: the split has no validation part" if not (valid is not None and valid.nnz)
                        else "none: fixed by --opt")}
        return hist

    def final_config(model, config: dict) -> dict:
        return dataclasses.asdict(model.config)

    return Recipe(name=name, build=build, model_config=model_config, description=description, fit=fit,
                  explain_methods=("history", "concepts", "counterfactual", "shapley"), final_config=final_config,
                  model_defaults={"dim": None, "layers": None})
