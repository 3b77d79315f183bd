"""``--model mf``: matrix factorization trained with BPR (Rendle et al., 2009).
``--opt init_std=S``: std of the embeddings' normal initialisation (default 0.1)."""

from ..models import MF, MFConfig
from . import PAPER_BPR, Recipe, init_std_option

RECIPE = Recipe(
    name="mf",
    build=lambda inputs, config: MF(inputs.n_users, inputs.n_items, MFConfig(**config)),
    model_config=lambda o: {"dim": o["dim"], **init_std_option("mf", o)},
    description="matrix factorization, BPR",
    explain_methods=("concepts",),
    presets=PAPER_BPR,
)
