"""``--model kgcn``: KGCN (Wang et al., WWW 2019; :mod:`whyrec.models.kgcn`) over the dataset's
knowledge graph, trained with the paper's BCE protocol (every training positive with target 1 plus
one uniformly sampled unobserved item with target 0, re-drawn every epoch;
:class:`whyrec.train.bce.BCE`).

Model settings: ``--opt n_neighbors=K`` (8), ``--opt n_iter=H`` (1), ``--opt aggregator=sum|concat|neighbor``
(sum), ``--opt neighbor_seed=S`` (default: follows ``--seed``); ``--dim`` (16).
Training defaults are the paper's for Last.fm: lr 5e-4, batch 128, L2 1e-4 (``--reg``, on the batch's
user and item rows, see :mod:`whyrec.models.kgcn`). The paper trains 10 epochs (``--preset paper``);
here at most 600 epochs, evaluated every 20 (early stopping on validation decides; docs/resolved.md's
run stopped at 500, best at 400), because at lr 5e-4 ten epochs are barely past the popularity
ranking on our Last.fm split.

The generic flags ``--dim``, ``--lr``, ``--batch-size`` and ``--reg`` default to these values for
this model (:attr:`Recipe.train_defaults` / ``model_defaults``); a given flag wins. ``--layers`` is
not KGCN's: use ``--opt n_iter``.

``extras.npz``: ``kg_triples`` ``(n, 3)`` int64 (head, relation, tail; item ``i`` is entity ``i``),
``n_entities`` and ``n_relations`` (``(1,)`` int64). A dataset without a KG is refused.
"""

from __future__ import annotations

import numpy as np

from ..models.kgcn import AGGREGATORS, KGCN, KGCNConfig
from ..train.bce import BCE
from . import Recipe, check_options, settings_note

#: the paper's Last.fm settings for the generic training flags (TrainConfig field -> value)
TRAIN_DEFAULTS = {"lr": 5e-4, "batch_size": 128, "reg": 1e-4, "epochs": 600, "eval_every": 20}
_OPTS = {"n_neighbors": int, "n_iter": int, "aggregator": str, "neighbor_seed": int}


def extras(data, train_index) -> dict:
    """The KG as arrays; ``ValueError`` for a dataset without one."""
    if data.kg_triples is None or len(data.kg_triples) == 0:
        raise ValueError(f"kgcn needs a knowledge graph and {data.name} has none; lastfm-kg has one")
    triples = np.asarray(data.kg_triples, np.int64)
    n_relations = max(len(data.relation_names), int(triples[:, 1].max()) + 1)
    return {"kg_triples": triples,
            "n_entities": np.asarray([max(int(data.n_entities), data.n_items)], np.int64),
            "n_relations": np.asarray([n_relations], np.int64)}


def model_config(o: dict) -> dict:
    check_options("kgcn", o, _OPTS, ", ".join(_OPTS))
    if o.get("layers") is not None:
        raise ValueError("kgcn has no --layers; set the receptive-field depth with --opt n_iter=H")
    cfg = {"dim": int(o["dim"]) if o.get("dim") is not None else KGCNConfig.dim}
    for key, kind in _OPTS.items():
        if key in o:
            value = o[key]
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"--opt {key} must be an integer, got {value!r}")
            cfg[key] = kind(value)
    if cfg.get("aggregator", "sum") not in AGGREGATORS:
        raise ValueError(f"--opt aggregator must be one of {', '.join(AGGREGATORS)}, got {cfg['aggregator']!r}")
    for key in ("dim", "n_neighbors", "n_iter"):
        if key in cfg and cfg[key] < 1:
            raise ValueError(f"kgcn {key} must be >= 1, got {cfg[key]}")
    return cfg


def build(inputs, config: dict) -> KGCN:
    ex = inputs.extras
    if "kg_triples" not in ex:
        raise ValueError("kgcn needs a knowledge graph (kg_triples) in the run's extras")
    return KGCN(inputs.n_users, inputs.n_items, ex["kg_triples"], int(np.asarray(ex["n_entities"]).reshape(-1)[0]),
                int(np.asarray(ex["n_relations"]).reshape(-1)[0]), KGCNConfig(**config))


def summary(model, config) -> str:
    return settings_note("kgcn", model.config, config, {k: k for k in ("dim", "n_neighbors", "n_iter", "aggregator")},
                         {"lr": "lr", "batch_size": "batch_size", "l2": "reg", "epochs": "epochs",
                          "eval_every": "eval_every"})


RECIPE = Recipe(
    name="kgcn",
    build=build,
    model_config=model_config,
    description="KGCN: user-specific KG neighbourhood aggregation, BCE (--opt n_neighbors=8 n_iter=1)",
    extras=extras,
    objective=lambda inputs, config: BCE(negatives=1),
    summary=summary,
    explain_methods=(),
    train_defaults=TRAIN_DEFAULTS,
    presets={"paper": {"train": {"epochs": 10}}},
    model_defaults={"dim": KGCNConfig.dim, "layers": None},
)
