"""Concept Activation Vectors (CAVs) for genres in an embedding recommender (seed 004).

For a model that scores ``ŷ(u, m) = e_u · e_m`` (every whyrec model, via
:meth:`~whyrec.models.base.Recommender.embeddings`), a genre ``C`` is a
*concept*: the final embeddings of C's items versus those of all other items.

CAV
    One scikit-learn :class:`~sklearn.linear_model.LogisticRegression` per genre
    (``class_weight="balanced"``, L2, ``C=1``, liblinear solver) separating the
    items of ``C`` (label 1) from every other item (label 0). Embeddings are
    divided by one global scalar (their overall standard deviation) before the
    fit so that the regularization strength means the same for every model;
    a global scalar does not change the direction. The accuracy reported is
    measured on a stratified held-out 30 % of the items (the classifier used
    for it is fitted on the other 70 %); the vector ``v_C`` is then the
    coefficient vector of the same classifier re-fitted on *all* items.
    ``coef_`` keeps that raw coefficient vector (in embedding units);
    ``cavs_`` holds it **normalized to unit length**, and every sensitivity
    below uses the unit vectors, so that sensitivities of different genres are
    on the same scale (the raw norm only reflects how separable the genre is
    and the regularization). Correlations across users are unaffected by this
    choice (they are invariant to a positive scale of ``v_C``).

Sensitivity
    ``S_C(u) = ∇_{e_m}(e_u · e_m) · v_C = e_u · v_C``, for all users and genres
    at once: ``S = E_users @ V^T`` ``(n_users, n_genres)``.

Significance (TCAV-style, Kim et al. 2018)
    For genre ``C`` with ``n_C`` items, ``R`` *random concepts* are drawn: item
    sets of the same size ``n_C`` sampled uniformly without replacement from
    the catalogue. A CAV is trained for each exactly as for ``C`` (same
    classifier, same 70/30 stratified split procedure) and its held-out
    **ROC AUC** (of the decision function on the held-out 30 %; threshold-free,
    so less noisy than accuracy for small genres) is recorded; these ``R``
    values are the null distribution. The one-sided permutation p-value is::

        p_C = (1 + #{r : auc_r >= auc_C}) / (R + 1)

    and ``significant = p_C <= alpha`` (default ``alpha = 0.05``; note the
    smallest attainable p is ``1 / (R + 1)``, so use ``R >= 19``). No
    multiple-testing correction is applied; ``p_value`` is reported so one can
    apply one. As a secondary, classic TCAV statistic we also report the
    *TCAV score* (share of users with ``S_C(u) > 0``) and a two-sided
    empirical p-value of ``|score - 0.5|`` against the random CAVs' scores.

Agreement with behaviour
    Per genre, Pearson and Spearman correlations across users (with p-values and
    the number of users) between ``S_C(u)`` and (a) the user's mean rating of
    the genre's movies, over users with at least ``min_ratings`` rated movies in
    the genre (every rating in the run, i.e. ``run.ratings``), and (b) the share
    of the user's *training* positives that fall in the genre, which is what an
    implicit-feedback model actually sees (users with at least one training
    positive). A movie with several genres counts in each of them.

Everything here is plain numpy / scikit-learn; the explainer contract at the
bottom (:func:`explain_run`, :func:`describe`, :func:`details`, :func:`plot`) serves
``whyrec explain --method concepts``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp

from ..data.errors import WhyrecError
from ..models.base import DOT, can

__all__ = [
    "ConceptError", "ConceptActivationVectors", "ConceptSignificanceTest", "GenreHistory",
    "genre_matrix", "select_genres", "sensitivities", "rank_genres", "cosine_matrix", "pca_2d",
    "agreement", "run_embeddings", "analyze_run", "ConceptReport",
    "explain_run", "describe", "details", "plot", "DEFAULT_MIN_ITEMS",
]

#: a genre needs at least this many items (and as many non-items) to fit a CAV
DEFAULT_MIN_ITEMS = 10
#: genre labels that are not concepts (ML-100k's "unknown", ml-latest-small's placeholder)
_NOT_CONCEPTS = {"unknown", "(no genres listed)"}


class ConceptError(WhyrecError, ValueError):
    """Bad input for concept analysis (unknown genre, too few items, no metadata)."""


# --------------------------------------------------------------------------------------------- #
# genres
# --------------------------------------------------------------------------------------------- #
def genre_matrix(item_genres: Sequence[Sequence[str]] | None, *, source: str = "this run"
                 ) -> tuple[np.ndarray, list[str]]:
    """Multi-hot ``(n_items, n_genres)`` bool matrix and the genre names (sorted).

    Raises :class:`ConceptError` when there is no genre metadata at all.
    """
    if item_genres is None or not any(item_genres):
        raise ConceptError(f"{source} has no item genres (items.json holds none); concept analysis needs a "
                           "dataset with genres: ml-100k, ml-1m or ml-latest-small")
    names = sorted({g for gs in item_genres for g in (gs or [])})
    col = {g: j for j, g in enumerate(names)}
    m = np.zeros((len(item_genres), len(names)), dtype=bool)
    for i, gs in enumerate(item_genres):
        for g in gs or []:
            m[i, col[g]] = True
    return m, names


def select_genres(multi_hot: np.ndarray, names: list[str], requested: Optional[Sequence[str]] = None,
                  min_items: int = DEFAULT_MIN_ITEMS) -> tuple[list[int], list[dict]]:
    """Columns to analyse and the genres skipped (with the reason).

    ``requested=None``: every genre with at least ``min_items`` items (others are
    skipped with a reason). Otherwise the requested names, matched
    case-insensitively; an unknown name or a requested genre with too few items
    raises :class:`ConceptError` (listing the valid genres).
    """
    counts = multi_hot.sum(0)
    n_items = multi_hot.shape[0]

    def too_few(j: int) -> Optional[str]:
        c = int(counts[j])
        if c < min_items:
            return f"genre {names[j]!r} has {c} item(s); a CAV needs at least {min_items}"
        if n_items - c < min_items:
            return f"genre {names[j]!r} covers {c} of {n_items} items; a CAV needs at least {min_items} other items"
        return None

    valid = [g for j, g in enumerate(names) if too_few(j) is None and g not in _NOT_CONCEPTS]
    if requested is None:
        cols, skipped = [], []
        for j, g in enumerate(names):
            why = "not a genre" if g in _NOT_CONCEPTS else too_few(j)
            if why:
                skipped.append({"genre": g, "n_items": int(counts[j]), "reason": why})
            else:
                cols.append(j)
        if not cols:
            raise ConceptError(f"no genre has at least {min_items} items")
        return cols, skipped
    lookup = {g.lower(): j for j, g in enumerate(names)}
    cols = []
    for raw in requested:
        g = raw.strip()
        if not g:
            continue
        j = lookup.get(g.lower())
        if j is None:
            raise ConceptError(f"unknown genre {g!r}; valid genres: {', '.join(valid)}")
        why = too_few(j)
        if why:
            raise ConceptError(f"{why} (valid genres: {', '.join(valid)})")
        if j not in cols:
            cols.append(j)
    if not cols:
        raise ConceptError(f"no genre given; valid genres: {', '.join(valid)}")
    return cols, []


# --------------------------------------------------------------------------------------------- #
# CAVs
# --------------------------------------------------------------------------------------------- #
def _classifier(random_state: int, C: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, class_weight="balanced", solver="liblinear", max_iter=max_iter,
                              random_state=random_state)


def _held_out_scores(X: np.ndarray, y: np.ndarray, test_size: float, random_state: int, C: float,
                     max_iter: int) -> tuple[float, float, float, np.ndarray]:
    """Held-out (accuracy, balanced accuracy, ROC AUC) of a balanced LR fitted on a stratified
    ``1 - test_size`` share of the items, and that LR's coefficient vector ``(d,)``."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, stratify=y, random_state=random_state)
    clf = _classifier(random_state, C, max_iter).fit(Xtr, ytr)
    pred = clf.predict(Xte)
    auc = roc_auc_score(yte, clf.decision_function(Xte))
    return float((pred == yte).mean()), float(balanced_accuracy_score(yte, pred)), float(auc), clf.coef_[0]


