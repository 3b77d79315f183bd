"""``--model lightgcn``: LightGCN trained with BPR (He et al., SIGIR 2020)."""

from ...models import LightGCN, LightGCNConfig
from . import Recipe


def build(inputs, config: dict) -> LightGCN:
    return LightGCN(inputs.n_users, inputs.n_items, LightGCNConfig(**config), graph=inputs.train)


RECIPE = Recipe(
    name="lightgcn",
    build=build,
    model_config=lambda o: {"dim": o["dim"], "n_layers": o["layers"]},
    description="LightGCN: normalized propagation, layer averaging, BPR",
    explain_methods=("history", "concepts"),
)
