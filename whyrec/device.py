"""Which device a model computes on: ``--device auto|cpu|cuda|cuda:N`` of every command, the
``device=`` of :func:`whyrec.load`, :meth:`whyrec.run.Run.to` and :func:`whyrec.fit`.

``auto`` is CUDA when torch sees a CUDA device **and** the model computes there (it declares
:data:`whyrec.models.base.CUDA`; every whyrec model does, the graph filters and NMF included), else
the CPU. Asking for ``cuda`` where there is none, or for a model that does not declare ``CUDA``, is a
:class:`ValueError` with one line saying so — never a silent fallback.
"""

from __future__ import annotations

__all__ = ["DEVICES", "resolve_device"]

#: what ``--device`` accepts (plus ``cuda:N``)
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device="auto", model=None):
    """``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a :class:`torch.device` or ``None``
    = auto) as a :class:`torch.device` that exists here and that ``model`` (optional) can compute on."""
    import torch

    from .models.base import CUDA, can

    cuda_ok = model is None or can(model, CUDA)
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() and cuda_ok else "cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available on this machine "
                             f"(torch {torch.__version__}, {build}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        if not cuda_ok:
            raise ValueError(f"{type(model).__name__} computes on the CPU only, not on "
                             f"{str(device)!r}; use --device cpu or auto")
    return dev