class ConceptActivationVectors:
    """One CAV per concept (genre) over item embeddings.

    Parameters:
        C: inverse L2 strength of each logistic regression.
        test_size: share of items held out to measure accuracy.
        min_items: a concept needs at least this many members and non-members.
        random_state: seed of the held-out split.

    Attributes (after :meth:`fit`, ``G`` concepts, ``d`` embedding size):
        names_: the ``G`` concept names.
        coef_: ``(G, d)`` raw logistic-regression coefficients (embedding units).
        intercept_: ``(G,)``.
        cavs_: ``(G, d)`` unit-length CAVs ``v_C`` (``coef_`` normalized).
        accuracy_, balanced_accuracy_, auc_: ``(G,)`` held-out scores (ROC AUC of the
            decision function).
        n_items_: ``(G,)`` members per concept.
        scale_: the global scalar the embeddings were divided by.
    """

    def __init__(self, C: float = 1.0, test_size: float = 0.3, min_items: int = DEFAULT_MIN_ITEMS,
                 random_state: int = 0, max_iter: int = 1000):
        self.C = C
        self.test_size = test_size
        self.min_items = min_items
        self.random_state = random_state
        self.max_iter = max_iter

    def _scaled(self, item_embeddings) -> np.ndarray:
        X = np.asarray(item_embeddings, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"item embeddings must be (n_items, d), got shape {X.shape}")
        return X / self.scale_

    def fit(self, item_embeddings, concepts, names: Optional[Sequence[str]] = None):
        """Fit one CAV per column.

        Args:
            item_embeddings: ``(n_items, d)`` array (numpy or torch).
            concepts: ``(n_items, G)`` bool multi-hot membership (or ``(n_items,)``
                for a single concept).
            names: ``G`` names (default ``concept0..``).
        Returns:
            self.
        """
        X = np.asarray(_numpy(item_embeddings), dtype=np.float64)
        M = np.asarray(concepts, dtype=bool)
        if M.ndim == 1:
            M = M[:, None]
        if M.shape[0] != X.shape[0]:
            raise ValueError(f"{M.shape[0]} concept rows for {X.shape[0]} items")
        names = list(names) if names is not None else [f"concept{j}" for j in range(M.shape[1])]
        std = float(X.std())
        self.scale_ = std if std > 0 else 1.0
        Xs = X / self.scale_
        G, d = M.shape[1], X.shape[1]
        self.names_ = names
        self.coef_ = np.zeros((G, d))
        self.intercept_ = np.zeros(G)
        self.accuracy_ = np.zeros(G)
        self.balanced_accuracy_ = np.zeros(G)
        self.auc_ = np.zeros(G)
        self.n_items_ = M.sum(0).astype(int)
        for j in range(G):
            y = M[:, j]
            n_pos = int(y.sum())
            if n_pos < self.min_items or len(y) - n_pos < self.min_items:
                raise ConceptError(f"concept {names[j]!r} has {n_pos} of {len(y)} items; a CAV needs at least "
                                   f"{self.min_items} members and non-members")
            self.accuracy_[j], self.balanced_accuracy_[j], self.auc_[j], _ = _held_out_scores(
                Xs, y, self.test_size, self.random_state, self.C, self.max_iter)
            clf = _classifier(self.random_state, self.C, self.max_iter).fit(Xs, y)
            # the classifier sees X / scale: w·(x/s) = (w/s)·x, so coef in embedding units is w/s
            self.coef_[j] = clf.coef_[0] / self.scale_
            self.intercept_[j] = clf.intercept_[0]
        norms = np.linalg.norm(self.coef_, axis=1, keepdims=True)
        self.cavs_ = self.coef_ / np.where(norms > 0, norms, 1.0)
        return self

    def sensitivities(self, user_embeddings) -> np.ndarray:
        """``(n_users, G)`` = ``E_users @ V^T`` (see :func:`sensitivities`)."""
        return sensitivities(user_embeddings, self.cavs_)

    def index(self, name: str) -> int:
        for j, g in enumerate(self.names_):
            if g.lower() == name.lower():
                return j
        raise ConceptError(f"unknown genre {name!r}; fitted genres: {', '.join(self.names_)}")


