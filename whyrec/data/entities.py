"""The entity side of the user–item–entity graph of seed 002 (§2.1, §3), as plain arrays.

Seed 002 builds one graph of users, items and knowledge entities: user–item links
(interactions, not handled here), item–entity links and entity–entity links, with
**link types ignored**. This module builds the last two from what a dataset holds;
it knows nothing about models.

Entities are re-indexed compactly ``0..n_entities-1`` (they do *not* share the item
index space, unlike ``InteractionData.kg_triples``):

* **lastfm-kg** (KGCN's ``kg.txt``): every triple ``(h, r, t)`` becomes an undirected
  link between the nodes ``h`` and ``t``; relation ``r`` is dropped. In KGCN's file
  every head is an artist (item), so links are item–entity. An *item* node that
  appears as the tail of another artist's triple (56 links, e.g. a "similar artist")
  is represented on the entity side by its own entity node ``"artist <raw id>"``: the
  paper's item–entity links only go from items (level 1) to entities (level 0), so a
  KG-neighbour artist acts as an attribute of the head artist. Links between two
  non-item entities (none in the shared file) are kept as entity–entity links.
  Entities are the 5,520 non-item KG nodes (the "#entities" of the seed's Table 1)
  plus the artists used as attributes.  Names: ``"kg:<entity id> (<relation>)"`` with
  the most frequent relation name that points at it, so a reader sees what it is.
* **MovieLens** (no KG): one entity per genre (``genre=Comedy``), per release decade
  (``year=1990s``) and, for ml-latest-small, per user tag (``tag=pixar``), from
  ``item_features`` / ``item_tags``. "unknown" genre/decade columns are not entities
  (they describe nothing). No entity–entity links.
* Anything else (Gowalla) has no entity side: :class:`~whyrec.data.errors.DataError`.

Duplicate links are removed; self-links cannot occur.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .dataset import InteractionData
from .errors import DataError

__all__ = ["EntityGraph", "build_entities", "entity_arrays", "entity_graph_from_arrays"]


@dataclass
class EntityGraph:
    """Item–entity and entity–entity links.

    ``item_entity``: ``(n_links, 2)`` int64 ``(item index, entity index)``, unique rows,
    sorted; ``entity_entity``: ``(m, 2)`` int64 ``(e, e')`` with ``e < e'`` (undirected),
    unique; ``n_entities``; ``names``: one display name per entity; ``source``: how
    they were built (``"kg"`` or ``"attributes"``)."""

    item_entity: np.ndarray
    entity_entity: np.ndarray
    n_entities: int
    names: list[str]
    source: str
    n_items: int

    def item_degrees(self) -> np.ndarray:
        return np.bincount(self.item_entity[:, 0], minlength=self.n_items)

    def entity_degrees(self) -> np.ndarray:
        return np.bincount(self.item_entity[:, 1], minlength=self.n_entities)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (no pickle) for ``extras.npz``."""
        return {
            "item_entity": self.item_entity.astype(np.int64),
            "entity_entity": self.entity_entity.astype(np.int64).reshape(-1, 2),
            "n_entities": np.asarray([self.n_entities], np.int64),
            "entity_names": np.asarray(self.names, dtype=np.str_),
            "entity_source": np.asarray([self.source], dtype=np.str_),
            "n_items_entities": np.asarray([self.n_items], np.int64),
        }


def _unique_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.int64).reshape(-1, 2)
    if len(a) == 0:
        return a
    return np.unique(a, axis=0)


