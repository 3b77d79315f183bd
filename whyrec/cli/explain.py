"""``whyrec explain``: why a run recommends an item to a user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..explain import METHODS
from .app import app, device_option, friendly, run_dir_argument


@app.command()
@friendly
def explain(
    run_dir: Path = run_dir_argument(),
    user: str = typer.Option(..., "--user", "-u", help="Raw user id."),
    item: Optional[str] = typer.Option(None, "--item", "-i", help="Raw item id or title (forgivingly matched)."),
    method: str = typer.Option(..., "--method", help=f"One of {', '.join(METHODS)} (`whyrec models` lists "
                               "which a model supports)."),
    steps: Optional[int] = typer.Option(
        None, min=1, max=10_000,
        help="Integrated-gradients interpolation steps (default: the method's own; both IG methods are exact "
             "with their default)."),
    baseline: Optional[str] = typer.Option(None, help="features: Integrated-gradients baseline, mean (default) or "
                                                      "zero."),
    top: int = typer.Option(10, min=1, help="How many attributions to list."),
    compare_items: Optional[list[str]] = typer.Option(
        None, "--compare-items", help="Several items (ids or titles) to compare one feature across (repeatable)."),
    genre: Optional[str] = typer.Option(None, "--genre", help="The feature/genre to compare across --compare-items."),
    k: Optional[int] = typer.Option(
        None, "--k", min=1, help="counterfactual: take the item out of the top K (default 1: out of first place)."),
    max_size: Optional[int] = typer.Option(
        None, "--max-size", min=1, help="counterfactual: the largest removal set searched (default 20)."),
    beam: Optional[int] = typer.Option(None, "--beam", min=1, help="counterfactual: beam width (default 1: greedy)."),
    samples: Optional[int] = typer.Option(
        None, "--samples", min=1, max=10_000,
        help="shapley: random orders averaged for a history longer than 6 items (default 16; shorter: exact)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Write a figure (PNG/SVG/PDF) here."),
    device: str = device_option(),
) -> None:
    """Explain one recommendation (or one user's tastes, for --method concepts)."""
    from ..explain import EXPLAINERS, explainer_for
    from ..run import load_run

    if method not in EXPLAINERS:  # before any work: a typo is not a question for the run
        raise ValueError(f"unknown --method {method!r}; known methods: {', '.join(METHODS)}")
    options = EXPLAINERS[method].check_options(dict(
        steps=steps, baseline=baseline, top=top, genre=genre, k=k, max_size=max_size, beam=beam, samples=samples,
        compare_items=compare_items or None))  # an option of another method: an error, before loading
    run = load_run(run_dir, device=device)
    ex = explainer_for(run, method, option="--method")
    u = run.user_index(user)
    i = run.titles().resolve(item) if item is not None else None
    if "compare_items" in options:
        options["compare_items"] = [run.titles().resolve(c) for c in options["compare_items"]]
        i = options["compare_items"][0] if i is None else i  # the first compared item is the one explained
    result = ex.explain(run, u, i, **options).to_dict()
    if figure is not None:
        if figure.exists() and figure.is_dir():
            raise ValueError(f"--figure {figure} is a folder; give a file name such as why.png")
        from ..run import atomic_path

        with atomic_path(figure) as tmp:  # an existing figure is replaced only by a complete one
            ex.plot(result, tmp)
        result["figure"] = str(figure)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(ex.render_text(result, top=top))
        if figure is not None:
            typer.echo(f"figure: {figure}")
