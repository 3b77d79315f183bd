"""``whyrec data ...``: inspect datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import data_app, data_dir_option, dataset_option, echo_notes, friendly


@data_app.command("info")
@friendly
def data_info(
    dataset: str = dataset_option(),
    data_dir: Optional[Path] = data_dir_option(),
    min_rating: float = typer.Option(4.0, help="Ratings >= this count as implicit positives (explicit data only)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Counts, density, feature names and KG size of a dataset."""
    from ..data import load_dataset

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