def _from_kg(data: InteractionData) -> EntityGraph:
    t = np.asarray(data.kg_triples, np.int64)
    n_items = data.n_items
    h, r, tl = t[:, 0], t[:, 1], t[:, 2]
    # orient every link item -> other end where one end is an item
    item_end = np.where(h < n_items, h, tl)
    other = np.where(h < n_items, tl, h)
    has_item = (h < n_items) | (tl < n_items)
    ie_items, ie_nodes, ie_rel = item_end[has_item], other[has_item], r[has_item]
    ee = t[~has_item][:, [0, 2]]
    nodes = np.unique(np.r_[ie_nodes, ee.reshape(-1)])
    remap = {int(n): k for k, n in enumerate(nodes)}
    item_entity = _unique_rows(np.stack([ie_items, np.array([remap[int(x)] for x in ie_nodes], np.int64)], 1))
    if len(ee):
        e2 = np.array([[remap[int(a)], remap[int(b)]] for a, b in ee], np.int64)
        e2 = e2[e2[:, 0] != e2[:, 1]]
        e2 = _unique_rows(np.sort(e2, axis=1))
    else:
        e2 = np.zeros((0, 2), np.int64)
    rel_count: dict[int, Counter] = {}
    for n, rel in zip(ie_nodes, ie_rel):
        rel_count.setdefault(int(n), Counter())[int(rel)] += 1
    names = []
    for n in nodes:
        n = int(n)
        if n < n_items:
            names.append(f"artist {int(data.item_ids[n])}")
            continue
        rels = rel_count.get(n)
        if rels and data.relation_names:
            rel = data.relation_names[rels.most_common(1)[0][0]]
            names.append(f"kg:{n} ({rel})")
        else:
            names.append(f"kg:{n}")
    return EntityGraph(item_entity, e2, len(nodes), names, "kg", n_items)


def _from_attributes(data: InteractionData) -> EntityGraph:
    names: list[str] = []
    links: list[tuple[int, int]] = []
    f = data.item_features
    if f is not None:
        for col, name in enumerate(f.columns):
            if name.endswith("=unknown") or not (name.startswith("genre=") or name.startswith("year=")):
                continue
            rows = np.flatnonzero(f.values[:, col] > 0)
            if len(rows) == 0:
                continue
            e = len(names)
            names.append(name)
            links += [(int(i), e) for i in rows]
    if data.item_tags is not None:
        tag_index: dict[str, int] = {}
        for i, tags in enumerate(data.item_tags):
            for tag in tags:
                key = str(tag).strip().lower()
                if not key:
                    continue
                if key not in tag_index:
                    tag_index[key] = len(names)
                    names.append(f"tag={key}")
                links.append((i, tag_index[key]))
    if not names:
        raise DataError(f"dataset {data.name} has neither a knowledge graph nor item attributes "
                        "(genres, release years, tags) to build entities from; models with an entity "
                        "side need lastfm-kg or a MovieLens dataset")
    item_entity = _unique_rows(np.asarray(links, np.int64))
    return EntityGraph(item_entity, np.zeros((0, 2), np.int64), len(names), names, "attributes", data.n_items)


def build_entities(data: InteractionData) -> EntityGraph:
    """The entity side of ``data``'s graph (see the module docstring for the rules).

    Raises :class:`DataError` when the dataset has nothing to build entities from."""
    if data.kg_triples is not None and len(data.kg_triples):
        return _from_kg(data)
    return _from_attributes(data)


def entity_arrays(data: InteractionData) -> dict[str, np.ndarray]:
    """:func:`build_entities` as the plain arrays saved in a run's ``extras.npz``."""
    return build_entities(data).to_arrays()


def entity_graph_from_arrays(arrays: dict[str, np.ndarray]) -> EntityGraph:
    """Inverse of :meth:`EntityGraph.to_arrays`; :class:`DataError` if the arrays are missing."""
    need = ("item_entity", "n_entities", "entity_names")
    missing = [k for k in need if k not in arrays]
    if missing:
        raise DataError(f"the entity graph is missing ({', '.join(missing)}); this model needs the entity "
                        "arrays built by whyrec.data.entities")
    ie = np.asarray(arrays["item_entity"], np.int64).reshape(-1, 2)
    ee = np.asarray(arrays.get("entity_entity", np.zeros((0, 2), np.int64)), np.int64).reshape(-1, 2)
    n_ent = int(np.asarray(arrays["n_entities"]).reshape(-1)[0])
    names = [str(x) for x in np.asarray(arrays["entity_names"]).reshape(-1)]
    source = str(np.asarray(arrays.get("entity_source", np.asarray(["?"]))).reshape(-1)[0])
    n_items = int(np.asarray(arrays.get("n_items_entities", [ie[:, 0].max() + 1 if len(ie) else 0])).reshape(-1)[0])
    return EntityGraph(ie, ee, n_ent, names, source, n_items)
