"""``whyrec serve``: an HTTP API and a web page that recommend and explain from one run folder.

:func:`create_app` (in :mod:`whyrec.serve.app`, imported lazily so that the CLI and the
explanation helpers below do not need FastAPI) builds the ASGI application.

The helpers here are the one place where "may this run be explained with this method, and by
which module" is decided, for the service and (ideally) the ``whyrec explain`` command alike:

* :func:`supported_methods` — the methods the run's model supports (its recipe's
  ``explain_methods``);
* :func:`explanation_module` — the module implementing a method for a run, raising
  :class:`UnsupportedMethod` (the model does not support it; the message names the supported ones)
  or :class:`MethodUnavailable` (supported, but its module is not part of this version of whyrec);
* :func:`available_methods` — the supported methods whose module can be imported now.
"""

from __future__ import annotations


class UnsupportedMethod(ValueError):
    """The run's model does not support this explanation method (``.supported`` lists those it does)."""

    def __init__(self, message: str, supported: tuple[str, ...]):
        super().__init__(message)
        self.supported = tuple(supported)


class MethodUnavailable(ValueError):
    """The method is supported by the model but its module is missing from this installation."""


def supported_methods(run) -> tuple[str, ...]:
    """The explanation methods the run's model supports, in its recipe's order."""
    from ..train.recipes import get_recipe

    return tuple(get_recipe(run.config["model"]).explain_methods)


def explanation_module(run, method: str, *, option: str = "method"):
    """The module implementing ``method`` for ``run``.

    Raises :class:`UnsupportedMethod` when the run's model does not support ``method`` (the message
    names the supported ones; ``option`` is how the caller spells the parameter, ``--method`` for
    the CLI) and :class:`MethodUnavailable` when the method's module does not exist yet.
    """
    from ..explain import explainer

    supported = supported_methods(run)
    if method not in supported:
        names = ", ".join(supported) if supported else "none"
        raise UnsupportedMethod(f"a {run.config['model']} run cannot be explained with {option} {method}; "
                                f"supported: {names}", supported)
    try:
        return explainer(method)
    except ValueError as err:
        raise MethodUnavailable(str(err)) from None


def available_methods(run) -> tuple[str, ...]:
    """The supported methods whose module imports (the ones an explanation request can answer now)."""
    out = []
    for m in supported_methods(run):
        try:
            explanation_module(run, m)
        except ValueError:
            continue
        out.append(m)
    return tuple(out)


def create_app(run, **kwargs):
    """See :func:`whyrec.serve.app.create_app`."""
    from .app import create_app as _create

    return _create(run, **kwargs)


__all__ = ["MethodUnavailable", "UnsupportedMethod", "available_methods", "create_app", "explanation_module",
           "supported_methods"]
