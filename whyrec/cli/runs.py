"""``whyrec train``, ``evaluate`` and ``recommend``: build, score and use run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import typer

from .app import (app, data_dir_option, dataset_option, device_option, echo_notes, friendly, metrics_table,
                  parse_ks, progress_option, run_dir_argument, seed_option)


def parse_opts(values: list[str] | None) -> dict:
    """``--opt factors=4 --opt gamma=0.1`` -> ``{"factors": "4", "gamma": "0.1"}`` (the library parses
    the values, :func:`whyrec.pipeline.parse_value`)."""
    out: dict = {}
    for v in values or []:
        key, sep, raw = v.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--opt expects KEY=VALUE, got {v!r}")
        out[key.strip()] = raw
    return out


@app.command()
def models() -> None:
    """List the models `whyrec train --model` accepts."""
    from ..recipes import recipes

    for name, recipe in recipes().items():
        methods = f"  (explain: {', '.join(recipe.explain_methods)})" if recipe.explain_methods else ""
        typer.echo(f"{name:<20} {recipe.description}{methods}")


@app.command()
@friendly
def train(
    dataset: str = dataset_option(),
    data_dir: Optional[Path] = data_dir_option(),
    model: str = typer.Option("lightgcn", "--model", "-m", help="Model name: lightgcn, mf, pop, ... (see `whyrec models`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to create."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue a `whyrec train` that stopped before its end (Ctrl-C, killed) in --out from "
        "its last evaluation; give the same options."),
    split: Optional[str] = typer.Option(
        None, help="user-holdout, edge, heldout-users or official (default: the dataset's own)."),
    min_rating: float = typer.Option(4.0, help="Ratings >= this are positives (explicit data)."),
    valid_ratio: float = typer.Option(0.0, help="official split: share of each user's training moved to validation."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="A named setting of the model instead of its defaults: paper (the paper's schedule; "
        "LightGCN: 1000 epochs at lr 1e-3). Flags still win."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (default: the model's; LightGCN: 150)."),
    batch_size: Optional[int] = typer.Option(
        None, help="Training examples per batch (default: the model's; LightGCN: the paper's 2048)."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate (default: the model's; LightGCN: 5e-3)."),
    lr_schedule: Optional[str] = typer.Option(
        None, "--lr-schedule", help="constant (default) or cosine: a half cosine from --lr to --lr-min over --epochs."),
    lr_min: Optional[float] = typer.Option(None, "--lr-min", help="Final learning rate of --lr-schedule cosine (0)."),
    positives: Optional[str] = typer.Option(
        None, "--positives",
        help="How positives are sampled each epoch: interactions (default; each training interaction once) or users "
             "(uniform users, each with a random positive, as the LightGCN authors' code does)."),
    layers: Optional[int] = typer.Option(None, help="LightGCN propagation layers K (default 3, the paper's)."),
    dim: Optional[int] = typer.Option(None, help="Embedding size (default: the model's; LightGCN: the paper's 64)."),
    reg: Optional[float] = typer.Option(
        None, help="L2 weight (default: the model's; LightGCN: the paper's 1e-4 on the batch's layer-0 rows)."),
    seed: int = seed_option("Seed for the split, initialisation and sampling."),
    eval_every: Optional[int] = typer.Option(None, help="Evaluate on validation every N epochs (default: the model's; 10)."),
    patience: int = typer.Option(5, help="Stop after this many evaluations without a better --monitor (0: never)."),
    monitor: Optional[str] = typer.Option(
        None, "--monitor", help="Validation metric that picks the best epoch (default: the model's; recall@20)."),
    eval_on_test: bool = typer.Option(
        False, "--eval-on-test", help="Monitor the test split during training, as the LightGCN authors' code does "
        "(optimistic; use when the split has no validation part)."),
    k: Optional[list[str]] = typer.Option(None, "--k", help="Cut-offs for the final test metrics (default 10 20)."),
    features: str = typer.Option("user,item", help="Side features for feature models: user,item | user | item | none."),
    opt: Optional[list[str]] = typer.Option(None, "--opt", help="Model-specific setting KEY=VALUE (repeatable)."),
    device: str = device_option("auto", "Training and evaluation run"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's)."),
    progress: bool = progress_option("Show a progress bar (--no-progress: one line per evaluation instead)."),
) -> None:
    """Train a model and write a run folder (weights, config, split, id maps, metrics, curves).

    Data-parallel: `torchrun --nproc-per-node N $(which whyrec) train ...` (docs/lightgcn.md)."""
    from ..data import load_dataset
    from ..pipeline import plan_training, run_training
    from ..run import commit_run_dir, discard_run_dir, prepare_run_dir
    from ..train.checkpoint import TRAINING_STATE
    from ..train.distributed import environment_rank

    # pointless hyper-parameters are refused before any work (the flags as given, then the model's defaults)
    plan = plan_training(model, options=parse_opts(opt), dim=dim, layers=layers, features=features, epochs=epochs,
                         batch_size=batch_size, lr=lr, reg=reg, eval_every=eval_every, lr_schedule=lr_schedule,
                         lr_min=lr_min, positives=positives, monitor=monitor, preset=preset, ks=parse_ks(k, (10, 20)))
    ks = plan.ks
    from ..device import resolve_device

    resolve_device(device)  # cuda where there is none: one line, before any work
    if environment_rank():  # torchrun: the other ranks train their share; rank 0 writes the run
        run_training(plan, load_dataset(dataset, data_dir), split=split, seed=seed, min_rating=min_rating,
                     valid_ratio=valid_ratio, patience=patience, eval_on_test=eval_on_test, device=device,
                     threads=threads, resume=resume, out_dir=None, progress=False)
        return
    created = not out.exists()
    if resume:
        if overwrite:
            raise ValueError("--resume continues the run in --out, --overwrite replaces it: give one of them")
        if not (out / TRAINING_STATE).is_file():
            raise FileNotFoundError(f"{out}: nothing to resume (no {TRAINING_STATE}; it is left only by a "
                                    "`whyrec train` that stopped before its end)")
        work = out
    else:
        # a run to replace: train into a fresh folder beside it, swapped in only once complete
        work = prepare_run_dir(out, overwrite)
    replacing = work != out
    try:
        data = load_dataset(dataset, data_dir)
        echo_notes(data.notes)
        trained = run_training(plan, data, split=split, seed=seed, min_rating=min_rating, valid_ratio=valid_ratio,
                               patience=patience, eval_on_test=eval_on_test, device=device, threads=threads,
                               resume=resume, out_dir=work, progress=progress or "lines",
                               note=lambda text: typer.echo(f"note: {text}", err=True))
        trained.write(work)
        hist, test_metrics = trained.history, trained.metrics["test"]
        commit_run_dir(work, out)
    except BaseException as err:
        if replacing:  # the old run was never touched; drop the unfinished new one
            discard_run_dir(work, out)
            if isinstance(err, KeyboardInterrupt):
                typer.echo(f"training stopped; {out} still holds the previous run, unchanged", err=True)
        elif (out / TRAINING_STATE).is_file():  # interrupted after an evaluation: keep what can be resumed
            if not resume:
                typer.echo(f"training stopped; its state at the last evaluation is in {out / TRAINING_STATE}: "
                           "run the same command with --resume to continue", err=True)
        elif created:  # a folder this command made and could not finish: leave nothing half-written behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    typer.echo(f"wrote {out} ({len(hist.epochs)} epochs, {hist.seconds:.1f}s)")
    typer.echo(metrics_table(test_metrics, ks))


@app.command()
@friendly
def evaluate(
    run_dir: Path = run_dir_argument(),
    k: Optional[list[str]] = typer.Option(None, "--k", help="Cut-offs: --k 10 20, --k 10 --k 20 or --k 10,20."),
    more_k: Optional[list[str]] = typer.Argument(None, hidden=True),
    split_part: str = typer.Option("test", "--on", help="test or valid."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    device: str = device_option(what="Scoring runs"),
) -> None:
    """Re-score a run on its saved test split (full ranking, training items masked)."""
    from ..run import load_run

    if more_k and not k:
        raise ValueError(f"unexpected argument(s): {' '.join(more_k)}")
    ks = parse_ks((k or []) + (more_k or []), (20,))
    if split_part not in ("test", "valid"):
        raise ValueError(f"--on must be test or valid, got {split_part!r}")
    run = load_run(run_dir, device=device)
    metrics = run.evaluate(ks, on=split_part)
    if as_json:
        typer.echo(json.dumps({"run": str(run_dir), "split": split_part, **metrics}))
    else:
        typer.echo(f"{run.config['model']} on {run.config['dataset']} ({split_part}, {int(metrics['n_users']):,} users)")
        typer.echo(metrics_table(metrics, ks))


@app.command()
@friendly
def recommend(
    run_dir: Path = run_dir_argument(),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Raw user id from the dataset."),
    liked: Optional[list[str]] = typer.Option(
        None, "--liked", help="A new user's liked item (title, forgivingly matched, or raw id); repeat it."),
    k: int = typer.Option(10, "--k", min=1, max=1000, help="How many items."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    index: str = typer.Option("exact", "--index",
                              help="exact (score every item) or faiss (an approximate inner-product index over the "
                                   "item vectors, for large catalogues; seen items still excluded; docs/scale.md)."),
    device: str = device_option(),
) -> None:
    """Top-k unseen items for a user, or for a new user from items they like (no retraining)."""
    from ..run import load_run
    from ..serve.index import check_index_kind, item_index

    if (user is None) == (not liked):
        raise ValueError("give either --user RAW_ID or one or more --liked ITEM")
    check_index_kind(index)
    run = load_run(run_dir, device=device)
    result = run.recommend(user=user, liked=liked, k=min(k, run.n_items), index=item_index(run, index)).to_dict()
    echo_notes(result.get("notes", []))  # a new user's liked entries that name the same item
    if as_json:
        typer.echo(json.dumps(result))
        return
    who = f"user {user}" if user is not None else "a new user who liked " + "; ".join(result["liked"])
    typer.echo(f"top {k} for {who}:")
    for r in result["recommendations"]:
        genres = f"  [{', '.join(r['genres'])}]" if r.get("genres") else ""
        typer.echo(f"{r['rank']:>3}. {r['title']}{genres}  (id {r['item_id']}, score {r['score']:.3f})")


