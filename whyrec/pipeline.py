"""The training pipeline — split, build, fit, evaluate — as library code: ``whyrec train`` (which
writes the result as a run folder) and :func:`whyrec.fit` (which keeps it in memory) both call it.

:func:`plan_training` checks every setting before any work is done (a pointless hyper-parameter,
an unknown ``--opt`` or schedule is a :class:`ValueError` naming it); :func:`run_training` does the
work on a dataset and returns a :class:`Trained` result.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

__all__ = ["TrainingPlan", "Trained", "plan_training", "run_training"]


@dataclass
class TrainingPlan:
    """Checked settings of one training run (what ``whyrec train``'s flags say): the recipe, the
    model's config and the :class:`~whyrec.train.loop.TrainConfig` fields that differ from its
    defaults (``train_values``); ``ks``: the test cut-offs."""

    recipe: object
    model_name: str
    model_config: dict
    train_values: dict
    ks: tuple = (10, 20)


@dataclass
class Trained:
    """A trained model with everything a run folder holds (:func:`whyrec.run.write_run`'s inputs)."""

    data: object
    split: object
    model: object
    model_name: str
    model_config: dict
    train_config: dict
    metrics: dict
    extras: dict = field(default_factory=dict)
    history: object = None
    #: the split's ``(train, valid, test)`` binary CSR matrices (made once, by :func:`run_training`)
    matrices: tuple = ()

    def write(self, out: Path) -> None:
        """Write the run folder's files into ``out`` (an empty folder)."""
        from .run import write_run

        write_run(out, data=self.data, split=self.split, model=self.model, model_name=self.model_name,
                  model_config=self.model_config, train_config=self.train_config, metrics=self.metrics,
                  extras=self.extras)


def parse_value(raw):
    """An ``--opt`` value as JSON where it parses (numbers, true/false), else the string."""
    import json

    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def plan_training(model: str = "lightgcn", *, options: Optional[dict] = None, dim=None, layers=None,
                  features: str = "user,item", epochs=None, batch_size=None, lr=None, reg=None, eval_every=None,
                  lr_schedule=None, lr_min=None, positives=None, monitor=None, preset: Optional[str] = None,
                  ks=(10, 20)) -> TrainingPlan:
    """Check the settings of a training run; ``None`` means "the model's default".

    Training settings, each later source winning: :class:`~whyrec.train.loop.TrainConfig`'s
    defaults, the recipe's ``train_defaults``, the ``preset``'s, the flags, then ``--opt`` keys
    the recipe names as training settings (``train_options``)."""
    from .train.loop import LR_SCHEDULES, TrainConfig, check_monitor, check_train_values
    from .recipes import get_recipe
    from .train.sampling import check_positives

    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "reg": reg, "eval_every": eval_every,
             "lr_min": lr_min}
    check_train_values(flags, flags=True)
    if lr_schedule is not None and lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
    if positives is not None:
        check_positives(positives, "--positives")
    recipe = get_recipe(model)
    chosen = recipe.preset(preset)
    opts = {**recipe.model_options(dim, layers), "features": features, **chosen["options"],
            **{k: parse_value(v) for k, v in (options or {}).items()}}
    from_opts = {field: opts.pop(key) for key, field in recipe.train_options.items() if key in opts}
    flags.update(lr_schedule=lr_schedule, positives=positives, monitor=monitor)
    train_values = {**recipe.train_defaults, **chosen["train"], **{k: v for k, v in flags.items() if v is not None},
                    **from_opts}
    model_config = recipe.model_config(opts)
    check_train_values(train_values, flags=True)
    if monitor is not None:
        check_monitor(monitor, train_values.get("ks", TrainConfig.ks), "--monitor")
    TrainConfig(**train_values)  # every other check
    return TrainingPlan(recipe, model, model_config, train_values, tuple(ks))


def run_training(plan: TrainingPlan, data, *, split: Optional[str] = None, seed: int = 2020,
                 min_rating: float = 4.0, valid_ratio: float = 0.0, patience: Optional[int] = 5,
                 eval_on_test: bool = False, device: str = "auto", threads: Optional[int] = None,
                 resume: bool = False, out_dir: Optional[Path] = None, progress=True,
                 note: Optional[Callable[[str], None]] = None) -> Trained:
    """Split ``data``, build the model, fit it (checkpoints in ``out_dir`` when given, else none),
    evaluate it on the test part and return everything a run folder holds. Under torchrun the
    model trains data-parallel (:mod:`whyrec.train.distributed`), every evaluation is sharded over
    the ranks (a closed-form fit: rank 0 fits and evaluates alone), the process group is torn down
    once the test metrics are in, and only rank 0 returns; the
    other ranks return ``None``."""
    import torch

    from .data.splits import make_split
    from .evaluate import evaluate_ranking
    from .train.distributed import from_environment
    from .train.loop import TrainConfig, Trainer
    from .recipes import ModelInputs

    recipe = plan.recipe
    method = split or ("official" if data.official_test is not None else "")
    params = {"valid_ratio": valid_ratio} if method == "official" else {}
    the_split = make_split(data, split, seed=seed, min_rating=min_rating, **params)
    train_m, valid_m, test_m = the_split.matrices(data)
    monitor_m = test_m if eval_on_test else (valid_m if valid_m.nnz else None)
    if monitor_m is None and note is not None:
        note("the split has no validation part: training runs the full --epochs without early stopping "
             "(use --valid-ratio or --eval-on-test)")
    extras = recipe.extras(data, the_split.train) if recipe.extras else {}
    inputs = ModelInputs(data.n_users, data.n_items, train_m, extras)
    torch.manual_seed(seed)  # the initial weights too are a function of the seed
    net = recipe.build(inputs, plan.model_config)
    from .device import resolve_device

    target = resolve_device(device, net)  # a device that is not here, or a CPU-only model on cuda: one line, now
    config = TrainConfig(**plan.train_values, seed=seed, patience=patience or None, device=device,
                         num_threads=threads, resume=resume)
    strategy = from_environment(device)  # torchrun: data-parallel; rank 0 alone reports and writes
    lead = strategy is None or strategy.rank == 0
    if recipe.summary is not None and lead:
        print(f"note: {recipe.summary(net, config)}", file=sys.stderr)
    if recipe.fit is not None:  # fitted in closed form, by rank 0 alone (the others wait in close)
        # on the device from the start: the fit itself runs on the CPU (an SVD, scikit-learn's NMF) and
        # puts its result on the model's device, where selection and evaluation then score
        net.to(target)
        hist = recipe.fit(net, inputs, monitor_m, config, plan.model_config, progress) if lead else None
        shards = None
    else:
        objective = recipe.objective(inputs, plan.model_config) if recipe.objective else None
        hist = Trainer(net, objective, config, out_dir=out_dir if lead else None, progress=progress if lead else False,
                       strategy=strategy).fit(train_m, monitor_m)
        shards = strategy  # every rank holds the final weights: the test evaluation is sharded too
    model_config = plan.model_config
    if recipe.final_config is not None and lead:  # settings chosen while fitting (e.g. on validation)
        model_config = recipe.final_config(net, model_config)
    if lead or shards is not None:
        net.eval()
        test_metrics = evaluate_ranking(net.score_users, train_m, test_m, ks=plan.ks, strategy=shards)
    if strategy is not None:  # on success only: a failed rank exits and torchrun stops the others
        strategy.close()
    if not lead:
        return None
    metrics = {
        "test": test_metrics,
        "valid": hist.best_metrics,
        "monitored": "test" if eval_on_test else ("valid" if monitor_m is not None else None),
        "best_epoch": hist.best_epoch,
        "epochs_trained": len(hist.epochs),
        "stopped_early": hist.stopped_early,
        "train_seconds": round(hist.seconds, 2),
    }
    return Trained(data, the_split, net, plan.model_name, model_config,
                   {**hist.config, "split": the_split.method, "min_rating": min_rating}, metrics, extras, hist,
                   (train_m, valid_m, test_m))
