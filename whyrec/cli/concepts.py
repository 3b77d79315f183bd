"""``whyrec concepts``: genre CAVs of a run, their significance, geometry and agreement with behaviour."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import app, device_option, friendly, run_dir_argument, seed_option


@app.command()
@friendly
def concepts(
    run_dir: Path = run_dir_argument("Run folder written by `whyrec train` (a dataset with genres)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the figures, sensitivity.csv and summary.json."),
    genres: Optional[str] = typer.Option(None, "--genres", help="Comma-separated genres (default: every genre "
                                         "with enough items)."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json to stdout."),
    min_ratings: int = typer.Option(5, "--min-ratings", min=1, help="Users need this many rated movies in a genre "
                                    "to enter its mean-rating correlation."),
    random_runs: int = typer.Option(20, "--random-runs", min=0, help="Random concepts per genre for the "
                                    "significance test (0: skip it; p >= 1/(R+1))."),
    seed: int = seed_option("Seed of the hold-out splits and the random concepts."),
    min_items: int = typer.Option(10, "--min-items", min=2, help="A genre needs this many items to fit a CAV."),
    scatter: Optional[str] = typer.Option(None, "--scatter", help="Genre for the scatter figure (default: every "
                                          "analysed genre gets one)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the contents of a non-empty --out."),
    device: str = device_option(),
) -> None:
    """Genre Concept Activation Vectors: CAV accuracy and p-value, sensitivities of all users, cosine/PCA
    geometry and correlation with users' ratings and interaction shares."""
    import numpy as np
    import pandas as pd

    from ..explain.concept_plots import write_report_figures
    from ..explain.concepts import analyze_run
    from ..run import atomic_path, atomic_write_text, load_run

    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to write into it")
    requested = [g for g in genres.split(",") if g.strip()] if genres is not None else None
    if genres is not None and not requested:
        raise ValueError("--genres is empty; give names such as Comedy,Horror")
    run = load_run(run_dir, device=device)
    report = analyze_run(run, requested, min_ratings=min_ratings, random_runs=random_runs, seed=seed,
                         min_items=min_items)
    if scatter is not None:
        scatter = report.cavs.names_[report.cavs.index(scatter)]
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(report.S, columns=report.names)
    df.insert(0, "user_id", np.asarray(report.user_ids, dtype=np.int64))
    with atomic_path(out / "sensitivity.csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    figures = write_report_figures(report, out, scatter, highlight=requested)
    summary = report.summary()
    summary["files"] = {"sensitivity": str(out / "sensitivity.csv"), **figures}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"{len(report.names)} genres, {report.S.shape[0]:,} users -> {out}")
    typer.echo(f"{'genre':<13}{'items':>6}{'acc':>6}{'p':>7}  {'r(rating)':>10}{'n':>6}  {'r(share)':>9}")
    for g, e in summary["genres"].items():
        p = "-" if e["p_value"] is None else f"{e['p_value']:.3f}"
        sig = "*" if e["significant"] else " "
        cr, cs = e["correlation_mean_rating"], e["correlation_share"]
        rr = "-" if cr["pearson_r"] is None else f"{cr['pearson_r']:+.3f}"
        rs = "-" if cs["pearson_r"] is None else f"{cs['pearson_r']:+.3f}"
        typer.echo(f"{g:<13}{e['n_items']:>6}{e['cav_accuracy']:>6.2f}{p:>7}{sig} {rr:>10}{cr['n']:>6}  {rs:>9}")
    for s in report.skipped:
        typer.echo(f"note: skipped {s['genre']}: {s['reason']}", err=True)
