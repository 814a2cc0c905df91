"""Embedding caches keyed by (encoder id, text hash), so a text is never encoded twice.

The encoder talks to any object with `get_many`/`put_many` (the `EmbeddingCache` protocol); the in-memory
cache here serves the CLI and tests, and the SQLite store provides a persistent one with the same methods.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np


def text_hash(text: str) -> str:
    """Stable content hash of a text (sha256 of its UTF-8 bytes, hex)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class EmbeddingCache(Protocol):
    """What the encoder needs from a cache: batched lookups and inserts of float32 vectors."""

    def get_many(self, encoder_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
        """Return the cached vectors for those hashes that are present (missing ones are simply absent)."""
        ...

    def put_many(self, encoder_id: str, vectors: dict[str, np.ndarray]) -> None:
        """Store float32 vectors by text hash (existing entries may be overwritten)."""
        ...


class MemoryEmbeddingCache:
    """A dict-backed cache for one process."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], np.ndarray] = {}

    def get_many(self, encoder_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
        found = {}
        for h in hashes:
            vector = self._vectors.get((encoder_id, h))
            if vector is not None:
                found[h] = vector
        return found

    def put_many(self, encoder_id: str, vectors: dict[str, np.ndarray]) -> None:
        for h, vector in vectors.items():
            self._vectors[(encoder_id, h)] = np.asarray(vector, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._vectors)
