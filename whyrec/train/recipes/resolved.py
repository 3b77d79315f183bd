"""``--model resolved``: seed 002's explainable recommender (§4), trained on the ELBO.

Model settings come from ``--opt KEY=VALUE`` (defaults: the seed's Table 1 for Last.fm):
``D`` (segment size, 16), ``C`` (factors, 4; ``C1``/``C2`` set entity/item factors apart),
``gamma`` (0.1), ``beta`` (final KL weight, 0.2), ``anneal_epochs`` (20),
``first_term`` (false), and the training settings ``epochs`` (100), ``lr`` (2e-4),
``l2`` (1e-8), ``batch_users`` (128), ``eval_every`` (5).

The generic ``whyrec train`` flags ``--dim`` (D), ``--epochs``, ``--lr``, ``--batch-size``
(users per batch), ``--reg`` (l2) and ``--eval-every`` default to Table 1 for this model
(:attr:`Recipe.train_defaults`), so a plain ``whyrec train --model resolved`` runs Table 1; a
setting named by ``--opt`` wins over the flag.
Extras: the entity graph of :mod:`whyrec.data.entities` (Last.fm KG; genres, decades
and tags for MovieLens; Gowalla has none and is refused).
"""

from __future__ import annotations

import sys

from ...data.entities import entity_arrays, entity_graph_from_arrays
from ...models.resolved import Resolved, ResolvedConfig
from ..loop import TrainConfig
from . import Recipe, check_options

#: option name -> ResolvedConfig field
_KEYS = {"D": "dim", "dim_segment": "dim", "C": "n_factors", "C1": "n_entity_factors", "C2": "n_item_factors",
         "gamma": "gamma", "beta": "beta", "anneal_epochs": "anneal_epochs", "first_term": "first_term",
         "epochs": "epochs", "lr": "lr", "l2": "l2", "batch_users": "batch_users", "eval_every": "eval_every",
         "init_std": "init_std", "input_dropout": "input_dropout"}
#: Table 1 for the generic training flags (TrainConfig field -> ResolvedConfig value)
_TRAIN_FIELDS = {"epochs": "epochs", "lr": "lr", "batch_size": "batch_users", "reg": "l2", "eval_every": "eval_every"}
TRAIN_DEFAULTS = {flag: getattr(ResolvedConfig, field) for flag, field in _TRAIN_FIELDS.items()}


def model_config_from_options(options: dict, defaults: dict | None = None) -> dict:
    """``--opt`` values (and ``--dim``) -> ResolvedConfig fields."""
    cfg = dict(defaults or {})
    if options.get("dim") is not None:
        cfg["dim"] = int(options["dim"])
    check_options("the resolved model", options, _KEYS)
    for k, field in _KEYS.items():
        if k in options:
            cfg[field] = options[k]
    ResolvedConfig(**cfg)  # validate names early
    return cfg


def build(inputs, config: dict) -> Resolved:
    g = entity_graph_from_arrays(inputs.extras)
    model = Resolved(inputs.n_users, inputs.n_items, inputs.train, g.item_entity, g.n_entities, g.entity_entity,
                     ResolvedConfig(**config))
    model._explicit = set(config)  # settings named by --opt win over the generic CLI flags
    return model


def extras(data, train_index):
    return entity_arrays(data)


def fit(model, inputs, valid, train_config: TrainConfig, out_dir, progress):
    """ELBO training with ``train_config``'s epochs, lr, batch size (users), l2 and evaluation
    interval (``whyrec train`` fills them from Table 1 unless a flag is given), except for the
    settings ``--opt`` named."""
    from ..elbo import fit_elbo

    opts = getattr(model, "_explicit", set())
    for flag, field in _TRAIN_FIELDS.items():
        if field not in opts:
            setattr(model.config, field, type(getattr(model.config, field))(getattr(train_config, flag)))
    mc = model.config
    print(f"note: {RECIPE.name}: D={mc.dim} C1={mc.c1} C2={mc.c2} gamma={mc.gamma} epochs={mc.epochs} lr={mc.lr} "
          f"l2={mc.l2} batch_users={mc.batch_users} beta={mc.beta} anneal_epochs={mc.anneal_epochs} "
          f"eval_every={mc.eval_every}", file=sys.stderr)
    return fit_elbo(model, inputs.train, valid, train_config, out_dir, progress)


RECIPE = Recipe(
    name="resolved",
    build=build,
    model_config=lambda o: model_config_from_options(o),
    train_defaults=TRAIN_DEFAULTS,
    model_defaults={"dim": ResolvedConfig.dim},
    description="seed 002: factorized graph VAE over users, items, KG entities (ELBO); --opt D=16 C=4 gamma=0.1",
    extras=extras,
    fit=fit,
    explain_methods=("intrinsic", "paths", "counterfactual"),
)
