"""``--model mf``: matrix factorization trained with BPR (Rendle et al., 2009)."""

from ...models import MF, MFConfig
from . import Recipe

RECIPE = Recipe(
    name="mf",
    build=lambda inputs, config: MF(inputs.n_users, inputs.n_items, MFConfig(**config)),
    model_config=lambda o: {"dim": o["dim"]},
    description="matrix factorization, BPR",
    explain_methods=("concepts",),
)
