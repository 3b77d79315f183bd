"""Run folders: everything a trained model needs, loadable without the dataset or executing code.

A run folder holds

=======================  =========================================================
``config.json``          dataset, model name and config, training config, split summary
``weights.safetensors``  the model's state dict (safetensors: no pickle, no code)
``split.npz``            the split (indices + the ``(user, item)`` pairs of each part)
``items.json``           raw item ids, titles and genres (for ``recommend`` and the service)
``users.json``           raw user ids (index order)
``extras.npz``           arrays the model needs beyond the graph (side features, KG), if any
``metrics.json``         validation (best epoch) and test metrics
``curves.csv/.png``      training curves (trainable models)
``manifest.json``        SHA-256 of every file above: a tampered or truncated file is refused
=======================  =========================================================
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .data.dataset import InteractionData, binary_matrix
from .data.download import file_hash
from .data.ids import UserItemIds
from .data.errors import WhyrecError
from .data.splits import Split

CORE_FILES = ("config.json", "weights.safetensors", "split.npz", "items.json", "users.json")


class RunError(WhyrecError):
    """A run folder is missing, incomplete or was modified."""


def _sha256(path: Path) -> str:
    return file_hash(path, "sha256")


def check_run_target(out: Path, overwrite: bool) -> bool:
    """Check ``out`` may receive a new run; returns whether something is there to be replaced.

    An existing non-empty ``out`` is refused unless ``overwrite``; with ``overwrite``, a folder that is
    not a whyrec run (nor an interrupted one) is still refused. Nothing is changed here."""
    from .train.checkpoint import TRAINING_STATE

    out = Path(out)
    if not (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        return False
    interrupted = (out / TRAINING_STATE).is_file() and not (out / "config.json").exists()
    if not overwrite:
        if interrupted:
            raise FileExistsError(f"{out} holds an interrupted training run; add --resume to continue it or "
                                  "--overwrite to start over")
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if out.is_dir() and not interrupted and not (out / "config.json").exists():
        raise FileExistsError(f"{out} is not a whyrec run folder; refusing to overwrite it")
    return True


def prepare_run_dir(out: Path, overwrite: bool) -> Path:
    """Create ``out`` for a new run, refusing an existing non-empty folder unless ``overwrite``.

    Nothing existing is removed: when ``out`` holds a run to be replaced, the new run is made in a
    fresh temporary folder beside it (returned) and :func:`commit_run_dir` swaps it in once it is
    complete; until then (a failure, Ctrl-C, a full disk) the old run stays as it was."""
    out = Path(out)
    if check_run_target(out, overwrite):
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    out.mkdir(parents=True, exist_ok=True)
    return out


def commit_run_dir(built: Path, out: Path) -> None:
    """Put the complete run ``built`` (from :func:`prepare_run_dir`) at ``out``, replacing what is there.

    The old run is first renamed aside, the new one renamed into place, then the old one removed:
    each step is one rename on the same file system, and at every moment either the old or the new
    complete run exists under a known name."""
    built, out = Path(built), Path(out)
    if built == out:
        return
    old = None
    if out.exists() or out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rmdir(old)
        os.rename(out, old)
    try:
        os.rename(built, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)  # put the old run back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()


def discard_run_dir(built: Path, out: Path) -> None:
    """Remove a temporary folder from :func:`prepare_run_dir` after a failure (``out`` is untouched)."""
    if Path(built) != Path(out):
        shutil.rmtree(built, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and ``os.replace``: a reader (or the
    user, after a crash) sees the old file or the new one, never a half-written one."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path`` (same suffix, so writers that go by the extension — a
    figure — work); on success it replaces ``path`` with ``os.replace``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def build_model(name: str, n_users: int, n_items: int, train: sp.csr_matrix, model_config: dict,
                extras: dict | None = None):
    """Instantiate a model by its ``--model`` name through its recipe."""
    from .recipes import ModelInputs, get_recipe

    return get_recipe(name).build(ModelInputs(n_users, n_items, train, dict(extras or {})), model_config)


def save_split_pairs(path: Path, split: Split, data: InteractionData) -> None:
    """``split.npz``: the split's indices and meta plus the resolved pairs of each part."""
    split.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z)
    for part in ("train", "valid", "test"):
        idx = getattr(split, part)
        arrays[f"{part}_users"] = data.users[idx].astype(np.int32)
        arrays[f"{part}_items"] = data.items[idx].astype(np.int32)
    # every interaction, positive or not: what "already seen" means for recommend
    arrays["seen_users"] = data.users.astype(np.int32)
    arrays["seen_items"] = data.items.astype(np.int32)
    arrays["seen_ratings"] = data.ratings.astype(np.float32)
    np.savez_compressed(path, **arrays)


