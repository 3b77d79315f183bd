"""``--model pop``: most-popular baseline (training degree of each item)."""

from ..models import Popularity
from . import Recipe, check_options

RECIPE = Recipe(
    name="pop",
    build=lambda inputs, config: Popularity(inputs.train),
    model_config=lambda o: check_options("pop", o, ()) or {},
    description="popularity baseline",
)
