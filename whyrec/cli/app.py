"""The ``whyrec`` command line: wires the stages together, nothing more.

Every command reports bad input as one ``error: ...`` line on stderr and exits
with status 1 (no traceback): whyrec's own errors through :func:`friendly`, and the
framework's (an unknown option, a value out of range, a missing argument) through
:class:`WhyrecGroup`, which every invocation of the ``whyrec`` group goes through.

Importing this package stays cheap (no torch, numpy or pandas): ``whyrec --help`` and
errors about flags answer at once; each command imports what it needs when it runs.
"""

from __future__ import annotations

import functools
import re
import sys

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ..data.errors import WhyrecError
from ..data.names import DATASET_NAMES

try:  # typer >= 0.2x carries its own copy of click
    from typer import _click as _clk
except ImportError:  # pragma: no cover - older typer, on click
    import click as _clk

ClickException = _clk.exceptions.ClickException
NoArgsIsHelpError = getattr(_clk.exceptions, "NoArgsIsHelpError", None)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "bool": "BOOLEAN"}


def _metavar(param, typer_display, ctx) -> str:
    """``<int range>`` -> ``INTEGER``, ``<list[str]>`` -> ``TEXT`` (the help says when it repeats)."""
    if param.metavar:
        return param.metavar
    label = (typer_display(ctx) or "").strip("<>")
    label = re.sub(r"^list\[(.*)\]$", r"\1", label).replace(" range", "")
    return _METAVARS.get(label, label.upper())


class WhyrecCommand(TyperCommand):
    """A command with plain help: ``Usage: whyrec explain [OPTIONS] RUN_DIR``, options shown with
    click's metavars (``--user TEXT``, ``--k INTEGER RANGE``) and flags without a type."""

    def __init__(self, *args, **kwargs):
        kwargs["rich_markup_mode"] = None
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                name = (param.metavar or param.name or "arg").upper()
                usage = name if param.required else f"[{name}]"
                if param.nargs != 1:
                    usage += "..."
                param._rich_display_name = lambda name=name: name
                param._usage_display_name = lambda usage=usage: usage
                param.display_type_rich = lambda ctx: None
            elif isinstance(param, TyperOption) and not param.is_flag:
                param.display_type_rich = functools.partial(_metavar, param, param.display_type_rich)


class WhyrecGroup(TyperGroup):
    """The ``whyrec`` group: any usage error of the framework becomes one ``error: …`` line, status 1."""

    def __init__(self, *args, **kwargs):
        kwargs["rich_markup_mode"] = None
        super().__init__(*args, **kwargs)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except ClickException as err:
            if NoArgsIsHelpError is not None and isinstance(err, NoArgsIsHelpError) and err.ctx is not None:
                typer.echo(err.ctx.get_help())  # `whyrec` alone (or a group alone): its help
                code = 0
            else:
                ctx = getattr(err, "ctx", None)
                hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
                typer.echo(f"error: {_lower_first(_one_line(err.format_message())).rstrip('.')}{hint}", err=True)
                code = 1
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


class WhyrecTyper(typer.Typer):
    """``typer.Typer`` whose commands are :class:`WhyrecCommand` by default."""

    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", WhyrecCommand)
        return super().command(*args, **kwargs)


app = WhyrecTyper(
    cls=WhyrecGroup,
    help="Graph recommenders that can say why: data, train, evaluate, recommend, explain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
data_app = WhyrecTyper(cls=WhyrecGroup, help="Inspect datasets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")

DATASETS = ", ".join(DATASET_NAMES)
#: shared defaults, so that every command that has the option means the same by it
DEFAULT_SEED = 2020
DEFAULT_PROGRESS = True


def _os_error_message(err: OSError) -> str:
    what = err.strerror or str(err)
    if getattr(err, "filename", None):
        return f"{err.filename}: {what[:1].lower() + what[1:]}"
    return what


def _rank_prefix() -> str:
    """``rank R of N: `` under torchrun (``WORLD_SIZE`` > 1), so that the failing rank's line stands out
    in the launcher's report; nothing in one process."""
    import os

    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) <= 1:
        return ""
    return f"rank {os.environ.get('RANK', '?')} of {world}: "


def friendly(fn):
    """Turn whyrec's own errors (and bad values, unreadable files) into one line on stderr and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (WhyrecError, KeyError, ValueError) as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        except OSError as err:  # a missing or unreadable file, a folder where a file is expected, a full disk
            msg = _os_error_message(err) if err.strerror else str(err)
        else:
            return None
        typer.echo(f"error: {_rank_prefix()}{_one_line(msg)}", err=True)
        raise typer.Exit(1)

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


def run_dir_argument(help: str = "Run folder written by `whyrec train`."):
    return typer.Argument(..., metavar="RUN_DIR", help=help)


def device_option(default: str = "cpu", what: str = "The model computes"):
    """``--device``, the same on every command: auto, cpu, cuda or cuda:N (:func:`whyrec.device.resolve_device`)."""
    return typer.Option(default, "--device", help=f"{what} on this device: auto (CUDA if available and the model "
                                                  "runs there), cpu, cuda or cuda:N.")


def seed_option(help: str):
    return typer.Option(DEFAULT_SEED, "--seed", help=help)


def progress_option(help: str = "Show a progress bar."):
    return typer.Option(DEFAULT_PROGRESS, "--progress/--no-progress", help=help)


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
