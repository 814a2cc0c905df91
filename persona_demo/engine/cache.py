"""Embedding caches keyed by (encoder id, text hash), so a text is never encoded twice.

The encoder talks to any object with `get_many`/`put_many` (the `EmbeddingCache` protocol); the in-memory
cache here serves the CLI and tests, and the SQLite store provides a persistent one with the same methods.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import Settings


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


class DiskEmbeddingCache:
    """A SQLite file of vectors shared by CLI runs (train, evaluate), so a corpus is encoded once, not per run.

    The encoder's maximum input length is part of the key: a text cut at 128 tokens has another vector.
    Safe for several processes at once (WAL, busy timeout); a damaged file is replaced, never trusted.
    """

    def __init__(self, path: Path, max_length: int) -> None:
        self.path = Path(path)
        self.max_length = max_length
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError:  # not a database / corrupted: it is only a cache
            self.path.unlink(missing_ok=True)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID"
        )
        db.execute("SELECT count(*) FROM vectors LIMIT 1").fetchone()
        return db

    def _key(self, encoder_id: str, h: str) -> str:
        return f"{encoder_id}|{self.max_length}|{h}"

    def get_many(self, encoder_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start : start + 500]
            keys = {self._key(encoder_id, h): h for h in chunk}
            marks = ",".join("?" * len(keys))
            for key, blob in self._db.execute(
                f"SELECT key, vector FROM vectors WHERE key IN ({marks})", list(keys)
            ):
                found[keys[key]] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def put_many(self, encoder_id: str, vectors: dict[str, np.ndarray]) -> None:
        rows = [
            (self._key(encoder_id, h), np.asarray(v, dtype=np.float32).tobytes()) for h, v in vectors.items()
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()


def disk_embedding_cache(settings: Settings) -> DiskEmbeddingCache:
    """The vectors file train and evaluate share under the cache folder, so a corpus is encoded once."""
    return DiskEmbeddingCache(settings.cache_dir / "embeddings.sqlite", settings.encoder_max_length)
