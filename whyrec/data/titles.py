"""Forgiving title lookup: ``"toy story"``, ``"The Usual Suspects"`` and ``"Usual Suspects, The (1995)"``
all find their movie; a query that matches nothing suggests the closest titles."""

from __future__ import annotations

import difflib
import re
import unicodedata

from .dataset import InteractionData

try:
    from rapidfuzz import fuzz, process
except ImportError:  # pragma: no cover - rapidfuzz is a dependency; this keeps an old environment working
    fuzz = process = None

_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|il|das|der|die|el)$", re.IGNORECASE)
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
#: words that say nothing about which movie is meant (articles, in the languages of MovieLens titles,
#: and glue words); a year is not distinctive either
STOP_WORDS = frozenset("""
the a an of and or in on at to for with from by is it its as vs
les la le l il lo los las das der die den el de du des et une un
""".split())


def distinctive(normalized: str) -> str:
    """The words of a normalized title that identify it: no articles, glue words or year."""
    return " ".join(w for w in _strip_year(normalized).split() if w not in STOP_WORDS)


def normalize_title(title: str) -> str:
    """Lower-case, accents and punctuation removed, ``"X, The"`` turned into ``"the X"``, year kept apart."""
    t = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    year = _YEAR.search(t)
    core = _YEAR.sub("", t).strip()
    m = _ARTICLE.match(core)
    if m:
        core = f"{m.group(2)} {m.group(1)}"
    core = re.sub(r"[^a-z0-9]+", " ", core.lower()).strip()
    return f"{core} {year.group(1)}" if year else core


class TitleIndex:
    """Look items up by raw id or title."""

    def __init__(self, item_ids, titles: list[str] | None):
        self.item_ids = [int(i) for i in item_ids]
        self.titles = titles
        self._raw = {r: i for i, r in enumerate(self.item_ids)}
        self._norm: dict[str, list[int]] = {}
        self._core: dict[str, list[int]] = {}
        for i, t in enumerate(titles or []):
            n = normalize_title(t)
            self._norm.setdefault(n, []).append(i)
            self._core.setdefault(_strip_year(n), []).append(i)
        self._keys = list(self._norm)
        self._distinct = [distinctive(k) for k in self._keys]

    @classmethod
    def from_dataset(cls, data: InteractionData) -> "TitleIndex":
        return cls(data.item_ids, data.item_titles)

    def resolve(self, query: str | int) -> int:
        """Item index for a raw id (digits) or a title; :class:`KeyError` with suggestions otherwise."""
        q = str(query).strip()
        if q.isdigit() and int(q) in self._raw:
            return self._raw[int(q)]
        if self.titles is None:
            raise KeyError(f"unknown item id {q!r} (this dataset has no titles to match)")
        n = normalize_title(q)
        for table, key in ((self._norm, n), (self._core, _strip_year(n))):
            hits = table.get(key, [])
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                options = "; ".join(self.titles[h] for h in hits[:5])
                raise KeyError(f"{q!r} matches several titles: {options} — add the year or use the id")
        contains = [i for k, idx in self._norm.items() if n and n in k for i in idx]
        if len(contains) == 1:
            return contains[0]
        suggestions = [self.titles[self._norm[c][0]] for c in self.closest(n)]
        if len(contains) > 1:
            suggestions = [self.titles[i] for i in contains[:3]]
        hint = f"; closest: {'; '.join(suggestions)}" if suggestions else ""
        raise KeyError(f"no item matches {q!r}{hint}")

    def closest(self, normalized: str, limit: int = 3, cutoff: float = 70.0) -> list[str]:
        """Normalized titles closest to ``normalized`` by their distinctive words (rapidfuzz's
        token-set ratio, then the plain ratio of the distinctive words to break ties), best first. Articles and
        the year do not count: "The Matrix (1999)" is not close to "War, The (1994)"."""
        query = distinctive(normalized)
        if not query:
            return []
        if process is None:  # pragma: no cover - without rapidfuzz
            close = difflib.get_close_matches(query, self._distinct, n=limit, cutoff=cutoff / 100)
            return [self._keys[self._distinct.index(c)] for c in close]
        hits = process.extract(query, self._distinct, scorer=fuzz.token_set_ratio, limit=max(limit * 4, 12),
                               score_cutoff=cutoff)
        hits.sort(key=lambda h: (-h[1], -fuzz.ratio(query, h[0]), h[2]))
        return [self._keys[h[2]] for h in hits[:limit]]

    def duplicates(self, queries: list) -> list[str]:
        """One note for each movie that several of ``queries`` resolve to (``--liked`` counts it once)."""
        groups: dict[int, list[str]] = {}
        for q in queries:
            try:
                groups.setdefault(self.resolve(q), []).append(str(q))
            except KeyError:
                continue
        return [f"{' and '.join(repr(q) for q in qs)} are the same movie, {self.label(i)}: counted once"
                for i, qs in groups.items() if len(qs) > 1]

    def label(self, index: int) -> str:
        return self.titles[index] if self.titles else str(self.item_ids[index])


def _strip_year(normalized: str) -> str:
    parts = normalized.rsplit(" ", 1)
    return parts[0] if len(parts) == 2 and len(parts[1]) == 4 and parts[1].isdigit() else normalized
