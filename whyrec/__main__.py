"""``python -m whyrec``: the ``whyrec`` command."""

from .cli import app

app(prog_name="whyrec")
