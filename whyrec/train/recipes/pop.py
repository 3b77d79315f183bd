"""``--model pop``: most-popular baseline (training degree of each item)."""

from ...models import Popularity
from . import Recipe

RECIPE = Recipe(
    name="pop",
    build=lambda inputs, config: Popularity(inputs.train),
    model_config=lambda o: {},
    description="popularity baseline",
)
