"""``--model lightgcn-aligned``: LightGCN + a regularizer aligning genre CAV sensitivities with users'
standardized genre preferences (seed 004's open question; see :mod:`whyrec.train.alignment`).

``--opt align_weight=W`` (default 0.1; 0 = plain LightGCN), ``--opt align_refit=K`` (epochs between
CAV re-fits, default 1). Needs a dataset with item genres (MovieLens).
"""

from ..alignment import DEFAULT_ALIGN_REFIT, DEFAULT_ALIGN_WEIGHT, AlignedLightGCN, alignment_extras, fit_aligned
from ...models import LightGCNConfig
from . import Recipe, check_options


def build(inputs, config: dict) -> AlignedLightGCN:
    config = dict(config)
    weight = float(config.pop("align_weight", DEFAULT_ALIGN_WEIGHT))
    refit = int(config.pop("align_refit", DEFAULT_ALIGN_REFIT))
    return AlignedLightGCN(inputs.n_users, inputs.n_items, LightGCNConfig(**config), graph=inputs.train,
                           align_weight=weight, align_refit=refit)


def model_config(o: dict) -> dict:
    weight = float(o.get("align_weight", DEFAULT_ALIGN_WEIGHT))
    refit = int(o.get("align_refit", DEFAULT_ALIGN_REFIT))
    if weight < 0 or not weight == weight:
        raise ValueError(f"--opt align_weight must be >= 0, got {o.get('align_weight')!r}")
    if refit < 1:
        raise ValueError(f"--opt align_refit must be >= 1 epoch, got {o.get('align_refit')!r}")
    check_options("lightgcn-aligned", o, {"align_weight", "align_refit"}, "align_weight and align_refit")
    return {"dim": o["dim"], "n_layers": o["layers"], "align_weight": weight, "align_refit": refit}


RECIPE = Recipe(
    name="lightgcn-aligned",
    build=build,
    model_config=model_config,
    description="LightGCN + genre-CAV alignment regularizer (--opt align_weight=0.1, align_refit=1)",
    extras=alignment_extras,
    fit=fit_aligned,
    explain_methods=("history", "concepts", "counterfactual"),
)
