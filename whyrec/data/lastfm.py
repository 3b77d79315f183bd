"""Last.fm (hetrec2011) play counts with the knowledge graph released with KGCN."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import InteractionData
from .errors import DataError
from .parsing import INT, STR, read_delimited, require_file


def load_lastfm_kg(folder: str | Path) -> InteractionData:
    """Last.fm artists linked to KG entities, with KGCN's preprocessing.

    ``item_index2entity_id.txt`` maps an artist id to its KG entity; as in
    KGCN's ``preprocess.py`` only artists with an entity are kept and users are
    those left with at least one such artist.  Items are indexed in entity
    order, so item ``i`` *is* entity ``i`` and ``kg_triples`` (head, relation,
    tail) use the same index space; other entities follow the items.
    ``ratings`` holds the play count (``weight``).
    """
    folder = Path(folder)
    plays_path = require_file(folder, "user_artists.dat", "lastfm-kg")
    map_path = require_file(folder, "item_index2entity_id.txt", "lastfm-kg")
    kg_path = require_file(folder, "kg.txt", "lastfm-kg")
    plays = read_delimited(
        plays_path, "\t", ["user", "artist", "weight"], [INT, INT, INT], header=["userID", "artistID", "weight"]
    )
    mapping = read_delimited(map_path, "\t", ["artist", "entity"], [INT, INT])
    kg = read_delimited(kg_path, "\t", ["head", "relation", "tail"], [INT, STR, INT])

    entities = mapping["entity"].to_numpy()
    n_items = len(mapping)
    if len(np.unique(mapping["artist"])) != n_items or not np.array_equal(np.sort(entities), np.arange(n_items)):
        raise DataError(
            "expected each artist once, mapped to the entities 0..n_artists-1 (KGCN's layout)", map_path
        )
    order = np.argsort(entities)
    item_ids = mapping["artist"].to_numpy()[order]  # item index == entity id
    sorter = np.argsort(item_ids)
    artist = plays["artist"].to_numpy()
    pos = np.clip(np.searchsorted(item_ids, artist, sorter=sorter), 0, n_items - 1)
    keep = item_ids[sorter[pos]] == artist
    if not keep.any():
        raise DataError("no listening event refers to an artist that has a KG entity", plays_path)
    items = sorter[pos][keep]
    user_ids, users = np.unique(plays["user"].to_numpy()[keep], return_inverse=True)

    relation_names, relations = np.unique(kg["relation"].to_numpy(dtype=str), return_inverse=True)
    triples = np.stack([kg["head"].to_numpy(), relations, kg["tail"].to_numpy()], axis=1).astype(np.int64)
    if (triples[:, [0, 2]] < 0).any():
        raise DataError("negative entity id", kg_path)
    n_entities = int(max(triples[:, [0, 2]].max() + 1, n_items))
    return InteractionData(
        name="lastfm-kg",
        user_ids=user_ids.astype(np.int64),
        item_ids=item_ids.astype(np.int64),
        users=users,
        items=items,
        ratings=plays["weight"].to_numpy()[keep].astype(np.float32),
        explicit=False,
        item_titles=None,
        kg_triples=triples,
        n_entities=n_entities,
        relation_names=[str(r) for r in relation_names],
        source_dir=str(folder),
    )