@dataclass
class Run(UserItemIds):
    """A loaded run folder (see the module docstring)."""

    path: Path
    config: dict
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_titles: list[str] | None
    item_genres: list[list[str]] | None
    split: Split
    matrices: dict[str, sp.csr_matrix]  # train, valid, test (positives) and seen (every interaction)
    model: object
    extras: dict
    #: ``(n_users, n_items)`` CSR of every interaction's rating / weight (not only positives)
    ratings: sp.csr_matrix
    #: :class:`whyrec.recommend.Prepared` once :meth:`prepare` ran (``None``: every request computes)
    prepared: object = field(default=None, init=False, repr=False, compare=False)
    # per-run caches, filled on first use: the title index, the title search's keys, the explainers' caches
    # (whyrec.explain.run_cache) and, for a run made in memory by whyrec.fit, what was trained
    _titles: object = field(default=None, init=False, repr=False, compare=False)
    _search_index: object = field(default=None, init=False, repr=False, compare=False)
    _explain_caches: object = field(default=None, init=False, repr=False, compare=False)
    _trained: object = field(default=None, init=False, repr=False, compare=False)

    def user_index(self, raw: str | int) -> int:
        """Index of a raw user id; :class:`KeyError` naming the run's id range if unknown."""
        row = self.user_lookup.find(raw)
        if row is None:
            raise KeyError(f"unknown user id {raw!r} (this run has {self.n_users:,} users, "
                           f"ids {self.user_ids.min()}..{self.user_ids.max()})")
        return row

    @property
    def device(self):
        """The :class:`torch.device` the model computes on (:meth:`to`)."""
        return self.model.device

    def to(self, device="auto") -> "Run":
        """Move the model to ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; :func:`whyrec.device.
        resolve_device`): scoring, evaluation, recommendations and explanations then run there, with
        the CPU's results to float tolerance. A device that is not here, or one the model cannot
        compute on, is a :class:`ValueError`. Returns the run."""
        from .device import resolve_device

        target = resolve_device(device, self.model)
        if target != self.model.device:
            self.model.to(target)
            self.model.invalidate_cache()  # explanation caches follow weights_version, which moves too
        return self

    def titles(self):
        from .data.titles import TitleIndex

        index = self._titles
        if index is None:
            index = self._titles = TitleIndex(self.item_ids, self.item_titles)
        return index

    # -- the library face: what the CLI and the service do, in a line each ------------------------ #
    @classmethod
    def from_trained(cls, trained) -> "Run":
        """An in-memory run from :func:`whyrec.pipeline.run_training` (nothing written; :meth:`save`
        writes the run folder)."""
        data, split = trained.data, trained.split
        train, valid, test = trained.matrices or split.matrices(data)
        shape = (data.n_users, data.n_items)
        run = cls(None, run_config(data, split, trained.model_name, trained.model_config, trained.train_config),
                  np.asarray(data.user_ids, np.int64), np.asarray(data.item_ids, np.int64), data.item_titles,
                  data.item_genres, split,
                  {"train": train, "valid": valid, "test": test,
                   "seen": binary_matrix(data.users, data.items, shape)},
                  trained.model, trained.extras,
                  sp.csr_matrix((data.ratings, (data.users, data.items)), shape=shape))
        run._trained = trained
        return run

    @property
    def metrics(self) -> dict:
        """Validation and test metrics of training (``metrics.json``)."""
        trained = self._trained
        if trained is not None:
            return trained.metrics
        return json.loads((Path(self.path) / "metrics.json").read_text())

    def evaluate(self, k=(10, 20), on: str = "test") -> dict:
        """Full-ranking metrics on the ``on`` part (``"test"`` or ``"valid"``), training items masked:
        ``{"recall@20": …, "ndcg@20": …, …}`` for every cut-off in ``k`` (an int or a list)."""
        from .evaluate import evaluate_ranking

        if on not in ("test", "valid"):
            raise ValueError(f"on must be test or valid, got {on!r}")
        target = self.matrices[on]
        if target.nnz == 0:
            raise ValueError(f"run {self.path if self.path is not None else '(in memory)'} has no {on} interactions")
        return evaluate_ranking(self.model.score_users, self.matrices["train"], target,
                                ks=(k,) if isinstance(k, int) else tuple(k))

    def recommend(self, user=None, liked=None, k: int = 10, index=None):
        """Top ``k`` items for a known ``user`` (raw id; items they interacted with are left out) or for
        a new user who ``liked`` these items (titles, forgivingly matched, or raw ids): a
        :class:`whyrec.recommend.Recommendations` list (``.item`` raw id, ``.title``, ``.score``).
        ``index``: an approximate item index (:func:`whyrec.serve.index.item_index`) searched instead
        of scoring every item."""
        from .recommend import Recommendations, recommend_for_new_user, recommend_for_user

        if (user is None) == (not liked):
            raise ValueError("give either user= (a raw id) or liked= (a list of items)")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.n_items:
            raise ValueError(f"k must be an integer in 1..{self.n_items}, got {k!r}")
        if user is not None:
            return Recommendations(recommend_for_user(self, user, int(k), index=index))
        return Recommendations(recommend_for_new_user(self, [str(x) for x in liked], int(k), index=index))

    def prepare(self, scores_limit: int | None = None) -> "Run":
        """Precompute what repeated requests share (:class:`whyrec.recommend.Prepared`: a dot-product
        model's two embedding tables, or every user's scores up to ``scores_limit`` entries; the seen
        items; every item's title and genres; the title-search index; each available explainer's
        per-run work, its module's ``prepare(run)``), so that each later :meth:`recommend` for a known
        user is one product and a topk, with the same result. For a frozen model (the service calls it
        at start-up); call it again after changing the model."""
        from .explain import available_methods, explanation_module
        from .recommend import PRECOMPUTED_SCORES_LIMIT, Prepared

        self.prepared = None
        self.prepared = Prepared(self, PRECOMPUTED_SCORES_LIMIT if scores_limit is None else int(scores_limit))
        self.search("")  # builds the title-search index
        for method in available_methods(self):
            prepare = getattr(explanation_module(self, method), "prepare", None)  # optional in a method module
            if prepare is not None:
                try:
                    prepare(self)
                except ValueError:  # e.g. concepts on a dataset without genres: explaining says why
                    pass
        return self

    def search(self, query: str, limit: int = 10) -> list[dict]:
        """Items whose title (or raw id) matches ``query``, prefix matches first, most interacted-with
        first: ``[{"item_id", "title", "genres", "n_interactions"}]`` (:func:`whyrec.recommend.search_items`)."""
        from .recommend import search_items

        return search_items(self, str(query), int(limit))

    def profile(self, user=None, liked=None) -> list[dict]:
        """The genre profile of a known ``user``'s interactions (raw id), or of the items a new user
        ``liked`` (titles or raw ids): ``[{"genre", "count", "share"}]``, most frequent first."""
        from .recommend import genre_profile, resolve_items, user_profile

        if (user is None) == (not liked):
            raise ValueError("give either user= (a raw id) or liked= (a list of items)")
        if user is not None:
            return user_profile(self, self.user_index(user))
        return genre_profile(self, resolve_items(self, [str(x) for x in liked]))

    def explain(self, user, item=None, method: str = "history", **options):
        """Why ``user`` (raw id) gets ``item`` (raw id or title; default: their first recommendation,
        :func:`whyrec.explain.default_item`), by ``method`` (:func:`whyrec.explain.supported_methods` lists this run's): an
        :class:`whyrec.explain.explanation.Explanation`."""
        from .explain import explainer_for

        ex = explainer_for(self, method)
        options.setdefault("top", self.n_items)  # every contribution, not the CLI's top 10
        u = self.user_index(user)
        i = self.titles().resolve(str(item)) if item is not None else None
        return ex.explain(self, u, i, **options)

    def save(self, path, overwrite: bool = False) -> Path:
        """Write this run as a run folder at ``path`` (what ``whyrec train --out`` writes), atomically:
        an existing run there is replaced only with ``overwrite`` and only once the new one is complete."""
        path = Path(path)
        trained = self._trained
        if trained is None and self.path is not None and Path(self.path).resolve() == path.resolve():
            raise ValueError(f"{path} is this run's own folder")
        created = not path.exists()
        work = prepare_run_dir(path, overwrite)
        try:
            if trained is not None:
                trained.write(work)
            else:  # a loaded run folder: copy its files (verified on load)
                for f in sorted(Path(self.path).iterdir()):
                    if f.is_file():
                        shutil.copy2(f, work / f.name)
            commit_run_dir(work, path)
        except BaseException:
            discard_run_dir(work, path)
            if created:
                shutil.rmtree(path, ignore_errors=True)
            raise
        self.path = path
        return path


