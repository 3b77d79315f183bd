"""``--model lightgcn-aligned``: LightGCN trained with BPR plus a term aligning genre CAV sensitivities
with users' standardized genre preferences (seed 004's open question): the plain LightGCN model and
the :class:`~whyrec.train.alignment.Alignment` objective.

``--opt align_weight=W`` (default 0.1; 0 = plain LightGCN), ``--opt align_refit=K`` (epochs between
CAV re-fits, default 1); they are saved in the run's model config. Needs a dataset with item genres
(MovieLens).
"""

from ..train.alignment import DEFAULT_ALIGN_REFIT, DEFAULT_ALIGN_WEIGHT, Alignment, alignment_extras
from ..models import LightGCN, LightGCNConfig
from . import PAPER_BPR, Recipe, check_options

_ALIGN = ("align_weight", "align_refit")


def build(inputs, config: dict) -> LightGCN:
    config = {k: v for k, v in config.items() if k not in _ALIGN}
    return LightGCN(inputs.n_users, inputs.n_items, LightGCNConfig(**config), graph=inputs.train)


def objective(inputs, config: dict) -> Alignment:
    ex = inputs.extras
    if "align_genres" not in ex or "align_pref" not in ex:
        raise ValueError("lightgcn-aligned needs align_genres/align_pref extras (made by its recipe)")
    return Alignment(ex["align_genres"], ex["align_pref"], weight=config.get("align_weight", DEFAULT_ALIGN_WEIGHT),
                     refit=config.get("align_refit", DEFAULT_ALIGN_REFIT))


def model_config(o: dict) -> dict:
    weight = float(o.get("align_weight", DEFAULT_ALIGN_WEIGHT))
    refit = int(o.get("align_refit", DEFAULT_ALIGN_REFIT))
    if weight < 0 or not weight == weight:
        raise ValueError(f"--opt align_weight must be >= 0, got {o.get('align_weight')!r}")
    if refit < 1:
        raise ValueError(f"--opt align_refit must be >= 1 epoch, got {o.get('align_refit')!r}")
    check_options("lightgcn-aligned", o, set(_ALIGN), "align_weight and align_refit")
    return {"dim": o["dim"], "n_layers": o["layers"], "align_weight": weight, "align_refit": refit}


RECIPE = Recipe(
    name="lightgcn-aligned",
    build=build,
    model_config=model_config,
    objective=objective,
    description="LightGCN + genre-CAV alignment regularizer (--opt align_weight=0.1, align_refit=1)",
    extras=alignment_extras,
    explain_methods=("history", "concepts", "counterfactual"),
    presets=PAPER_BPR,
)
