"""``--model lightgcn``: LightGCN trained with BPR (He et al., SIGIR 2020).
``--opt init_std=S``: std of the layer-0 embeddings' normal initialisation (default 0.1, the
authors' PyTorch port; their TensorFlow original uses Xavier, std ≈ 0.008 on Gowalla)."""

from ...models import LightGCN, LightGCNConfig
from . import PAPER_BPR, Recipe, init_std_option


def build(inputs, config: dict) -> LightGCN:
    return LightGCN(inputs.n_users, inputs.n_items, LightGCNConfig(**config), graph=inputs.train)


RECIPE = Recipe(
    name="lightgcn",
    build=build,
    model_config=lambda o: {"dim": o["dim"], "n_layers": o["layers"], **init_std_option("lightgcn", o)},
    description="LightGCN: normalized propagation, layer averaging, BPR",
    explain_methods=("history", "concepts", "counterfactual"),
    presets=PAPER_BPR,
)