def _numpy(x) -> np.ndarray:
    """A tensor (on any device) or array-like as a numpy array."""
    import torch

    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def sensitivities(user_embeddings, cavs) -> np.ndarray:
    """Conceptual sensitivity of every user to every concept in one product.

    ``S[u, C] = e_u · v_C`` -- the directional derivative of ``h_u(e_m) = e_u · e_m``
    along ``v_C``. ``user_embeddings`` ``(n_users, d)``, ``cavs`` ``(G, d)`` ->
    ``(n_users, G)`` float64.
    """
    E = np.asarray(_numpy(user_embeddings), dtype=np.float64)
    V = np.asarray(_numpy(cavs), dtype=np.float64)
    return E @ V.T


def rank_genres(S: np.ndarray, names: Sequence[str]) -> list[list[str]]:
    """Per user, the genre names sorted by decreasing sensitivity. ``S`` ``(n_users, G)``."""
    order = np.argsort(-np.asarray(S), axis=1, kind="stable")
    names = np.asarray(names, dtype=object)
    return [list(names[row]) for row in order]


def cosine_matrix(cavs) -> np.ndarray:
    """``(G, G)`` cosine similarity between CAVs ``(G, d)``."""
    V = np.asarray(_numpy(cavs), dtype=np.float64)
    n = np.linalg.norm(V, axis=1, keepdims=True)
    U = V / np.where(n > 0, n, 1.0)
    return np.clip(U @ U.T, -1.0, 1.0)


