"""``whyrec demo``: the main job in one command — a good model on ML-100K in seconds, one user's top 10
with "because you liked …", and the web page on localhost until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import app, data_dir_option, echo_notes, friendly

DEMO_MODELS = ("cheby-cf", "gf-cf", "bspm")


@app.command()
@friendly
def demo(
    data_dir: Optional[Path] = data_dir_option(),
    model: str = typer.Option("cheby-cf", "--model", "-m",
                              help=f"A training-free graph filter: {', '.join(DEMO_MODELS)} (fits ML-100K in seconds, "
                                   "ahead of LightGCN there; explanations exact)."),
    user: str = typer.Option("1", "--user", "-u", help="Whose recommendations to print."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Where to write the run folder (default: whyrec's cache, $WHYREC_CACHE/demo/MODEL, "
                                  "replaced on every demo; a folder you name is never replaced without --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder given as --out."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port of the page on 127.0.0.1 (0: any free port)."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve the page after printing (until Ctrl-C)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a good model on ML-100K, print a user's top 10 with "because you liked …", serve the page."""
    if model not in DEMO_MODELS:
        raise ValueError(f"--model must be one of {', '.join(DEMO_MODELS)}, got {model!r}")
    import time

    import whyrec

    from ..data.download import cache_root

    t0 = time.perf_counter()
    data = whyrec.load_dataset("ml-100k", data_dir)
    echo_notes(data.notes)
    run = whyrec.fit(data, model=model, seed=2020, progress=progress)
    metrics = run.evaluate(k=[10, 20])
    target = out if out is not None else cache_root() / "demo" / model
    run.save(target, overwrite=overwrite or out is None)
    typer.echo(f"{model} on ML-100K in {time.perf_counter() - t0:.1f} s: test Recall@20 {metrics['recall@20']:.4f}, "
               f"NDCG@20 {metrics['ndcg@20']:.4f} ({int(metrics['n_users'])} users); run folder {target}")
    recs = run.recommend(user=user, k=10)
    typer.echo(f"\ntop 10 for user {user}:")
    for r in recs:
        why = run.explain(user=user, item=r.item, method="history")
        typer.echo(f"{r.rank:>3}. {r.title}  (score {r.score:.3f})\n     {why.extras['because']}")
    if not serve:
        return
    import uvicorn

    from ..serve.app import create_app
    from ..serve.protocol import server_options

    typer.echo(f"\nthe page: http://127.0.0.1:{port}/  (Ctrl-C to stop)", err=True)
    uvicorn.run(create_app(target), **server_options(host="127.0.0.1", port=port))