def run_config(data: InteractionData, split: Split, model_name: str, model_config: dict, train_config: dict) -> dict:
    """``config.json`` of a run."""
    return {
        "whyrec_run": 1,
        "dataset": data.name,
        "data_dir": str(Path(data.source_dir).resolve()) if data.source_dir else None,
        "model": model_name,
        "model_config": model_config,
        "train_config": train_config,
        "split": split.describe(data),
        "n_users": data.n_users,
        "n_items": data.n_items,
    }


def write_run(out: Path, *, data: InteractionData, split: Split, model, model_name: str, model_config: dict,
              train_config: dict, metrics: dict, extras: dict | None = None) -> None:
    """Write every file of a run folder and its manifest."""
    from .train.checkpoint import save_weights

    out = Path(out)
    config = run_config(data, split, model_name, model_config, train_config)
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    save_weights(model, out / "weights.safetensors", metadata={"model": model_name})
    save_split_pairs(out / "split.npz", split, data)
    atomic_write_text(out / "items.json", json.dumps({
        "item_ids": [int(i) for i in data.item_ids],
        "titles": data.item_titles,
        "genres": data.item_genres,
    }))
    atomic_write_text(out / "users.json", json.dumps({"user_ids": [int(u) for u in data.user_ids]}))
    if extras:
        np.savez_compressed(out / "extras.npz", **extras)
    write_metrics(out, metrics)
    write_manifest(out)