def pca_2d(cavs) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates ``(G, 2)`` of unit CAVs and the share of their energy each axis keeps ``(2,)``.

    PCA **without centering** (the top two right-singular vectors of the unit-CAV
    matrix), so that the origin stays meaningful and the arrows drawn from it
    show the CAVs' angles as well as a plane can. Axis signs are fixed so that
    the largest absolute loading of each axis is positive.
    """
    V = np.asarray(_numpy(cavs), dtype=np.float64)
    V = V / np.where(np.linalg.norm(V, axis=1, keepdims=True) > 0, np.linalg.norm(V, axis=1, keepdims=True), 1)
    _, s, vt = np.linalg.svd(V, full_matrices=False)
    comps = vt[:2]
    coords = V @ comps.T
    for k in range(coords.shape[1]):
        if coords[np.argmax(np.abs(coords[:, k])), k] < 0:
            coords[:, k] *= -1
    energy = (s ** 2) / max(float((s ** 2).sum()), 1e-300)
    if coords.shape[1] < 2:  # a single concept
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        energy = np.pad(energy, (0, 2 - len(energy)))
    return coords, energy[:2]


# --------------------------------------------------------------------------------------------- #
# significance
# --------------------------------------------------------------------------------------------- #
class ConceptSignificanceTest:
    """Is each CAV distinguishable from CAVs of random item sets of the same size?

    Parameters:
        n_random: ``R``, random concepts per genre.
        alpha: significance level of ``significant_``.
        random_state: seed of the random item sets.

    Attributes (after :meth:`fit`, ``G`` concepts):
        null_auc_, null_balanced_accuracy_: ``(G, R)`` held-out ROC AUC / balanced accuracy
            of the random CAVs (the test uses the AUC).
        p_value_: ``(G,)`` one-sided permutation p-value (see the module docstring).
        significant_: ``(G,)`` bool, ``p_value_ <= alpha``.
        tcav_score_: ``(G,)`` share of users with positive sensitivity (``None`` without user embeddings; so are the next two).
        null_tcav_score_: ``(G, R)``; tcav_p_value_: ``(G,)`` two-sided empirical p
            (the random CAVs' directions are those of their 70 % hold-out classifiers).
    """

    def __init__(self, n_random: int = 20, alpha: float = 0.05, random_state: int = 0):
        if n_random < 1:
            raise ValueError("n_random must be >= 1")
        self.n_random = n_random
        self.alpha = alpha
        self.random_state = random_state

    def fit(self, item_embeddings, cavs: ConceptActivationVectors, user_embeddings=None):
        """Test every concept of the fitted ``cavs`` on the same ``(n_items, d)`` embeddings.

        ``user_embeddings`` ``(n_users, d)`` (optional) adds the TCAV-score statistic.
        """
        Xs = cavs._scaled(_numpy(item_embeddings))
        n_items = Xs.shape[0]
        rng = np.random.default_rng(self.random_state)
        G, R = len(cavs.names_), self.n_random
        self.null_balanced_accuracy_ = np.zeros((G, R))
        self.null_auc_ = np.zeros((G, R))
        null_dirs = np.zeros((G, R, Xs.shape[1]))
        for j in range(G):
            size = int(cavs.n_items_[j])
            for r in range(R):
                y = np.zeros(n_items, dtype=bool)
                y[rng.choice(n_items, size=size, replace=False)] = True
                _, self.null_balanced_accuracy_[j, r], self.null_auc_[j, r], w = _held_out_scores(
                    Xs, y, cavs.test_size, cavs.random_state, cavs.C, cavs.max_iter)
                null_dirs[j, r] = w / max(np.linalg.norm(w), 1e-300)
        obs = cavs.auc_[:, None]
        self.p_value_ = (1.0 + (self.null_auc_ >= obs).sum(1)) / (R + 1.0)
        self.significant_ = self.p_value_ <= self.alpha + 1e-12
        self.tcav_score_ = self.null_tcav_score_ = self.tcav_p_value_ = None  # without user embeddings
        if user_embeddings is not None:
            E = np.asarray(_numpy(user_embeddings), dtype=np.float64)
            self.tcav_score_ = (sensitivities(E, cavs.cavs_) > 0).mean(0)
            self.null_tcav_score_ = np.stack([(E @ null_dirs[j].T > 0).mean(0) for j in range(G)])
            dev = np.abs(self.tcav_score_ - 0.5)[:, None]
            self.tcav_p_value_ = (1.0 + (np.abs(self.null_tcav_score_ - 0.5) >= dev).sum(1)) / (R + 1.0)
        return self


# --------------------------------------------------------------------------------------------- #
# behaviour
# --------------------------------------------------------------------------------------------- #
@dataclass
class GenreHistory:
    """Each user's genre history, all ``(n_users, G)``.

    ``n_rated``: rated movies in the genre (every rating); ``mean_rating``: their
    mean rating (NaN where ``n_rated == 0``); ``n_train``: training positives in
    the genre; ``share``: ``n_train`` / the user's training positives (NaN for
    users without any)."""

    n_rated: np.ndarray
    mean_rating: np.ndarray
    n_train: np.ndarray
    share: np.ndarray

    @classmethod
    def from_matrices(cls, ratings: sp.spmatrix, train: sp.spmatrix, multi_hot: np.ndarray) -> "GenreHistory":
        """``ratings``: ``(n_users, n_items)`` CSR of raw ratings (every interaction);
        ``train``: binary training positives; ``multi_hot``: ``(n_items, G)``."""
        M = sp.csr_matrix(np.asarray(multi_hot, dtype=np.float64))
        R = sp.csr_matrix(ratings, dtype=np.float64)
        B = R.copy()
        B.data[:] = 1.0
        n_rated = np.asarray((B @ M).todense())
        sums = np.asarray((R @ M).todense())
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n_rated > 0, sums / np.maximum(n_rated, 1), np.nan)
        T = sp.csr_matrix(train, dtype=np.float64)
        n_train = np.asarray((T @ M).todense())
        tot = np.asarray(T.sum(1)).ravel()[:, None]
        share = np.where(tot > 0, n_train / np.maximum(tot, 1), np.nan)
        return cls(n_rated, mean, n_train, share)


def _corr(x: np.ndarray, y: np.ndarray) -> dict:
    from scipy import stats

    n = int(len(x))
    out = {"n": n, "pearson_r": None, "pearson_p": None, "spearman_r": None, "spearman_p": None}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    pr = stats.pearsonr(x, y)
    sr = stats.spearmanr(x, y)
    out.update(pearson_r=float(pr[0]), pearson_p=float(pr[1]), spearman_r=float(sr[0]),
               spearman_p=float(sr[1]))
    return out


def agreement(S: np.ndarray, history: GenreHistory, names: Sequence[str], min_ratings: int = 5) -> list[dict]:
    """Per genre, correlation of sensitivity with behaviour across users.

    Args:
        S: ``(n_users, G)`` sensitivities (columns in ``names`` order).
        history: :class:`GenreHistory` with the same ``G`` columns.
        min_ratings: users need at least this many rated movies in the genre to
            enter the mean-rating correlation.
    Returns:
        one dict per genre: ``{"genre", "mean_rating": {n, pearson_r, pearson_p,
        spearman_r, spearman_p}, "share": {...}}`` (``None`` where undefined).
    """
    out = []
    for j, g in enumerate(names):
        keep = history.n_rated[:, j] >= max(1, min_ratings)
        rating = _corr(S[keep, j], history.mean_rating[keep, j])
        has = ~np.isnan(history.share[:, j])
        share = _corr(S[has, j], history.share[has, j])
        out.append({"genre": g, "mean_rating": rating, "share": share})
    return out


# --------------------------------------------------------------------------------------------- #
# whole-run analysis
# --------------------------------------------------------------------------------------------- #
def run_embeddings(run) -> tuple[np.ndarray, np.ndarray]:
    """Final user ``(n_users, d)`` and item ``(n_items, d)`` embeddings of a run, float64."""
    import torch

    with torch.no_grad():  # graph filters: the factors of their rank-k term (LinearFilter.concept_embeddings)
        u, i = run.model.concept_embeddings()
    return np.asarray(_numpy(u), np.float64), np.asarray(_numpy(i), np.float64)


@dataclass
class ConceptReport:
    """Everything ``whyrec concepts`` writes. ``S`` ``(n_users, G)``; ``cosine`` ``(G, G)``;
    ``pca`` ``(G, 2)``; ``history`` the users' :class:`GenreHistory` for the ``G`` genres."""

    names: list[str]
    cavs: ConceptActivationVectors
    test: Optional[ConceptSignificanceTest]
    S: np.ndarray
    cosine: np.ndarray
    pca: np.ndarray
    pca_energy: np.ndarray
    history: GenreHistory
    agreement: list[dict]
    user_ids: np.ndarray
    skipped: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The JSON summary: settings, per-genre CAV accuracy / p-value / correlations, cosines."""
        genres = {}
        for j, g in enumerate(self.names):
            entry = {
                "n_items": int(self.cavs.n_items_[j]),
                "cav_accuracy": float(self.cavs.accuracy_[j]),
                "cav_balanced_accuracy": float(self.cavs.balanced_accuracy_[j]),
                "p_value": None if self.test is None else float(self.test.p_value_[j]),
                "significant": None if self.test is None else bool(self.test.significant_[j]),
                "cav_auc": float(self.cavs.auc_[j]),
                "null_auc_mean": None if self.test is None else float(self.test.null_auc_[j].mean()),
                "null_auc_std": None if self.test is None else float(self.test.null_auc_[j].std()),
                "tcav_score": float((self.S[:, j] > 0).mean()),
                "tcav_p_value": None if self.test is None or self.test.tcav_p_value_ is None
                else float(self.test.tcav_p_value_[j]),
                "sensitivity_mean": float(self.S[:, j].mean()),
                "sensitivity_std": float(self.S[:, j].std()),
                "correlation_mean_rating": self.agreement[j]["mean_rating"],
                "correlation_share": self.agreement[j]["share"],
            }
            genres[g] = entry
        return {
            "method": "concepts",
            "settings": self.settings,
            "n_users": int(self.S.shape[0]),
            "genres": genres,
            "skipped": self.skipped,
            "cosine": {a: {b: round(float(self.cosine[i, k]), 6) for k, b in enumerate(self.names)}
                       for i, a in enumerate(self.names)},
            "pca_explained": [float(x) for x in self.pca_energy],
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


def run_genres(run) -> tuple[np.ndarray, list[str]]:
    return genre_matrix(run.item_genres, source=f"run folder {run.path}")


def analyze_run(run, genres: Optional[Sequence[str]] = None, min_ratings: int = 5, random_runs: int = 20,
                seed: int = 0, min_items: int = DEFAULT_MIN_ITEMS, alpha: float = 0.05) -> ConceptReport:
    """Fit CAVs on a run's final item embeddings and compute everything of the issue's items 1-4.

    ``random_runs=0`` skips the significance test.
    """
    import time

    M, names = run_genres(run)
    cols, skipped = select_genres(M, names, genres, min_items)
    M, names = M[:, cols], [names[j] for j in cols]
    E_u, E_i = run_embeddings(run)
    t = {}
    t0 = time.perf_counter()
    cavs = ConceptActivationVectors(min_items=min_items, random_state=seed).fit(E_i, M, names)
    t["cavs"] = time.perf_counter() - t0
    test = None
    if random_runs > 0:
        t0 = time.perf_counter()
        test = ConceptSignificanceTest(random_runs, alpha, seed).fit(E_i, cavs, E_u)
        t["significance"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    S = cavs.sensitivities(E_u)
    t["sensitivity"] = time.perf_counter() - t0
    hist = GenreHistory.from_matrices(run.ratings, run.matrices["train"], M)
    agree = agreement(S, hist, names, min_ratings)
    coords, energy = pca_2d(cavs.cavs_)
    settings = {"run": str(run.path), "model": run.config.get("model"), "dataset": run.config.get("dataset"),
                "min_ratings": min_ratings, "random_runs": random_runs, "seed": seed, "min_items": min_items,
                "alpha": alpha, "cav": "unit-normalized coefficients of LogisticRegression(class_weight="
                "'balanced', C=1, liblinear) fitted on all items; accuracy on a stratified 30% hold-out",
                "test": "one-sided permutation test of the held-out ROC AUC vs CAVs of R random item sets of "
                        "the same size: p = (1 + #{null >= obs}) / (R + 1); significant: p <= alpha"}
    return ConceptReport(names, cavs, test, S, cosine_matrix(cavs.cavs_), coords, energy, hist, agree,
                         np.asarray(run.user_ids), skipped, settings, t)


# --------------------------------------------------------------------------------------------- #
# explainer contract: whyrec explain --method concepts
# --------------------------------------------------------------------------------------------- #
@dataclass
class FittedConcepts:
    """CAVs of one run for one genre selection, with every user's sensitivities: ``M`` ``(n_items, G)``,
    ``S`` ``(n_users, G)``, ``mean``/``std`` ``(G,)`` over users (``std`` 0 replaced by 1), ``E_u``/``E_i``
    the final embeddings they were computed from."""

    key: tuple
    M: np.ndarray
    names: list[str]
    cavs: ConceptActivationVectors
    S: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    E_u: np.ndarray
    E_i: np.ndarray


def prepare(run) -> None:
    """Fit the run's CAVs for all genres now (``whyrec serve`` start-up)."""
    fitted_concepts(run)


