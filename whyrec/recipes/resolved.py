"""``--model resolved``: seed 002's explainable recommender (§4), trained on the ELBO.

Model settings come from ``--opt KEY=VALUE``: ``D`` (segment size, 16), ``C`` (factors, 4;
``C1``/``C2`` set entity/item factors apart), ``gamma`` (0.1), ``beta`` (final KL weight, 0.2),
``anneal_epochs`` (5), ``input_dropout`` (0.5), ``first_term`` (false); and the training
settings ``epochs`` (60), ``lr`` (1e-2), ``l2`` (1e-8), ``batch_users`` (128), ``eval_every`` (5),
the same as the generic ``--epochs``, ``--lr``, ``--reg``, ``--batch-size`` (users per batch) and
``--eval-every`` (a setting named by ``--opt`` wins over the flag).

The defaults are the tuned setting of docs/resolved.md (Last.fm Recall@10 0.216, NDCG@100
0.248); ``--preset paper`` is the seed's Table 1 (lr 2e-4, 100 epochs, KL warm-up over 20 epochs,
no input dropout). Validation: NDCG@100 (:data:`whyrec.train.elbo.MONITOR`).
Extras: the entity graph of :mod:`whyrec.data.entities` (Last.fm KG; genres, decades
and tags for MovieLens; Gowalla has none and is refused).
"""

from __future__ import annotations

from ..data.entities import entity_arrays, entity_graph_from_arrays
from ..models.resolved import Resolved, ResolvedConfig
from ..train.elbo import ELBO, EVAL_KS, MONITOR
from . import Recipe, check_options, settings_note

#: option name -> ResolvedConfig field
_KEYS = {"D": "dim", "dim_segment": "dim", "C": "n_factors", "C1": "n_entity_factors", "C2": "n_item_factors",
         "gamma": "gamma", "beta": "beta", "anneal_epochs": "anneal_epochs", "first_term": "first_term",
         "init_std": "init_std", "input_dropout": "input_dropout"}
#: option name -> TrainConfig field (older runs saved these in their model config)
TRAIN_OPTIONS = {"epochs": "epochs", "lr": "lr", "l2": "reg", "batch_users": "batch_size", "eval_every": "eval_every"}
#: the tuned setting (docs/resolved.md): training, then model options
TRAIN_DEFAULTS = {"epochs": 60, "lr": 1e-2, "batch_size": 128, "reg": 1e-8, "eval_every": 5, "ks": EVAL_KS,
                  "monitor": MONITOR}
MODEL_DEFAULTS = {"input_dropout": 0.5, "anneal_epochs": 5}
#: the seed's Table 1
PRESETS = {"paper": {"train": {"epochs": 100, "lr": 2e-4}, "options": {"input_dropout": 0.0, "anneal_epochs": 20}}}


def model_config_from_options(options: dict, defaults: dict | None = None) -> dict:
    """``--opt`` values (and ``--dim``) -> ResolvedConfig fields."""
    cfg = {**MODEL_DEFAULTS, **(defaults or {})}
    if options.get("dim") is not None:
        cfg["dim"] = int(options["dim"])
    check_options("the resolved model", options, {*_KEYS, *TRAIN_OPTIONS})
    for k, field in _KEYS.items():
        if k in options:
            cfg[field] = options[k]
    ResolvedConfig(**cfg)  # validate names early
    return cfg


def build(inputs, config: dict) -> Resolved:
    g = entity_graph_from_arrays(inputs.extras)
    config = {k: v for k, v in config.items() if k not in TRAIN_OPTIONS}
    return Resolved(inputs.n_users, inputs.n_items, inputs.train, g.item_entity, g.n_entities, g.entity_entity,
                    ResolvedConfig(**config))


def extras(data, train_index):
    return entity_arrays(data)


def summary(model, config) -> str:
    return settings_note(RECIPE.name, model.config, config,
                         {"D": "dim", "C1": "c1", "C2": "c2", "gamma": "gamma", "beta": "beta",
                          "anneal_epochs": "anneal_epochs"},
                         {"epochs": "epochs", "lr": "lr", "l2": "reg", "batch_users": "batch_size",
                          "eval_every": "eval_every"})


RECIPE = Recipe(
    name="resolved",
    build=build,
    model_config=lambda o: model_config_from_options(o),
    objective=lambda inputs, config: ELBO(),
    train_defaults=TRAIN_DEFAULTS,
    train_options=TRAIN_OPTIONS,
    model_defaults={"dim": ResolvedConfig.dim},
    presets=PRESETS,
    summary=summary,
    description="seed 002: factorized graph VAE over users, items, KG entities (ELBO); --opt D=16 C=4 gamma=0.1",
    extras=extras,
    explain_methods=("intrinsic", "paths", "counterfactual", "shapley"),
)
