"""One type for every explanation: :class:`Explanation`, built from an explainer's JSON result.

Each explainer module returns a JSON-ready dict (what ``whyrec explain --json`` and the HTTP API
print); :func:`Explanation.from_result` reads it into the common shape — the score, the ordered
contributions (each with its kind, label and value) and, for additive methods, the baseline with
``Σ contributions = score − baseline`` (to the method's stated ``delta``). ``to_dict()`` gives the
original JSON back, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Contribution", "Explanation"]

#: contribution kinds
HISTORY, ENTITY, FEATURE, CONCEPT = "history item", "knowledge-graph entity", "feature", "concept"


@dataclass(frozen=True)
class Contribution:
    kind: str
    label: str
    value: float
    id: Optional[int] = None  # raw item id for history items

    def __iter__(self):  # (label, value) pairs: `for label, value in why.contributions`
        return iter((self.label, self.value))


@dataclass
class Explanation:
    """``method``; ``user`` / ``item`` raw ids; ``score``; ``contributions`` ordered as the method
    ranks them; ``baseline`` (additive methods: the score with nothing to attribute, and
    ``sum(values) == score - baseline`` up to ``delta``) or ``None``; ``additive``; ``extras``: the
    method's full result (``to_dict()``)."""

    method: str
    user: Optional[int]
    item: Optional[int]
    score: Optional[float]
    contributions: list[Contribution] = field(default_factory=list)
    baseline: Optional[float] = None
    additive: bool = False
    extras: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.extras)

    @property
    def total(self) -> float:
        return float(sum(c.value for c in self.contributions))

    @classmethod
    def from_result(cls, result: dict) -> "Explanation":
        m = result.get("method")
        score = result.get("score")
        contributions: list[Contribution] = []
        baseline, additive = None, False
        if m == "history":
            contributions = [Contribution(HISTORY, r["title"], float(r["attribution"]), r.get("item"))
                             for r in result.get("attributions", [])]
            baseline, additive = result.get("baseline_score"), True
        elif m == "features":
            attrs = result.get("attributions") or {}
            contributions = [Contribution(FEATURE, g, float(v)) for g, v in
                             sorted(attrs.items(), key=lambda kv: -abs(kv[1]))]
            baseline, additive = result.get("baseline_score"), True
        elif m == "concepts":
            contributions = [Contribution(CONCEPT, r["genre"], float(r["sensitivity"]))
                             for r in result.get("genres", [])]
        elif m == "counterfactual":  # the removal set, in the order the search removed it (value: 1 each)
            score = result.get("score_before", score)
            contributions = [Contribution(HISTORY, r["title"], 1.0, r.get("item")) for r in result.get("removed", [])]
        elif m in ("intrinsic", "paths"):
            contributions = [Contribution(HISTORY, r.get("title") or str(r.get("item")), float(r["score"]),
                                          r.get("item")) for r in result.get("history", [])]
            contributions += [Contribution(ENTITY, str(r.get("label") or r.get("name") or r.get("entity")),
                                           float(r["score"])) for r in result.get("entities", [])]
        return cls(method=m, user=result.get("user"), item=result.get("item"),
                   score=None if score is None else float(score), contributions=contributions,
                   baseline=None if baseline is None else float(baseline), additive=additive, extras=dict(result))
