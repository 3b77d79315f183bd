"""``whyrec export``: a run's final user and item vectors, for other systems to serve.

An export folder holds

=================  ==================================================================
``users.npy``      ``(n_users, d)`` float32: row ``r`` is the user whose raw id is ``user_ids.npy[r]``
``items.npy``      ``(n_items, d)`` float32: row ``r`` is the item whose raw id is ``item_ids.npy[r]``
``user_ids.npy``   ``(n_users,)`` int64 raw user ids, in row order
``item_ids.npy``   ``(n_items,)`` int64 raw item ids, in row order
``users.parquet``  ``user_id`` (int64), ``row`` (int32), ``vector`` (fixed-size list of d float32)
``items.parquet``  ``item_id``, ``row``, ``title`` (string, may be null), ``genres`` (list of
                   strings), ``vector``
``export.json``    model, dataset, ``dim``, ``score`` (``"dot"``: the model's score of user ``u`` and
                   item ``i`` is ``users[u] · items[i]``), counts, the run's checksums and those of the
                   files above
=================  ==================================================================

Only models whose scores *are* the dot product of one user vector and one item vector can be
exported (LightGCN and its variants, MF, NMF): their ``score_users`` is
:meth:`whyrec.models.base.Recommender.score_users` over :meth:`embeddings`. Popularity, the graph
filters (GF-CF, BSPM, ChebyCF), KGCN and the graph VAEs score otherwise and are refused with the
reason; the filters' ``concept_embeddings`` reproduce only their rank-k term and are not exported as
if they were the model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .data.errors import WhyrecError

EXPORT_FILES = ("users.npy", "items.npy", "user_ids.npy", "item_ids.npy", "users.parquet", "items.parquet")
EXPORT_META = "export.json"


class ExportError(WhyrecError):
    """The run's model has no dot-product embedding space, or the target folder may not be written."""


def _model_name(run) -> str:
    return run.config.get("model", type(run.model).__name__)


def why_not_dot(run) -> str | None:
    """Why ``run``'s model's scores are not ``users @ items.T`` of its ``embeddings()`` (``None`` if they are):
    what export and the FAISS index refuse such a run with."""
    from .models.base import DOT, EXACT_HISTORY, can

    model, name = run.model, _model_name(run)
    if can(model, DOT):
        return None
    if can(model, EXACT_HISTORY):  # the graph filters
        return (f"a {name} run has no dot-product embedding space: a user is their interaction row and the "
                "score is a filter of it (its concept_embeddings reproduce only the rank-k term, not the model)")
    try:
        model.embeddings()
    except NotImplementedError as err:
        return f"a {name} run has no dot-product embedding space ({err})"
    return (f"a {name} run's scores are not the dot product of its user and item vectors "
            f"({type(model).__name__} scores users its own way)")


def dot_product_embeddings(run) -> tuple[np.ndarray, np.ndarray]:
    """The run's final ``(n_users, d)`` and ``(n_items, d)`` float32 vectors whose dot products are the
    model's scores; :class:`ExportError` (one line, with the reason) for a model without them."""
    import torch

    reason = why_not_dot(run)
    if reason is not None:
        raise ExportError(reason)
    with torch.inference_mode():
        users, items = run.model.embeddings()
        users = users.detach().to("cpu", torch.float32).numpy().copy()
        items = items.detach().to("cpu", torch.float32).numpy().copy()
    if users.shape != (run.n_users, items.shape[1]) or items.shape[0] != run.n_items:
        raise ExportError(f"{_model_name(run)}: embeddings of shape {users.shape} / {items.shape} do not fit "
                          f"{run.n_users} users and {run.n_items} items")
    return np.ascontiguousarray(users), np.ascontiguousarray(items)


