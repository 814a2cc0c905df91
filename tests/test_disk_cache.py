"""The on-disk embedding cache that train/evaluate share: round trip, sharing, keys, a damaged file."""

from __future__ import annotations

import numpy as np

from persona_demo.engine.cache import DiskEmbeddingCache
from persona_demo.engine.encoder import HistoryEncoder


def test_vectors_survive_a_new_process_and_respect_the_max_length(tmp_path):
    path = tmp_path / "embeddings.sqlite"
    first = DiskEmbeddingCache(path, max_length=256)
    first.put_many("enc", {"h1": np.arange(3, dtype=np.float32), "h2": np.ones(3, dtype=np.float32)})
    first.close()
    again = DiskEmbeddingCache(path, max_length=256)
    found = again.get_many("enc", ["h1", "h2", "missing"])
    assert sorted(found) == ["h1", "h2"] and found["h1"].tolist() == [0.0, 1.0, 2.0]
    assert again.get_many("other-encoder", ["h1"]) == {}
    assert (
        DiskEmbeddingCache(path, max_length=128).get_many("enc", ["h1"]) == {}
    )  # another cut, another vector


def test_a_damaged_cache_file_is_replaced(tmp_path):
    path = tmp_path / "embeddings.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    cache = DiskEmbeddingCache(path, max_length=256)
    cache.put_many("enc", {"h": np.zeros(2, dtype=np.float32)})
    assert list(cache.get_many("enc", ["h"])) == ["h"]


def test_the_encoder_reuses_vectors_from_disk(loaded_encoder, tmp_path):
    texts = ["I ride my bike to work.", "Sourdough needs patience."]
    first = HistoryEncoder(loaded_encoder, DiskEmbeddingCache(tmp_path / "e.sqlite", 256), 8, 256)
    vectors = first.encode(texts)
    second = HistoryEncoder(loaded_encoder, DiskEmbeddingCache(tmp_path / "e.sqlite", 256), 8, 256)
    assert np.allclose(second.encode(texts).numpy(), vectors.numpy())
    assert second.texts_encoded == 0
