"""Model weights <-> safetensors files (no pickle, no code execution on load), and the
training state that lets an interrupted run resume.

Weights: only the state dict is stored (for LightGCN: ``user_emb.weight`` and
``item_emb.weight``; the graph is not part of it and must be set again with
``model.set_graph(train)``).

Training state (``training_state.pt``, written by :class:`whyrec.train.callbacks.Checkpoint` at every
evaluation and removed when training ends normally): the current and best weights, Adam's moments,
the epoch, the history so far and a fingerprint of the training config and matrix. Tensors go
through ``torch.save``; everything else is one JSON string, so loading uses
``torch.load(weights_only=True)`` and executes no code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["save_weights", "load_weights", "check_safetensors", "TRAINING_STATE", "save_training_state", "load_training_state",
           "read_training_info",
           "train_fingerprint"]

TRAINING_STATE = "training_state.pt"
_STATE_FORMAT = 1


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Optional[dict] = None) -> None:
    """Write ``model.state_dict()`` (contiguous CPU copies) to ``path``.
    ``metadata``: optional str->JSON-serialisable dict stored in the header
    (values are JSON-encoded), plus the model's class name."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"class": type(model).__name__}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = Path(f"{path}.tmp")  # written aside, then renamed: an existing file is never half-overwritten
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


#: the largest safetensors header accepted (a real one lists a few tensors: well under 1 MiB)
MAX_HEADER_BYTES = 100 * 1024 * 1024


def check_safetensors(path: str | os.PathLike) -> dict:
    """Read and check the header of a safetensors file before anything trusts it: 8 bytes of
    little-endian header length, that many bytes of JSON, every tensor's byte range inside the file.
    Raises ``ValueError`` (``"<path>: not a valid safetensors file: ..."``); returns the header."""
    path = Path(path)
    size = path.stat().st_size

    def bad(why: str) -> ValueError:
        return ValueError(f"{path}: not a valid safetensors file: {why}")

    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than its 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise bad(f"header length {n:,} bytes, but the file holds {size - 8:,} bytes after it")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad(f"header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data_bytes = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_bytes):
            raise bad(f"tensor {name!r} lies outside the file's {data_bytes:,} data bytes (truncated?)")
    return header


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a file written by :func:`save_weights` into ``model`` (in place,
    moved to the model's current device). Returns the model. A damaged file is a ``ValueError``
    naming it (:func:`check_safetensors`), never a safetensors traceback."""
    check_safetensors(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as err:  # safetensors' own error type for what the header check cannot see
        raise ValueError(f"{path}: not a valid safetensors file: {err}") from None
    model.load_state_dict(state, strict=strict)
    model.invalidate_cache()
    return model


def train_fingerprint(train_csr) -> str:
    """sha256 of a training matrix's shape and its (canonical) non-zero pattern."""
    csr = train_csr.tocsr()
    csr.sort_indices()
    h = hashlib.sha256(np.asarray(csr.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(csr.indptr, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(csr.indices, dtype=np.int64).tobytes())
    return h.hexdigest()


def _shapes(state: dict) -> dict:
    return {k: list(v.shape) for k, v in state.items()}


def save_training_state(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                        best_state: Optional[dict], info: dict) -> None:
    """Write the training state atomically (a temporary file renamed over ``path``, so a run killed
    while saving leaves the previous state intact). ``info``: JSON-serialisable (epoch, history,
    config, fingerprint, ...)."""
    path = Path(path)
    weights = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    payload = {
        "info": json.dumps({"format": _STATE_FORMAT, "model_class": type(model).__name__,
                            "shapes": _shapes(weights), **info}, default=float),
        "model": weights,
        "best": {k: v.detach().to("cpu") for k, v in best_state.items()} if best_state is not None else {},
        "optimizer": optimizer.state_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _read(path: Path) -> tuple[dict, dict]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        info = json.loads(payload["info"])
    except Exception as exc:  # torch raises several types for a damaged / foreign file
        raise ValueError(f"{path}: not a readable whyrec training state ({type(exc).__name__}: {exc})") from None
    if info.get("format") != _STATE_FORMAT:
        raise ValueError(f"{path}: training state format {info.get('format')!r}, this whyrec reads {_STATE_FORMAT}")
    return payload, info


def read_training_info(path: str | os.PathLike) -> dict:
    """The JSON part of a training state (epoch, history, config, ...), without checking it against a run."""
    return _read(Path(path))[1]


def load_training_state(path: str | os.PathLike, model: nn.Module, expect: dict) -> dict:
    """Read ``path`` written by :func:`save_training_state` and check it belongs to this run.

    ``expect``: the ``info`` keys that must match (e.g. ``config``, ``train``), compared after a JSON
    round trip. Raises ``ValueError`` naming what differs. Returns ``{"info", "model", "best",
    "optimizer"}`` (CPU tensors); nothing is loaded into ``model`` here."""
    path = Path(path)
    payload, info = _read(path)
    here = {k: v.detach() for k, v in model.state_dict().items()}
    if info.get("model_class") != type(model).__name__ or info.get("shapes") != _shapes(here):
        raise ValueError(f"{path}: saved for a {info.get('model_class')} with parameters {info.get('shapes')}, "
                         f"not this {type(model).__name__} {_shapes(here)} (different --model, --dim or --layers?)")
    for key, want in json.loads(json.dumps(expect, default=float)).items():
        have = info.get(key)
        if have == want:
            continue
        if isinstance(want, dict) and isinstance(have, dict):
            diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            detail = "; ".join(f"{k}: saved {have.get(k)!r}, now {want.get(k)!r}" for k in diff)
        else:
            detail = f"saved {have!r}, now {want!r}"
        raise ValueError(f"{path}: cannot resume, the {key} differs from the interrupted run's ({detail})")
    return {"info": info, "model": payload["model"], "best": payload["best"] or None,
            "optimizer": payload["optimizer"]}
