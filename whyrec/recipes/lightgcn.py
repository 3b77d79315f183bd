"""``--model lightgcn``: LightGCN trained with BPR (He et al., SIGIR 2020).
``--opt init_std=S``: std of the layer-0 embeddings' normal initialisation (default 0.1, the
authors' PyTorch port; their TensorFlow original uses Xavier, std ≈ 0.008 on Gowalla).
``--opt user_repr=history``: every user represented only by their history, as a new user is
(:mod:`whyrec.models.lightgcn_history`: no free user term in the score, so history explanations are exact
counterfactuals); ``free`` (the default) is LightGCN's own.
``--opt propagation_dtype=bfloat16``: a training step's sparse products gather bfloat16 rows
(``LightGCNConfig.propagation_dtype``; 0.87x the step on Gowalla, Recall@20 within 7e-5 of float32 there;
``float32``, the default, is exact)."""

from ..models import LightGCN, LightGCNConfig
from ..models.lightgcn import PROPAGATION_DTYPES
from . import PAPER_BPR, Recipe, check_options, init_std_option


def build(inputs, config: dict) -> LightGCN:
    from ..models.lightgcn_history import LightGCNHistory

    config = dict(config)
    cls = LightGCNHistory if config.pop("user_repr", "free") == "history" else LightGCN
    return cls(inputs.n_users, inputs.n_items, LightGCNConfig(**config), graph=inputs.train)


def model_config(o: dict) -> dict:
    from ..models.lightgcn_history import USER_REPRS

    own = ("user_repr", "propagation_dtype")
    check_options("lightgcn", o, {"init_std", *own}, "init_std, user_repr and propagation_dtype")
    out = {"dim": o["dim"], "n_layers": o["layers"], **init_std_option("lightgcn", {k: v for k, v in o.items()
                                                                                    if k not in own})}
    if "propagation_dtype" in o:
        if o["propagation_dtype"] not in PROPAGATION_DTYPES:
            raise ValueError(f"--opt propagation_dtype must be one of {', '.join(PROPAGATION_DTYPES)}, "
                             f"got {o['propagation_dtype']!r}")
        if o["propagation_dtype"] != "float32":
            out["propagation_dtype"] = o["propagation_dtype"]
    if "user_repr" in o:
        if o["user_repr"] not in USER_REPRS:
            raise ValueError(f"--opt user_repr must be one of {', '.join(USER_REPRS)}, got {o['user_repr']!r}")
        if o["user_repr"] != "free":
            out["user_repr"] = o["user_repr"]
    return out


RECIPE = Recipe(
    name="lightgcn",
    build=build,
    model_config=model_config,
    description="LightGCN: normalized propagation, layer averaging, BPR (--opt user_repr=history: history only)",
    explain_methods=("history", "concepts", "counterfactual", "shapley"),
    presets=PAPER_BPR,
)
