"""``--model lightgcn-features``: LightGCN whose layer-0 rows are ``P + X W`` with the dataset's
named user / item feature matrices (seed 000; :mod:`whyrec.models.lightgcn_features`).

``--features user,item | user | item | none`` picks the sides; ``--opt loss=bpr`` (default: the
project's LightGCN objective, best for the ranking metrics everything is compared on) or
``--opt loss=bce`` (the seed's BCE over observed ratings, :mod:`whyrec.train.bce`);
``--opt bce_negatives=0|1`` (sampled unobserved negatives per observed rating for BCE, default 1);
``--opt proj_init_std=S`` (init std of the projections, default 0.01).

``extras.npz`` holds ``user_features`` / ``item_features`` (float32) with their
``*_feature_columns`` and ``*_feature_groups`` (fixed-width unicode arrays), and for BCE the
observed non-positive ratings ``bce_zero_users`` / ``bce_zero_items``: interactions rated below
the lowest training-positive rating (i.e. below ``--min-rating``), never validation/test targets.
"""

from __future__ import annotations

import numpy as np

from ..models.lightgcn_features import LightGCNFeatures, LightGCNFeaturesConfig, parse_features
from . import PAPER_BPR, Recipe, check_options

_KNOWN = {"dim", "layers", "features", "loss", "bce_negatives", "proj_init_std"}


def extras(data, train_index) -> dict:
    out: dict[str, np.ndarray] = {}
    for side, fm in (("user", data.user_features), ("item", data.item_features)):
        if fm is None:
            continue
        out[f"{side}_features"] = np.asarray(fm.values, np.float32)
        out[f"{side}_feature_columns"] = np.asarray(fm.columns, dtype=str)
        out[f"{side}_feature_groups"] = np.asarray(fm.groups, dtype=str)
    train_index = np.asarray(train_index, np.int64)
    if data.explicit and len(train_index):
        threshold = float(data.ratings[train_index].min())
        low = np.flatnonzero(data.ratings < threshold)
        out["bce_zero_users"] = data.users[low].astype(np.int32)
        out["bce_zero_items"] = data.items[low].astype(np.int32)
    return out


def model_config(o: dict) -> dict:
    check_options("lightgcn-features", o, _KNOWN, "loss (bpr|bce), bce_negatives (0|1) and proj_init_std")
    use_user, use_item = parse_features(o.get("features", "user,item"))
    features = ",".join(s for s, on in (("user", use_user), ("item", use_item)) if on) or "none"
    loss = str(o.get("loss", "bpr")).lower()
    if loss not in ("bpr", "bce"):
        raise ValueError(f"--opt loss must be bpr or bce, got {o.get('loss')!r}")
    negatives = o.get("bce_negatives", 1)
    if negatives not in (0, 1) or isinstance(negatives, bool):
        raise ValueError(f"--opt bce_negatives must be 0 or 1, got {negatives!r}")
    cfg = {"dim": o["dim"], "n_layers": o["layers"], "features": features, "loss": loss,
           "bce_negatives": int(negatives)}
    if "proj_init_std" in o:
        std = float(o["proj_init_std"])
        if not std >= 0:
            raise ValueError(f"--opt proj_init_std must be >= 0, got {o['proj_init_std']!r}")
        cfg["proj_init_std"] = std
    return cfg


def build(inputs, config: dict) -> LightGCNFeatures:
    cfg = LightGCNFeaturesConfig(**config)
    use_user, use_item = parse_features(cfg.features)
    return LightGCNFeatures(inputs.n_users, inputs.n_items, cfg, graph=inputs.train,
                            user_features=inputs.extras.get("user_features") if use_user else None,
                            item_features=inputs.extras.get("item_features") if use_item else None)


def objective(inputs, config: dict):
    """BPR, or with ``loss=bce`` the seed's BCE over the observed ratings."""
    if config.get("loss", "bpr") == "bce":
        from ..train.bce import BCE

        return BCE(inputs.extras.get("bce_zero_users"), inputs.extras.get("bce_zero_items"),
                   negatives=int(config.get("bce_negatives", 1)))
    return None


RECIPE = Recipe(
    name="lightgcn-features",
    build=build,
    model_config=model_config,
    description="LightGCN with side features E0 = P + XW (--features; --opt loss=bpr|bce)",
    extras=extras,
    objective=objective,
    explain_methods=("features", "history", "concepts", "counterfactual"),
    presets=PAPER_BPR,
)
