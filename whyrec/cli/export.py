"""``whyrec export``: a run's final user and item vectors with their raw-id maps (.npy and Parquet)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import app, device_option, friendly, run_dir_argument


@app.command()
@friendly
def export(
    run_dir: Path = run_dir_argument(),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to create (users.npy, items.npy, *_ids.npy, "
                                                      "users.parquet, items.parquet, export.json)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print export.json."),
    device: str = device_option(),
) -> None:
    """Export the final user and item vectors (score = their dot product) for other systems to serve."""
    from ..export import check_export_target, export_run
    from ..run import load_run

    check_export_target(out, overwrite)  # before loading anything
    run = load_run(run_dir, device=device)
    meta = export_run(run, out, overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(meta))
        return
    typer.echo(f"wrote {out}: {meta['model']} vectors, {meta['n_users']:,} users and {meta['n_items']:,} items, "
               f"dim {meta['dim']} (score = dot product)")
