"""The model registry: how each ``--model NAME`` is built, what it needs saved, and how it is trained.

A recipe is the wiring between a dataset, a model class and a training
procedure, so that :func:`whyrec.fit`, ``whyrec train``, :func:`whyrec.run.load_run`, the
explainers and the service treat every model the same way. It sits at the package top, above
``models/`` and ``train/`` (which it wires) and below ``pipeline``, ``run`` and ``explain`` (which
look models up here); ``whyrec.MODELS`` and :func:`whyrec.available_models` are its public face.
Every module of this package but ``filters.py`` (the graph filters' shared recipe maker) defines
``RECIPE``; they are discovered automatically, so adding a model means adding one file here.

``extras(data, train_index) -> dict[str, np.ndarray]`` returns the arrays a
model needs beyond the training matrix (side features, KG triples); they are
saved as ``extras.npz`` in the run folder and handed back to ``build``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp


@dataclass
class ModelInputs:
    """What a model may be built from: sizes, the binary ``(n_users, n_items)``
    training matrix and the recipe's extra arrays."""

    n_users: int
    n_items: int
    train: sp.csr_matrix
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """How ``--model NAME`` is built and trained.

    ``build(inputs, model_config) -> Recommender``; ``model_config(options) -> dict`` picks the
    model's settings from the options (``dim``, ``layers``, ``features`` and the free ``--opt
    key=value`` pairs), checked; ``objective(inputs, model_config) -> Objective``: what the
    :class:`~whyrec.train.loop.Trainer` minimises (``None``: BPR); ``fit(model, inputs, valid,
    train_config, model_config, progress) -> History``: for models fitted in closed form instead
    (graph filters, NMF); ``explain_methods``: the ``whyrec explain --method`` values it supports.

    Settings: :class:`~whyrec.train.loop.TrainConfig` holds every training setting and its
    defaults; ``train_defaults`` (``TrainConfig`` field -> value) is where this model's best
    documented setting differs from them; ``train_options`` names ``--opt`` keys that are
    training settings (``--opt lr=1e-2`` -> ``lr``; they win over the generic flags);
    ``model_defaults``: this model's ``dim``/``layers`` (``None``: it has no such setting);
    ``presets``: named alternatives, ``{"paper": {"train": {...}, "options": {...}}}``, for
    ``whyrec train --preset``; ``summary(model, train_config) -> str``: a note printed before
    training. ``final_config``: see the field."""

    name: str
    build: Callable
    model_config: Callable[[dict], dict]
    description: str = ""
    extras: Optional[Callable] = None
    objective: Optional[Callable] = None
    fit: Optional[Callable] = None
    explain_methods: tuple[str, ...] = ()
    train_defaults: dict = field(default_factory=dict)
    train_options: dict = field(default_factory=dict)
    model_defaults: dict = field(default_factory=dict)
    presets: dict = field(default_factory=dict)
    summary: Optional[Callable] = None
    #: ``(model, model_config) -> model_config`` to save after fitting (models whose settings are
    #: chosen during fitting, e.g. on validation); ``None``: the config they were built with
    final_config: Optional[Callable] = None

    def __post_init__(self) -> None:
        from ..train.loop import TrainConfig  # a recipe's training settings are checked when it is made

        for chosen in (None, *self.presets):
            TrainConfig(**{**self.train_defaults, **self.preset(chosen)["train"]})

    def preset(self, name: Optional[str]) -> dict:
        """``{"train": {...}, "options": {...}}`` of preset ``name`` (``None``: the defaults)."""
        if name is None:
            return {"train": {}, "options": {}}
        if name not in self.presets:
            have = ", ".join(self.presets) or "none"
            raise ValueError(f"{self.name} has no --preset {name!r}; its presets: {have}")
        return {"train": {}, "options": {}, **self.presets[name]}

    def model_options(self, dim, layers) -> dict:
        """``dim``/``layers`` for :attr:`model_config`: the given flag, else this model's default
        (LightGCN's 64 and 3 unless :attr:`model_defaults` says otherwise)."""
        return {"dim": dim if dim is not None else self.model_defaults.get("dim", 64),
                "layers": layers if layers is not None else self.model_defaults.get("layers", 3)}


#: the LightGCN paper's schedule for the BPR models (``--preset paper``)
PAPER_BPR = {"paper": {"train": {"epochs": 1000, "lr": 1e-3, "eval_every": 20}}}

COMMON_OPTIONS = frozenset({"dim", "layers", "features"})  # filled by whyrec train for every model


def check_options(model: str, options: dict, known, described: str | None = None) -> None:
    """Refuse ``--opt`` keys the model does not take (a typo must not be silently ignored).
    ``known``: the model's own keys; ``described``: how to list them (default: the keys)."""
    unknown = sorted(set(options) - COMMON_OPTIONS - set(known))
    if unknown:
        takes = described or (", ".join(sorted(known)) if known else "no --opt")
        raise ValueError(f"{model} does not know --opt {', '.join(unknown)}; it takes {takes}")


def init_std_option(model: str, options: dict) -> dict:
    """``--opt init_std=S`` (std of the layer-0 embeddings' normal init) checked, as a config entry."""
    check_options(model, options, {"init_std"})
    if "init_std" not in options:
        return {}
    try:
        std = float(options["init_std"])
    except (TypeError, ValueError):
        std = -1.0
    if not std > 0:
        raise ValueError(f"--opt init_std must be a number > 0, got {options['init_std']!r}")
    return {"init_std": std}


def settings_note(name: str, model_config, train_config, model_fields: dict, train_fields: dict) -> str:
    """The one-line ``note:`` of the settings a run trains with: ``name: label=value ...``, the model's
    (``model_fields``: label -> field of its config) then the trainer's (``train_fields``: label -> field
    of :class:`~whyrec.train.loop.TrainConfig`)."""
    parts = [f"{label}={getattr(model_config, f)}" for label, f in model_fields.items()]
    parts += [f"{label}={getattr(train_config, f)}" for label, f in train_fields.items()]
    return f"{name}: " + " ".join(parts)


def _discover() -> dict[str, Recipe]:
    found: dict[str, Recipe] = {}
    for mod in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{mod.name}")
        recipe = getattr(module, "RECIPE", None)
        if isinstance(recipe, Recipe):
            found[recipe.name] = recipe
    return dict(sorted(found.items()))


_RECIPES: dict[str, Recipe] | None = None


def recipes() -> dict[str, Recipe]:
    """All recipes by model name."""
    global _RECIPES
    if _RECIPES is None:
        _RECIPES = _discover()
    return _RECIPES


def get_recipe(name: str) -> Recipe:
    table = recipes()
    if name not in table:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(table)}")
    return table[name]


__all__ = ["ModelInputs", "Recipe", "get_recipe", "recipes"]