def check_export_target(out: Path, overwrite: bool) -> bool:
    """Whether ``out`` holds something to replace; refuses an existing non-empty ``out`` without
    ``overwrite``, and, even with it, anything that is not an earlier export (no ``export.json``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; refusing to overwrite it")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if not (out / EXPORT_META).is_file():
        raise FileExistsError(f"{out} is not a whyrec export folder (no {EXPORT_META}); refusing to overwrite it")
    return True


def _vector_column(matrix: np.ndarray):
    import pyarrow as pa

    d = matrix.shape[1]
    flat = pa.array(np.ascontiguousarray(matrix, np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, d)


def _write_parquet(path: Path, columns: dict, metadata: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    table = table.replace_schema_metadata({b"whyrec": json.dumps(metadata).encode()})
    pq.write_table(table, path)


def export_run(run, out: str | Path, overwrite: bool = False) -> dict:
    """Write ``run``'s vectors and id maps to ``out`` (see the module docstring); returns ``export.json``.

    Everything is written into a temporary folder beside ``out`` and renamed into place once complete;
    an existing ``out`` is refused unless ``overwrite`` (and then only an earlier export is replaced,
    after the new one is complete)."""
    try:
        import pyarrow as pa
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ExportError(f"whyrec export needs pyarrow for the Parquet files ({err}); pip install pyarrow") from None
    from .data.download import file_hash
    from .run import commit_run_dir

    out = Path(out)
    replace = check_export_target(out, overwrite)
    users, items = dot_product_embeddings(run)  # refuses a model without a dot-product space, before any write
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        user_ids = np.asarray(run.user_ids, np.int64)
        item_ids = np.asarray(run.item_ids, np.int64)
        np.save(work / "users.npy", users)
        np.save(work / "items.npy", items)
        np.save(work / "user_ids.npy", user_ids)
        np.save(work / "item_ids.npy", item_ids)
        base = {"model": run.config["model"], "dim": int(users.shape[1]), "score": "dot"}
        _write_parquet(work / "users.parquet", {
            "user_id": pa.array(user_ids, pa.int64()),
            "row": pa.array(np.arange(len(user_ids), dtype=np.int32)),
            "vector": _vector_column(users),
        }, base)
        titles = run.item_titles or [None] * run.n_items
        genres = run.item_genres or [[] for _ in range(run.n_items)]
        _write_parquet(work / "items.parquet", {
            "item_id": pa.array(item_ids, pa.int64()),
            "row": pa.array(np.arange(len(item_ids), dtype=np.int32)),
            "title": pa.array([None if t is None else str(t) for t in titles], pa.string()),
            "genres": pa.array([list(g or []) for g in genres], pa.list_(pa.string())),
            "vector": _vector_column(items),
        }, base)
        run_path = Path(run.path)
        manifest = run_path / "manifest.json"
        try:
            weights_sha = json.loads(manifest.read_text()).get("weights.safetensors")
        except (OSError, json.JSONDecodeError):
            weights_sha = None
        meta = {
            "whyrec_export": 1,
            "run": str(run_path.resolve()),
            "dataset": run.config.get("dataset"),
            "model": run.config["model"],
            "model_config": run.config.get("model_config"),
            "dim": int(users.shape[1]),
            "dtype": "float32",
            "score": "dot",
            "score_rule": "score(user row u, item row i) = users[u] . items[i] (no bias, no normalisation)",
            "n_users": int(users.shape[0]),
            "n_items": int(items.shape[0]),
            "run_manifest_sha256": file_hash(manifest, "sha256") if manifest.is_file() else None,
            "run_weights_sha256": weights_sha,
            "files": {name: file_hash(work / name, "sha256") for name in EXPORT_FILES},
        }
        (work / EXPORT_META).write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(work, 0o755)  # mkdtemp makes it 0700; an export is meant to be read by others
        if replace:
            commit_run_dir(work, out)
        else:
            if out.is_dir():
                out.rmdir()  # empty (checked above)
            os.rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return meta


def load_export(folder: str | Path) -> dict:
    """Read an export folder back: ``{"meta", "users", "items", "user_ids", "item_ids"}`` (numpy)."""
    folder = Path(folder)
    meta = json.loads((folder / EXPORT_META).read_text())
    return {"meta": meta, **{name: np.load(folder / f"{name}.npy", allow_pickle=False)
                             for name in ("users", "items", "user_ids", "item_ids")}}


__all__ = ["EXPORT_FILES", "ExportError", "check_export_target", "dot_product_embeddings", "export_run",
           "load_export", "why_not_dot"]
