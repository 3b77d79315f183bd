"""The ``whyrec`` command line: wires the stages together, nothing more.

Every command reports bad input as one ``error: ...`` line on stderr and exits
with status 1 (no traceback).
"""

from __future__ import annotations

import functools

import typer

from ..data import LOADERS, WhyrecError

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