def fitted_concepts(run, requested: Optional[Sequence[str]] = None, seed: int = 0,
                    min_items: int = DEFAULT_MIN_ITEMS) -> FittedConcepts:
    """The run's CAVs and sensitivities, fitted once per (genres, seed, min_items) and kept on the run.

    A trained model is frozen, so per-user explanations (``whyrec serve`` answers many) reuse one fit
    instead of re-running G logistic regressions per request; the cache is dropped when the model's
    weights change (``model.weights_version()``) or another model is put on the run.
    """
    from . import run_cache

    fits = run_cache(run, "concepts")
    key = (tuple(requested) if requested else None, int(seed), int(min_items))
    fitted = fits.get(key)
    if fitted is None:
        M, names = run_genres(run)
        cols, _ = select_genres(M, names, requested, min_items)
        M, names = M[:, cols], [names[j] for j in cols]
        E_u, E_i = run_embeddings(run)
        cavs = ConceptActivationVectors(random_state=int(seed), min_items=min_items).fit(E_i, M, names)
        S = cavs.sensitivities(E_u)
        std = S.std(0)
        fitted = FittedConcepts(key, M, names, cavs, S, S.mean(0), np.where(std > 0, std, 1.0), E_u, E_i)
        fits[key] = fitted
    return fitted