def write_metrics(out: Path, metrics: dict) -> None:
    atomic_write_text(Path(out) / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def write_manifest(out: Path) -> None:
    files = {p.name: _sha256(p) for p in sorted(Path(out).iterdir()) if p.is_file() and p.name != "manifest.json"}
    atomic_write_text(Path(out) / "manifest.json", json.dumps(files, indent=2) + "\n")


def verify_run(path: Path) -> dict:
    """Check the folder has every core file and each matches the manifest; return the config."""
    from .train.checkpoint import TRAINING_STATE  # lazy: keeps torch out of this module's import

    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run folder {path} does not exist")
    missing = [f for f in CORE_FILES + ("manifest.json",) if not (path / f).is_file()]
    if missing and (path / TRAINING_STATE).is_file():
        raise RunError(f"run folder {path} holds a training run that stopped before its end; finish it with "
                       "the same `whyrec train` command plus --resume")
    if missing:
        raise RunError(f"run folder {path} is incomplete: missing {', '.join(missing)}")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except json.JSONDecodeError:
        raise RunError(f"{path / 'manifest.json'}: not valid JSON") from None
    for name in CORE_FILES + (("extras.npz",) if "extras.npz" in manifest else ()):
        if not (path / name).is_file():
            raise RunError(f"run folder {path} is incomplete: missing {name}")
        if name not in manifest:
            raise RunError(f"{path / 'manifest.json'}: no checksum for {name}")
        if _sha256(path / name) != manifest[name]:
            raise RunError(f"{path / name} was modified after the run was written (checksum mismatch)")
    config = json.loads((path / "config.json").read_text())
    from .recipes import recipes

    if config.get("whyrec_run") != 1 or config.get("model") not in recipes():
        raise RunError(f"{path / 'config.json'}: not a whyrec run config")
    return config


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Load and verify a run folder; the model comes back in eval mode on ``device`` (``auto``, ``cpu``,
    ``cuda``, ``cuda:N``: :meth:`Run.to`)."""
    from .train.checkpoint import check_safetensors, load_weights

    path = Path(path)
    config = verify_run(path)
    items = json.loads((path / "items.json").read_text())
    users = json.loads((path / "users.json").read_text())
    split = Split.load(path / "split.npz")
    n_users, n_items = len(users["user_ids"]), len(items["item_ids"])
    matrices = {}
    with np.load(path / "split.npz", allow_pickle=False) as z:
        ratings = sp.csr_matrix((z["seen_ratings"], (z["seen_users"], z["seen_items"])), shape=(n_users, n_items))
        for part in ("train", "valid", "test", "seen"):
            u, i = z[f"{part}_users"], z[f"{part}_items"]
            matrices[part] = binary_matrix(u, i, (n_users, n_items))
    extras = {}
    if (path / "extras.npz").is_file():
        with np.load(path / "extras.npz", allow_pickle=False) as z:
            extras = dict(z)
    try:
        check_safetensors(path / "weights.safetensors")  # before building anything on top of it
    except ValueError as err:
        raise RunError(str(err)) from None
    model = build_model(config["model"], n_users, n_items, matrices["train"], config["model_config"], extras)
    try:
        load_weights(model, path / "weights.safetensors")
    except (RuntimeError, ValueError, OSError) as err:
        raise RunError(f"{path / 'weights.safetensors'}: does not fit a {config['model']} model ({err})") from None
    model.eval()
    run = Run(path, config, np.asarray(users["user_ids"], np.int64), np.asarray(items["item_ids"], np.int64),
              items.get("titles"), items.get("genres"), split, matrices, model, extras, ratings)
    return run.to(device)


__all__ = ["Run", "RunError", "atomic_path", "atomic_write_bytes", "atomic_write_text", "build_model",
           "check_run_target", "commit_run_dir", "discard_run_dir", "load_run", "prepare_run_dir", "verify_run",
           "write_run"]
