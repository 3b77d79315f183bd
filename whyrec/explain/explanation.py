"""One type for every explanation: :class:`Explanation`, and the renderers that draw any of them.

Every explainer (:mod:`whyrec.explain`) returns its method's JSON-ready result (the keys ``whyrec
explain --json`` always printed) and a ``describe(result) -> dict`` that reads it into the common
shape (:meth:`Explanation.from_result`):

* ``contributions``: ordered as the method ranks them, each a :class:`Contribution` ``(kind, label,
  value, item)`` whose kind is one of :data:`KINDS` (a history item, a knowledge-graph entity, a user
  or item feature, a concept);
* ``score`` ``ŷ(u, t)``; for additive methods the ``baseline`` ``b`` with
  ``Σ_c value_c = ŷ(u, t) − b`` (to the method's stated ``delta``);
* ``statement``: the sentence ("Because you liked X and Y.", "Without X, T would not be …");
* ``stats``: the method's few headline numbers (``{"set size": 3, …}``), printed as they are;
* ``compare``: a few quantities drawn side by side as bars (``{"rank now": 1, "rank without them": 14}``);
* ``already_interacted``: the user has interacted with ``t`` (the explanation is of a score, not of a
  recommendation);
* ``faithfulness``: for explainers that rank history items, the benchmark's verdict on this method for this
  model (:func:`whyrec.explain.verdict`: faithful, **not faithful** or not measured), else ``None``;
* ``extras``: the method's whole result.

:meth:`Explanation.to_dict` is the method's result plus ``"already_interacted"`` and one
``"explanation"`` object holding the common shape; :func:`render_text`, :func:`plot` and the web page
(``serve/static/app.js``) draw only from that object, so a new method needs no renderer of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Contribution", "Explanation", "history_share", "KINDS", "HISTORY", "ENTITY", "USER_FEATURE", "ITEM_FEATURE", "CONCEPT",
           "render_text", "plot"]

#: contribution kinds
HISTORY, ENTITY, USER_FEATURE, ITEM_FEATURE, CONCEPT = (
    "history item", "knowledge-graph entity", "user feature", "item feature", "concept")
KINDS = (HISTORY, ENTITY, USER_FEATURE, ITEM_FEATURE, CONCEPT)
_COLORS = dict(zip(KINDS, ("tab:green", "tab:purple", "tab:blue", "tab:orange", "tab:olive")))


@dataclass(frozen=True)
class Contribution:
    kind: str
    label: str
    value: float
    item: Optional[int] = None  # raw item id, for history items

    def __iter__(self):  # (label, value) pairs: `for label, value in why.contributions`
        return iter((self.label, self.value))

    @property
    def id(self) -> Optional[int]:  # the name this field had before
        return self.item

    def to_dict(self) -> dict:
        return {"kind": self.kind, "label": self.label, "value": self.value, "item": self.item}


@dataclass
class Explanation:
    """``method``; ``user`` / ``item`` raw ids (``item`` ``None`` for a per-user method); ``score``;
    ``contributions``; ``baseline`` (additive methods: ``sum(values) == score - baseline`` up to the
    method's ``delta``) or ``None``; ``additive``; ``statement``; ``stats``; ``already_interacted``;
    ``extras``: the method's full result."""

    method: str
    user: Optional[int]
    item: Optional[int]
    score: Optional[float]
    contributions: list[Contribution] = field(default_factory=list)
    baseline: Optional[float] = None
    additive: bool = False
    statement: Optional[str] = None
    stats: dict = field(default_factory=dict)
    compare: dict = field(default_factory=dict)
    already_interacted: bool = False
    extras: dict = field(default_factory=dict)
    faithfulness: Optional[dict] = None

    @property
    def total(self) -> float:
        return float(sum(c.value for c in self.contributions))

    @classmethod
    def from_result(cls, result: dict, describe=None, already_interacted: Optional[bool] = None) -> "Explanation":
        """The common shape of a method's ``result``: read from its ``"explanation"`` object when it has
        one (a result :meth:`to_dict` wrote), else through the method's ``describe(result) -> {"contributions",
        "score", "baseline", "additive", "statement", "stats"}`` (every key optional)."""
        if "explanation" in result:
            d = dict(result["explanation"])
            d["contributions"] = [Contribution(c["kind"], c["label"], c["value"], c.get("item"))
                                  for c in d.get("contributions", [])]
        else:
            d = describe(result) if describe is not None else {}
        score = d.get("score", result.get("score"))
        baseline = d.get("baseline")
        interacted = result.get("already_interacted", False) if already_interacted is None else already_interacted
        extras = {k: v for k, v in result.items() if k not in ("explanation", "already_interacted")}
        return cls(method=result.get("method"), user=result.get("user"), item=result.get("item"),
                   score=None if score is None else float(score), contributions=list(d.get("contributions", [])),
                   baseline=None if baseline is None else float(baseline), additive=bool(d.get("additive", False)),
                   statement=d.get("statement", result.get("because")), stats=dict(d.get("stats") or {}),
                   compare=dict(d.get("compare") or {}), faithfulness=d.get("faithfulness"),
                   already_interacted=bool(interacted), extras=extras)

    def to_dict(self) -> dict:
        """The method's result (every key it always had) plus ``already_interacted`` and ``explanation``."""
        return {**self.extras, "already_interacted": self.already_interacted, "explanation": {
            "method": self.method, "user": self.user, "item": self.item,
            "item_title": self.extras.get("item_title"), "score": self.score, "baseline": self.baseline,
            "additive": self.additive, "statement": self.statement, "stats": self.stats, "compare": self.compare,
            "already_interacted": self.already_interacted, "faithfulness": self.faithfulness,
            "contributions": [c.to_dict() for c in self.contributions]}}


# ---------------------------------------------------------------------------------------------- #
# generic renderers: they read only the "explanation" object of a result
# ---------------------------------------------------------------------------------------------- #
def history_share(score: float, baseline: float) -> Optional[float]:
    """``(score − baseline) / |score|``: how much of a score depends on the history at all, against the
    no-history baseline (1 for a model whose user is their history; the rest of a LightGCN score is the
    user's free layer-0 embedding). ``None`` for a zero score. Shown as ``stats["history share"]``."""
    return None if score == 0 else float((score - baseline) / abs(score))


def _subject(e: dict) -> str:
    if e.get("item") is None:
        return f"user {e['user']}"
    return f"why user {e['user']} gets {e.get('item_title') or e['item']} (id {e['item']})"


def interacted_line(e: dict) -> str:
    return (f"note: user {e['user']} has already interacted with {e.get('item_title') or e['item']}; this explains "
            "its score, not a recommendation")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def render_text(result: dict, top: Optional[int] = None, details=None) -> str:
    """Text of any explanation: its subject, the already-interacted note, the statement, the stats, the
    contributions (the first ``top``) as ``rank value kind label`` and, from ``details(result)`` (the
    method's own extra lines, optional), whatever else the method has to say."""
    e = result["explanation"]
    lines = [f"{_subject(e)} — {e['method']}"]
    if e.get("already_interacted"):
        lines.append(interacted_line(e))
    if e.get("statement"):
        lines.append(e["statement"])
    if e.get("faithfulness"):
        lines.append(f"faithfulness: {e['faithfulness']['verdict']} ({e['faithfulness']['note']})")
    stats = dict(e.get("stats") or {})
    if e.get("score") is not None:
        stats = {"score": e["score"], **({"baseline": e["baseline"]} if e.get("baseline") is not None else {}), **stats}
    for group in (stats, e.get("compare") or {}):
        if group:
            lines.append("   ".join(f"{k} {_fmt(v)}" for k, v in group.items()))
    rows = e.get("contributions") or []
    if rows:
        lines.append(f"{'rank':>4}  {'value':>10}  {'kind':<22}  label" + ("   (values sum to score − baseline)"
                                                                           if e.get("additive") else ""))
        for n, c in enumerate(rows[:top] if top else rows, 1):
            lines.append(f"{n:>4}  {c['value']:>+10.4f}  {c['kind']:<22}  {c['label']}"
                         + (f" (id {c['item']})" if c.get("item") is not None else ""))
    if details is not None:
        lines += details(result)
    return "\n".join(lines)


def plot(result: dict, path, top: int = 20) -> None:
    """Figure of any explanation: signed horizontal bars of the first ``top`` contributions, coloured by
    kind, titled with the statement and the stats."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    e = result["explanation"]
    rows = (e.get("contributions") or [])[:top][::-1]
    fig = Figure(figsize=(8, 0.38 * len(rows) + 2.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(rows)), [c["value"] for c in rows], color=[_COLORS.get(c["kind"], "tab:gray") for c in rows])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([str(c["label"])[:45] for c in rows], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    kinds = list(dict.fromkeys(c["kind"] for c in rows))
    if kinds:
        ax.legend(handles=[Patch(color=_COLORS.get(k, "tab:gray"), label=k) for k in kinds], fontsize=7, loc="best")
    ax.set_xlabel("contribution" + (" (sums to score − baseline)" if e.get("additive") else ""))
    title = [_subject(e)]
    if e.get("already_interacted"):
        title.append("(already interacted with)")
    if e.get("statement"):
        title.append(e["statement"][:110])
    ax.set_title("\n".join(title), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