def explain_run(run, user: int, item: Optional[int] = None, **options) -> dict:
    """One user's genre sensitivities next to their actual genre history.

    ``user``/``item`` are indices (``item`` may be ``None``; when given, its genres
    are flagged). Options: ``genre`` (comma-separated genres to restrict to),
    ``top`` (how many genres the text lists), ``seed``; other options of the
    ``explain`` command are ignored. No significance test here (``whyrec concepts``
    runs it); ``z`` is the sensitivity standardized over all users.
    """
    genre_opt = options.get("genre")
    requested = [g for g in str(genre_opt).split(",") if g.strip()] if genre_opt else None
    fitted = fitted_concepts(run, requested, seed=int(options.get("seed", 0) or 0),
                             min_items=options.get("min_items", DEFAULT_MIN_ITEMS))
    M, names, cavs, S, E_u, E_i = fitted.M, fitted.names, fitted.cavs, fitted.S, fitted.E_u, fitted.E_i
    z = (S[user] - fitted.mean) / fitted.std
    ratings = run.ratings[user]
    hist = GenreHistory.from_matrices(ratings, run.matrices["train"][user], M)
    item_genres = set(run.item_genres[item]) if item is not None and run.item_genres else set()
    rows = []
    for rank, j in enumerate(np.argsort(-S[user], kind="stable"), 1):
        mr = hist.mean_rating[0, j]
        sh = hist.share[0, j]
        rows.append({
            "rank": rank, "genre": names[j], "sensitivity": float(S[user, j]), "z": float(z[j]),
            "cav_accuracy": float(cavs.accuracy_[j]), "n_rated": int(hist.n_rated[0, j]),
            "mean_rating": None if math.isnan(mr) else float(mr), "n_train": int(hist.n_train[0, j]),
            "share": None if math.isnan(sh) else float(sh), "item_genre": names[j] in item_genres,
        })
    out = {
        "method": "concepts", "user": int(run.user_ids[user]),
        "item": None if item is None else int(run.item_ids[item]),
        "item_title": None if item is None or not run.item_titles else run.item_titles[item],
        "item_genres": sorted(item_genres) if item is not None else None,
        "n_rated": int(ratings.nnz), "mean_rating": float(ratings.data.mean()) if ratings.nnz else None,
        "n_train": int(run.matrices["train"][user].nnz), "top": int(options.get("top") or len(rows)),
        "genres": rows,
    }
    dot = can(run.model, DOT)  # otherwise (a graph filter) the vectors span only the model's rank-k term
    if not dot:
        out["concept_space"] = ("the model's rank-k term (ideal low-pass): item coordinates in the k smoothest "
                                "spectral directions of the item graph")
    if item is not None:
        out["score"] = float(E_u[user] @ E_i[item]) if dot else float(run.model.score_users([user])[0, item])
    return out


