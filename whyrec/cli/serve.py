"""``whyrec serve``: the HTTP API and web page for one run folder."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, friendly, run_dir_argument


@app.command()
@friendly
def serve(
    run_dir: Path = run_dir_argument("Run folder written by `whyrec train` (read only, never written)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default; 0.0.0.0 exposes it)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free port)."),
    max_body: int = typer.Option(64 * 1024, min=1, help="Largest accepted request body in bytes (413 beyond)."),
    workers: int = typer.Option(1, min=1, max=64, help="Server processes (each loads the run once)."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request."),
    threads: int = typer.Option(1, "--threads", min=1, max=256,
                                help="torch threads per server process. Requests are small (one user's scores, one "
                                     "explanation): one thread avoids thread spin-up and OpenMP waits on a busy "
                                     "machine; use --workers to use more cores."),
) -> None:
    """Serve recommendations and explanations over HTTP, with a web page at /."""
    try:
        import uvicorn

        from ..serve.app import create_app
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ValueError(f"whyrec serve needs fastapi and uvicorn ({err}); pip install fastapi uvicorn") from None
    import os

    import torch

    from ..run import load_run
    from ..serve.app import MAX_BODY_ENV, RUN_ENV

    torch.set_num_threads(threads)  # worker processes inherit it through the environment below
    os.environ["OMP_NUM_THREADS"] = str(threads)
    run = load_run(run_dir)  # bad folders fail here, with one line
    typer.echo(f"whyrec serve: {run.config['model']} on {run.config['dataset']} "
               f"({run.n_users:,} users, {run.n_items:,} items) at http://{host}:{port}/"
               + (f" ({workers} workers)" if workers > 1 else ""), err=True)
    options = {"host": host, "port": port, "log_level": "warning", "access_log": access_log}
    if workers == 1:
        uvicorn.run(create_app(run, max_body_bytes=max_body), **options)
    else:  # worker processes import the app from a factory, which reads the run folder from the environment
        del run
        os.environ[RUN_ENV] = str(Path(run_dir).resolve())
        os.environ[MAX_BODY_ENV] = str(max_body)
        uvicorn.run("whyrec.serve.app:app_from_env", factory=True, workers=workers, **options)
