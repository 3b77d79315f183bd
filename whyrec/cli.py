"""The ``whyrec`` command line: wires the stages together, nothing more.

Every command reports bad input as one ``error: ...`` line on stderr and exits
with status 1 (no traceback).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .data import LOADERS, DataError, WhyrecError, load_dataset

app = typer.Typer(
    help="Graph recommenders that can say why: data, train, evaluate, recommend, explain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DATASETS = ", ".join(LOADERS)


def friendly(fn):
    """Turn whyrec's own errors (and bad values) into one line on stderr and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (WhyrecError, KeyError, ValueError, FileNotFoundError, FileExistsError) as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def echo_notes(notes: list[str]) -> None:
    for note in notes:
        typer.echo(f"note: {note}", err=True)


def dataset_option():
    return typer.Option(..., "--dataset", "-d", help=f"Dataset name: {DATASETS}.")


def data_dir_option():
    return typer.Option(
        None, "--data-dir", help="Folder with the dataset in its official layout (default: download and cache)."
    )


@data_app.command("info")
@friendly
def data_info(
    dataset: str = dataset_option(),
    data_dir: Optional[Path] = data_dir_option(),
    min_rating: float = typer.Option(4.0, help="Ratings >= this count as implicit positives (explicit data only)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Counts, density, feature names and KG size of a dataset."""
    data = load_dataset(dataset, data_dir)
    echo_notes(data.notes)
    info = data.summary(min_rating)
    if as_json:
        typer.echo(json.dumps(info))
        return
    rows = [
        ("dataset", info["dataset"]),
        ("users", f"{info['n_users']:,}"),
        ("items", f"{info['n_items']:,}"),
        ("interactions", f"{info['n_interactions']:,}"),
        (f"positives ({info['positive_rule']})", f"{info['n_positives']:,}"),
        ("density", f"{info['density']:.5f}"),
        ("timestamps", "yes" if info["has_timestamps"] else "no"),
        ("official split", "yes" if info["has_official_split"] else "no"),
        ("user features", ", ".join(info["user_features"]) or "-"),
        ("item features", ", ".join(info["item_features"]) or "-"),
        ("KG entities", f"{info['n_entities']:,}"),
        ("KG relations", f"{info['n_relations']:,}"),
        ("KG triples", f"{info['n_triples']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


def parse_ks(values: list[str] | None, default: tuple[int, ...]) -> tuple[int, ...]:
    """``--k 10 20``, ``--k 10 --k 20`` and ``--k 10,20`` all give ``(10, 20)``."""
    if not values:
        return default
    ks = []
    for v in values:
        for part in str(v).split(","):
            if not part.strip():
                continue
            if not part.strip().isdigit() or int(part) <= 0:
                raise ValueError(f"--k expects positive integers, got {part.strip()!r}")
            ks.append(int(part))
    return tuple(sorted(set(ks)))


def metrics_table(metrics: dict, ks: tuple[int, ...]) -> str:
    names = ["recall", "precision", "ndcg", "hit_rate", "mrr", "coverage"]
    lines = ["metric      " + "".join(f"{'@' + str(k):>10}" for k in ks)]
    for n in names:
        lines.append(f"{n:<12}" + "".join(f"{metrics.get(f'{n}@{k}', float('nan')):>10.4f}" for k in ks))
    return "\n".join(lines)


@app.command()
@friendly
def train(
    dataset: str = dataset_option(),
    data_dir: Optional[Path] = data_dir_option(),
    model: str = typer.Option("lightgcn", "--model", "-m", help="lightgcn, mf or pop."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to create."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    split: Optional[str] = typer.Option(
        None, help="user-holdout, edge, heldout-users or official (default: the dataset's own)."),
    min_rating: float = typer.Option(4.0, help="Ratings >= this are positives (explicit data)."),
    valid_ratio: float = typer.Option(0.0, help="official split: share of each user's training moved to validation."),
    epochs: int = typer.Option(1000, help="Maximum epochs (paper: 1000)."),
    batch_size: int = typer.Option(2048, help="BPR triples per batch (paper: 2048)."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (paper: 1e-3)."),
    layers: int = typer.Option(3, help="LightGCN propagation layers K (paper: 3)."),
    dim: int = typer.Option(64, help="Embedding size (paper: 64)."),
    reg: float = typer.Option(1e-4, help="L2 weight on the batch's layer-0 embeddings (paper: 1e-4)."),
    seed: int = typer.Option(2020, help="Seed for the split, initialisation and sampling."),
    eval_every: int = typer.Option(20, help="Evaluate on validation every N epochs."),
    patience: int = typer.Option(5, help="Stop after this many evaluations without a better recall@20 (0: never)."),
    eval_on_test: bool = typer.Option(
        False, "--eval-on-test", help="Monitor the test split during training, as the LightGCN authors' code does "
        "(optimistic; use when the split has no validation part)."),
    k: Optional[list[str]] = typer.Option(None, "--k", help="Cut-offs for the final test metrics (default 10 20)."),
    device: str = typer.Option("auto", help="auto (CUDA if available), cpu or cuda."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a model and write a run folder (weights, config, split, id maps, metrics, curves)."""
    from .data.splits import make_split
    from .evaluate import evaluate_ranking
    from .run import MODEL_NAMES, build_model, prepare_run_dir, write_run
    from .train.loop import TrainConfig, fit

    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(MODEL_NAMES)}")
    ks = parse_ks(k, (10, 20))
    out = prepare_run_dir(out, overwrite)
    data = load_dataset(dataset, data_dir)
    echo_notes(data.notes)
    params = {"valid_ratio": valid_ratio} if (split or ("official" if data.official_test is not None else "")) == "official" else {}
    the_split = make_split(data, split, seed=seed, min_rating=min_rating, **params)
    train_m, valid_m, test_m = the_split.matrices(data)
    monitor_m = test_m if eval_on_test else (valid_m if valid_m.nnz else None)
    if monitor_m is None:
        typer.echo("note: the split has no validation part: training runs the full --epochs without early "
                   "stopping (use --valid-ratio or --eval-on-test)", err=True)
    model_config = {"dim": dim, "n_layers": layers} if model == "lightgcn" else {"dim": dim} if model == "mf" else {}
    net = build_model(model, data.n_users, data.n_items, train_m, model_config)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, reg=reg, seed=seed, eval_every=eval_every,
                         patience=patience or None, device=device)
    hist = fit(net, train_m, monitor_m, config, out_dir=out, progress=progress)
    net.eval()
    test_metrics = evaluate_ranking(net.score_users, train_m, test_m, ks=ks)
    metrics = {
        "test": test_metrics,
        "valid": hist.best_metrics,
        "monitored": "test" if eval_on_test else ("valid" if monitor_m is not None else None),
        "best_epoch": hist.best_epoch,
        "epochs_trained": len(hist.epochs),
        "stopped_early": hist.stopped_early,
        "train_seconds": round(hist.seconds, 2),
    }
    write_run(out, data=data, split=the_split, model=net, model_name=model, model_config=model_config,
              train_config={**hist.config, "split": the_split.method, "min_rating": min_rating}, metrics=metrics)
    typer.echo(f"wrote {out} ({len(hist.epochs)} epochs, {hist.seconds:.1f}s)")
    typer.echo(metrics_table(test_metrics, ks))


@app.command()
@friendly
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run folder written by `whyrec train`."),
    k: Optional[list[str]] = typer.Option(None, "--k", help="Cut-offs: --k 10 20, --k 10 --k 20 or --k 10,20."),
    more_k: Optional[list[str]] = typer.Argument(None, hidden=True),
    split_part: str = typer.Option("test", "--on", help="test or valid."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Re-score a run on its saved test split (full ranking, training items masked)."""
    from .evaluate import evaluate_ranking
    from .run import load_run

    if more_k and not k:
        raise ValueError(f"unexpected argument(s): {' '.join(more_k)}")
    ks = parse_ks((k or []) + (more_k or []), (20,))
    if split_part not in ("test", "valid"):
        raise ValueError(f"--on must be test or valid, got {split_part!r}")
    run = load_run(run_dir)
    target = run.matrices[split_part]
    if target.nnz == 0:
        raise ValueError(f"run {run_dir} has no {split_part} interactions")
    metrics = evaluate_ranking(run.model.score_users, run.matrices["train"], target, ks=ks)
    if as_json:
        typer.echo(json.dumps({"run": str(run_dir), "split": split_part, **metrics}))
    else:
        typer.echo(f"{run.config['model']} on {run.config['dataset']} ({split_part}, {int(metrics['n_users']):,} users)")
        typer.echo(metrics_table(metrics, ks))


@app.command()
@friendly
def recommend(
    run_dir: Path = typer.Argument(..., help="Run folder written by `whyrec train`."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Raw user id from the dataset."),
    liked: Optional[list[str]] = typer.Option(
        None, "--liked", help="A new user's liked item (title, forgivingly matched, or raw id); repeat it."),
    k: int = typer.Option(10, "--k", min=1, max=1000, help="How many items."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Top-k unseen items for a user, or for a new user from items they like (no retraining)."""
    from .recommend import recommend_for_new_user, recommend_for_user
    from .run import load_run

    if (user is None) == (not liked):
        raise ValueError("give either --user RAW_ID or one or more --liked ITEM")
    run = load_run(run_dir)
    if user is not None:
        result = recommend_for_user(run, user, k)
    else:
        result = recommend_for_new_user(run, liked, k)
    if as_json:
        typer.echo(json.dumps(result))
        return
    who = f"user {user}" if user is not None else "a new user who liked " + "; ".join(result["liked"])
    typer.echo(f"top {k} for {who}:")
    for r in result["recommendations"]:
        genres = f"  [{', '.join(r['genres'])}]" if r.get("genres") else ""
        typer.echo(f"{r['rank']:>3}. {r['title']}{genres}  (id {r['item_id']}, score {r['score']:.3f})")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
