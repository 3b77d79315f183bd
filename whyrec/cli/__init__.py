"""The ``whyrec`` command line: wires the stages together, nothing more.

Every command reports bad input as one ``error: ...`` line on stderr and exits
with status 1 (no traceback).  Each module of this package adds its commands
to :data:`app`; all of them are imported here.
"""

from __future__ import annotations

import importlib
import pkgutil

from .app import app

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "app":
        importlib.import_module(f"{__name__}.{_mod.name}")


def main() -> None:  # pragma: no cover - console entry point
    app()


__all__ = ["app", "main"]
