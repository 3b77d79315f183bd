"""``whyrec serve``: an HTTP API and a web page that recommend and explain from one run folder.

:func:`create_app` (in :mod:`whyrec.serve.app`, imported lazily so that the CLI does not need
FastAPI) builds the ASGI application.  Which explanation methods a run supports, and by which
module, is decided in :mod:`whyrec.explain` (shared with ``whyrec explain``).
"""

from __future__ import annotations

from ..explain import (MethodUnavailable, UnsupportedMethod, available_methods, explainer_for, explanation_module,
                       supported_methods)


def create_app(run, **kwargs):
    """See :func:`whyrec.serve.app.create_app`."""
    from .app import create_app as _create

    return _create(run, **kwargs)


__all__ = ["MethodUnavailable", "UnsupportedMethod", "available_methods", "create_app", "explainer_for",
           "explanation_module", "supported_methods"]
