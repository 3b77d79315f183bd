"""``--model vae``: the resolved model with one factor (C1 = C2 = 1), the non-disentangled
graph VAE ablation (the seed's VGAE row). Default segment size D = 64, the seed's VGAE
"dim = 64 for LastFM", which also gives the same total user dimension as ``resolved``
(C·D·2 = 128); ``--opt D=16`` gives the same D instead. Everything else as ``resolved``."""

from __future__ import annotations

from .resolved import TRAIN_DEFAULTS, build, extras, fit, model_config_from_options
from . import Recipe


def model_config(options: dict) -> dict:
    cfg = model_config_from_options(options, {"dim": 64, "n_factors": 1})
    if int(cfg.get("n_factors", 1)) != 1 or cfg.get("n_entity_factors") not in (None, 1) \
            or cfg.get("n_item_factors") not in (None, 1):
        raise ValueError("the vae model has exactly one factor; use --model resolved for C > 1")
    return cfg


RECIPE = Recipe(
    name="vae",
    build=build,
    model_config=model_config,
    description="ablation of resolved with C = 1 (non-disentangled graph VAE, the seed's VGAE row); D = 64",
    extras=extras,
    fit=fit,
    explain_methods=("intrinsic", "paths", "counterfactual"),
    train_defaults=TRAIN_DEFAULTS,
    model_defaults={"dim": 64},
)
