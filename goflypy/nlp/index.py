"""hnswlib cosine index over FAQ texts, several vectors per FAQ entry."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import hnswlib
import msgpack
import numpy as np

_INDEX_FILE = "faq.hnsw"
_META_FILE = "faq.meta"
_MIN_CAPACITY = 64
_EF_SEARCH = 64


class FaqIndex:
    """Vectors labelled by FAQ id; every hnswlib call runs under one lock.

    NOTE: hnswlib allows queries beside queries but not beside ``add_items``,
    ``mark_deleted`` or ``resize_index``, so all of them share ``_lock``.
    """

    def __init__(
        self, dim: int, capacity: int = _MIN_CAPACITY, *, empty: bool = False
    ) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._hnsw = hnswlib.Index(space="cosine", dim=dim)
        if not empty:
            self._hnsw.init_index(
                max_elements=max(capacity, _MIN_CAPACITY),
                M=16,
                ef_construction=200,
                allow_replace_deleted=True,
            )
            self._hnsw.set_ef(_EF_SEARCH)
        self._owner: dict[int, str] = {}
        self._labels: dict[str, list[int]] = {}
        self._next_label = 0

    @property
    def live_count(self) -> int:
        """Return the number of vectors that searches can return."""
        return len(self._owner)

    def add(self, faq_id: str, vectors: np.ndarray) -> None:
        """Store ``vectors`` for ``faq_id``, replacing any it had."""
        rows = [row for row in vectors if float(np.dot(row, row)) > 0.0]
        with self._lock:
            self._remove_locked(faq_id)
            if not rows:
                return
            labels = list(range(self._next_label, self._next_label + len(rows)))
            self._next_label += len(rows)
            self._reserve_locked(len(rows))
            self._hnsw.add_items(np.vstack(rows), labels, replace_deleted=True)
            self._labels[faq_id] = labels
            for label in labels:
                self._owner[label] = faq_id

    def remove(self, faq_id: str) -> None:
        """Forget every vector of ``faq_id``; unknown ids are ignored."""
        with self._lock:
            self._remove_locked(faq_id)

    def search(self, vector: np.ndarray, limit: int) -> list[tuple[str, float]]:
        """Return up to ``limit`` (faq_id, cosine) pairs, best first, one per id."""
        with self._lock:
            live = len(self._owner)
            if live == 0:
                return []
            # NOTE: k above the live count raises, so it is clamped here.
            k = min(live, limit * 2 + 8)
            labels, distances = self._query_locked(vector, k)
            owners = [self._owner.get(int(label)) for label in labels]

        best: dict[str, float] = {}
        for owner, distance in zip(owners, distances, strict=True):
            if owner is not None:
                best[owner] = max(best.get(owner, -1.0), 1.0 - float(distance))
        return sorted(best.items(), key=lambda item: -item[1])[:limit]

    def save(self, directory: Path, extra: dict[str, Any]) -> None:
        """Write the index and its label map (plus ``extra``) to ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "labels": self._labels,
            "next_label": self._next_label,
            "dim": self.dim,
            "extra": extra,
        }
        with self._lock:
            self._hnsw.save_index(str(directory / (_INDEX_FILE + ".tmp")))
        meta_tmp = directory / (_META_FILE + ".tmp")
        meta_tmp.write_bytes(msgpack.packb(meta))
        (directory / (_INDEX_FILE + ".tmp")).replace(directory / _INDEX_FILE)
        meta_tmp.replace(directory / _META_FILE)

    @classmethod
    def load(cls, directory: Path) -> tuple[FaqIndex, dict[str, Any]]:
        """Read an index written by ``save``; raises OSError or ValueError."""
        meta = msgpack.unpackb((directory / _META_FILE).read_bytes())
        # ``empty``: hnswlib warns when loading into an initialised index.
        index = cls(int(meta["dim"]), empty=True)
        index._hnsw.load_index(str(directory / _INDEX_FILE), allow_replace_deleted=True)
        index._hnsw.set_ef(_EF_SEARCH)
        index._labels = {key: list(value) for key, value in meta["labels"].items()}
        index._owner = {
            label: faq_id
            for faq_id, labels in index._labels.items()
            for label in labels
        }
        index._next_label = int(meta["next_label"])
        return index, dict(meta["extra"])

    def _query_locked(self, vector: np.ndarray, k: int) -> tuple[Any, Any]:
        """Run knn_query, asking for fewer results if deletions starve the graph."""
        while True:
            self._hnsw.set_ef(max(_EF_SEARCH, k))
            try:
                labels, distances = self._hnsw.knn_query(vector, k=k)
            except RuntimeError:
                if k == 1:
                    return [], []
                k = max(1, k // 2)
                continue
            return labels[0], distances[0]

    def _remove_locked(self, faq_id: str) -> None:
        """Mark the vectors of ``faq_id`` deleted; the caller holds the lock."""
        for label in self._labels.pop(faq_id, []):
            self._hnsw.mark_deleted(label)
            del self._owner[label]

    def _reserve_locked(self, extra: int) -> None:
        """Grow capacity so ``extra`` more items fit; the caller holds the lock."""
        # NOTE: deleted items still occupy slots in element_count.
        needed = self._hnsw.element_count + extra
        capacity = self._hnsw.max_elements
        if needed > capacity:
            self._hnsw.resize_index(max(needed, capacity * 2))


class SparseIndex:
    """Exact inverted index over sparse unit vectors, several rows per FAQ id.

    A query's cosine with every row is one weighted ``bincount`` over the
    posting lists of its features, so no candidate is missed and the cost
    follows the query's features, not the vector width. Rows of removed
    entries stay in the postings, marked dead, until the next full rebuild.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: list[tuple[str, int] | None] = []
        self._rows: dict[str, list[int]] = {}
        self._postings: dict[str, tuple[list[int], list[float]]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._dead: list[int] = []
        self._dead_array: np.ndarray | None = None

    def add(self, faq_id: str, vectors: list[dict[str, float]]) -> None:
        """Store the sparse ``vectors`` of ``faq_id``, replacing any it had."""
        with self._lock:
            self._remove_locked(faq_id)
            rows = []
            for number, vector in enumerate(vectors):
                if not vector:
                    continue
                row = len(self._owner)
                self._owner.append((faq_id, number))
                rows.append(row)
                for key, weight in vector.items():
                    ids, weights = self._postings.setdefault(key, ([], []))
                    ids.append(row)
                    weights.append(weight)
                    self._arrays.pop(key, None)
            self._rows[faq_id] = rows

    def remove(self, faq_id: str) -> None:
        """Forget every row of ``faq_id``; unknown ids are ignored."""
        with self._lock:
            self._remove_locked(faq_id)

    def search(
        self, query: dict[str, float], limit: int
    ) -> list[tuple[str, int, float]]:
        """Return up to ``limit`` best (faq_id, text number, cosine) rows."""
        parts_ids = []
        parts_weights = []
        lengths = []
        factors = []
        with self._lock:
            size = len(self._owner)
            for key, weight in query.items():
                arrays = self._arrays_locked(key)
                if arrays is not None:
                    parts_ids.append(arrays[0])
                    parts_weights.append(arrays[1])
                    lengths.append(len(arrays[0]))
                    factors.append(weight)
            owner = self._owner
            if self._dead_array is None:
                self._dead_array = np.asarray(self._dead, dtype=np.intp)
            dead = self._dead_array
        if not parts_ids or size == 0:
            return []
        weights = np.concatenate(parts_weights)
        weights *= np.repeat(np.asarray(factors), lengths)
        scores = np.bincount(np.concatenate(parts_ids), weights=weights, minlength=size)
        scores[dead[dead < size]] = 0.0
        hits = int(np.count_nonzero(scores > 0.0))
        count = min(hits, limit)
        if count == 0:
            return []
        top = np.argpartition(-scores, count - 1)[:count]
        result = []
        for row in top[np.argsort(-scores[top], kind="stable")]:
            where = owner[int(row)]
            if where is not None:
                result.append((where[0], where[1], float(scores[row])))
        return result

    def _arrays_locked(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Return the posting arrays of ``key``; the caller holds the lock."""
        arrays = self._arrays.get(key)
        if arrays is None:
            posting = self._postings.get(key)
            if posting is None:
                return None
            arrays = (
                np.asarray(posting[0], dtype=np.intp),
                np.asarray(posting[1], dtype=np.float64),
            )
            self._arrays[key] = arrays
        return arrays

    def _remove_locked(self, faq_id: str) -> None:
        """Mark the rows of ``faq_id`` dead; the caller holds the lock."""
        for row in self._rows.pop(faq_id, []):
            self._owner[row] = None
            self._dead.append(row)
            self._dead_array = None
