"""``--model vae``: the resolved model with one factor (C1 = C2 = 1), the non-disentangled
graph VAE ablation (the seed's VGAE row). Default segment size D = 64, the seed's VGAE
"dim = 64 for LastFM", which also gives the same total user dimension as ``resolved``
(C·D·2 = 128); ``--opt D=16`` gives the same D instead. Everything else as ``resolved``."""

from __future__ import annotations

from dataclasses import replace

from .resolved import RECIPE as RESOLVED, model_config_from_options


def model_config(options: dict) -> dict:
    cfg = model_config_from_options(options, {"dim": 64, "n_factors": 1})
    if int(cfg.get("n_factors", 1)) != 1 or cfg.get("n_entity_factors") not in (None, 1) \
            or cfg.get("n_item_factors") not in (None, 1):
        raise ValueError("the vae model has exactly one factor; use --model resolved for C > 1")
    return cfg


RECIPE = replace(RESOLVED, name="vae", model_config=model_config, model_defaults={"dim": 64},
                 description="ablation of resolved with C = 1 (non-disentangled graph VAE, the seed's VGAE row); D = 64")
