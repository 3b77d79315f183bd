"""``whyrec faithfulness``: does removing what an explanation names hurt the recommendations?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import app, friendly, progress_option, run_dir_argument, seed_option


def _parse_counts(text: str) -> list[int]:
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--remove expects positive integers separated by commas, got {part!r}")
        out.append(int(part))
    if not out:
        raise ValueError("--remove needs at least one count, e.g. --remove 1,2,5,10")
    return out


@app.command()
@friendly
def faithfulness(
    run_dir: Path = run_dir_argument(),
    method: str = typer.Option(..., "--method",
                               help="intrinsic, random, paths or history; several comma-separated "
                                    "(e.g. intrinsic,random,paths) share one figure."),
    remove: str = typer.Option("1,2,5,10", "--remove", help="History items removed per user, e.g. 1,2,5,10."),
    runs: int = typer.Option(5, "--runs", help="Repetitions (random draws; deterministic methods repeat exactly)."),
    seed: int = seed_option("Seed of the first run."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Write the shift-vs-removed plot here."),
    progress: bool = progress_option(),
) -> None:
    """Remove each test user's m most important history items (by --method), re-score without
    retraining, report shift = (recall − recall′)/recall at Recall@10 (seed 002, Figure 5)."""
    from ..explain.faithfulness import evaluate_faithfulness, importance_function, plot_many, render_text
    from ..run import load_run

    counts = _parse_counts(remove)
    if runs < 1:
        raise ValueError(f"--runs must be at least 1, got {runs}")
    methods = [m.strip() for m in method.split(",") if m.strip()]
    if not methods:
        raise ValueError("--method needs at least one of intrinsic, random, paths, history")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--method names a method twice: {method}")
    for m in methods:
        importance_function(m)  # unknown / unavailable method: fail before loading anything
    if figure is not None and figure.exists() and figure.is_dir():
        raise ValueError(f"--figure {figure} is a folder; give a file name such as faithfulness.png")
    run = load_run(run_dir)
    results = [evaluate_faithfulness(run, m, counts, runs=runs, seed=seed, progress=progress) for m in methods]
    if figure is not None:
        from ..run import atomic_path

        with atomic_path(figure) as tmp:  # an existing figure is replaced only by a complete one
            plot_many(results, tmp)
        for result in results:
            result["figure"] = str(figure)
    if as_json:
        # one method: {"method": …, "results": […]}; several: {"methods": [that, …]}
        typer.echo(json.dumps(results[0] if len(results) == 1 else {"methods": results}))
    else:
        typer.echo("\n\n".join(render_text(r) for r in results))
        if figure is not None:
            typer.echo(f"figure: {figure}")