def describe(result: dict) -> dict:
    """The common shape: the genres (concepts) by the user's sensitivity ``e_u · v_C`` (not additive)."""
    from .explanation import CONCEPT, Contribution

    head = f"{result['n_rated']} rated movies, {result['n_train']} training positives"
    if result.get("item") is not None:
        head += f"; this item's genres: {', '.join(result.get('item_genres') or []) or '-'}"
    return {"contributions": [Contribution(CONCEPT, r["genre"], float(r["sensitivity"]))
                              for r in result["genres"][: result.get("top") or None]],
            "statement": head}


def details(result: dict) -> list[str]:
    """The user's real genre history next to each genre's sensitivity."""
    lines = [f"{'genre':<14}{'z':>7}{'cav acc':>9}   {'rated':>6}{'mean':>6}{'train':>7}{'share':>7}"]
    for r in result["genres"][: result.get("top") or None]:
        mean = f"{r['mean_rating']:.2f}" if r["mean_rating"] is not None else "-"
        share = f"{r['share']:.1%}" if r["share"] is not None else "-"
        star = "*" if r.get("item_genre") else " "
        lines.append(f"{r['genre']:<13}{star}{r['z']:>7.2f}{r['cav_accuracy']:>9.2f}   {r['n_rated']:>6}{mean:>6}"
                     f"{r['n_train']:>7}{share:>7}")
    lines.append("value = sensitivity e_u · v_C (unit CAV); z = standardized over all users; share = the genre's "
                 "share of the user's training positives; * = the item's genres")
    return lines


def plot(result: dict, path) -> None:
    """Figure: the user's sensitivities next to their genre history (see :mod:`.concept_plots`)."""
    from .concept_plots import plot_user

    plot_user(result, path)
