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
_EF_SEARCH = 128


class FaqIndex:
    """Vectors labelled by FAQ id; every hnswlib call runs under one lock.

    NOTE: hnswlib allows queries beside queries but not beside ``add_items``,
    ``mark_deleted`` or ``resize_index``, so all of them share ``_lock``.
    """

    def __init__(self, dim: int, capacity: int = _MIN_CAPACITY) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._hnsw = hnswlib.Index(space="cosine", dim=dim)
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
            k = min(live, max(limit * 8, 32))
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
        index = cls(int(meta["dim"]))
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
