"""``whyrec faithfulness``: does removing what an explanation names hurt the recommendations?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .app import app, device_option, friendly, progress_option, run_dir_argument, seed_option


def _parse_counts(text: str, flag: str = "--remove") -> list[int]:
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"{flag} expects positive integers separated by commas, got {part!r}")
        out.append(int(part))
    if not out:
        raise ValueError(f"{flag} needs at least one count, e.g. {flag} " + ("1,2,5,10" if flag == "--remove" else "1,10"))
    return out


@app.command()
@friendly
def faithfulness(
    run_dir: Path = run_dir_argument(),
    method: str = typer.Option(..., "--method",
                               help="intrinsic, random, paths, history or counterfactual; several "
                                    "comma-separated (e.g. intrinsic,random,paths) share one figure."),
    remove: str = typer.Option("1,2,5,10", "--remove", help="History items removed per user, e.g. 1,2,5,10."),
    runs: int = typer.Option(5, "--runs", help="Repetitions (random draws; deterministic methods repeat exactly)."),
    seed: int = seed_option("Seed of the first run."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Write the plot here (the curves when --metric "
                                          "names any, else shift against removed)."),
    metric: str = typer.Option("shift", "--metric",
                               help="shift (the seed's recall shift, the default) and/or the per-recommendation "
                                    "metrics deletion, insertion, knockout, fidelity, flip (comma-separated)."),
    max_remove: int = typer.Option(10, "--max-remove", help="Curves: history items removed / kept, m = 1..M."),
    k: str = typer.Option("1,10", "--k", help="Curves: knock-out / flip / fidelity thresholds K (top K)."),
    fidelity_m: Optional[int] = typer.Option(None, "--fidelity-m",
                                             help="Curves: size of the explanation for fidelity+/- (default: "
                                                  "min(5, --max-remove))."),
    max_size: int = typer.Option(20, "--max-size", help="Curves: most removals searched for the flip."),
    n_users: Optional[int] = typer.Option(None, "--users", help="Only the first N eligible test users (curves: "
                                                                         "more than --max-remove history items; shift: any)."),
    progress: bool = progress_option(),
    device: str = device_option(),
) -> None:
    """Remove each test user's m most important history items (by --method), re-score without
    retraining, report shift = (recall − recall′)/recall at Recall@10 (seed 002, Figure 5); with
    --metric deletion,insertion,knockout,fidelity,flip the per-recommendation curves of each user's
    top-1 item (docs/explanations.md)."""
    from ..explain.faithfulness import (METRICS, evaluate_curves, evaluate_faithfulness, importance_function,
                                        paired_test, plot_curves, plot_many, render_curves, render_text)
    from ..run import load_run

    metrics = [m.strip() for m in metric.split(",") if m.strip()]
    if not metrics:
        raise ValueError(f"--metric needs at least one of {', '.join(METRICS)}")
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"unknown --metric {m!r}; choose from {', '.join(METRICS)}")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"--metric names a metric twice: {metric}")
    ks = _parse_counts(k, "--k")
    for name, v in (("--max-remove", max_remove), ("--fidelity-m", 1 if fidelity_m is None else fidelity_m),
                    ("--max-size", max_size),
                    ("--users", 1 if n_users is None else n_users)):
        if v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    counts = _parse_counts(remove)
    if runs < 1:
        raise ValueError(f"--runs must be at least 1, got {runs}")
    methods = [m.strip() for m in method.split(",") if m.strip()]
    if not methods:
        raise ValueError("--method needs at least one of intrinsic, random, paths, history, counterfactual")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--method names a method twice: {method}")
    for m in methods:
        importance_function(m)  # unknown / unavailable method: fail before loading anything
    if figure is not None and figure.exists() and figure.is_dir():
        raise ValueError(f"--figure {figure} is a folder; give a file name such as faithfulness.png")
    run = load_run(run_dir, device=device)
    shift_users = None
    if n_users is not None:  # the first N test users with a history (the curves take the first N eligible ones)
        import numpy as np

        tr, te = run.matrices["train"], run.matrices["test"]
        shift_users = np.flatnonzero((np.diff(te.indptr) > 0) & (np.diff(tr.indptr) > 0))[:n_users]
    curves = [m for m in metrics if m != "shift"]
    if not curves:  # the seed's yardstick alone: today's output
        results = [evaluate_faithfulness(run, m, counts, runs=runs, seed=seed, users=shift_users, progress=progress)
                   for m in methods]
        render, draw = render_text, plot_many
    else:
        results = []
        for m in methods:
            res = evaluate_curves(run, m, max_remove=max_remove, ks=ks, fidelity_m=fidelity_m, flip_max=max_size,
                                  n_users=n_users, seed=seed, progress=progress)
            res["metrics"] = curves
            if "shift" in metrics:
                res["shift"] = evaluate_faithfulness(run, m, counts, runs=runs, seed=seed, users=shift_users,
                                                     progress=progress)
            results.append(res)
        rand = next((r for r in results if r["method"] == "random"), None)
        if rand is not None:
            for res in results:
                if res is not rand:
                    res["vs_random"] = paired_test(res, rand)
        render, draw = render_curves, plot_curves
    if figure is not None:
        from ..run import atomic_path

        with atomic_path(figure) as tmp:  # an existing figure is replaced only by a complete one
            draw(results, tmp)
        for result in results:
            result["figure"] = str(figure)
    if as_json:
        # one method: {"method": …, "results": […]}; several: {"methods": [that, …]}
        typer.echo(json.dumps(results[0] if len(results) == 1 else {"methods": results}))
    else:
        typer.echo("\n\n".join(render(r) for r in results))
        if figure is not None:
            typer.echo(f"figure: {figure}")
