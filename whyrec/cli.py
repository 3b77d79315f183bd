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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
