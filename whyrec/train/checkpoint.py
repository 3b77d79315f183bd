"""Model weights <-> safetensors files (no pickle, no code execution on load).

Only the state dict is stored (for LightGCN: ``user_emb.weight`` and
``item_emb.weight``; the graph is not part of it and must be set again with
``model.set_graph(train)``).
"""

from __future__ import annotations

import json
import os
from typing import Optional

from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["save_weights", "load_weights"]


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Optional[dict] = None) -> None:
    """Write ``model.state_dict()`` (contiguous CPU copies) to ``path``.
    ``metadata``: optional str->JSON-serialisable dict stored in the header
    (values are JSON-encoded), plus the model's class name."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"class": type(model).__name__}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(state, str(path), metadata=meta)


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a file written by :func:`save_weights` into ``model`` (in place,
    moved to the model's current device). Returns the model."""
    state = load_file(str(path), device="cpu")
    model.load_state_dict(state, strict=strict)
    if hasattr(model, "invalidate_cache"):
        model.invalidate_cache()
    return model
