"""HistoryEncoder: texts → L2-normalised vectors, batched by length, each text encoded at most once.

History items and queries share one frozen encoder (the paper trains a copy for queries; see training).
Queries get the encoder's query prefix (BGE) and are cached under their prefixed text.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .cache import EmbeddingCache, MemoryEmbeddingCache, text_hash
from .models import LoadedEncoder

PROGRESS_MIN = 512
"""Encoding at least this many new texts at once shows a progress bar."""


def pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """CLS or attention-masked mean pooling, then L2 normalisation (matches sentence-transformers)."""
    if pooling == "cls":
        pooled = last_hidden[:, 0]
    else:
        mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
        pooled = (last_hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled.float(), p=2, dim=-1)


class HistoryEncoder:
    """Encode texts with a frozen encoder through an (encoder id, text hash) cache."""

    def __init__(
        self,
        encoder: LoadedEncoder,
        cache: EmbeddingCache | None = None,
        batch_size: int = 64,
        max_length: int = 256,
    ) -> None:
        self.encoder = encoder
        self.cache: EmbeddingCache = cache if cache is not None else MemoryEmbeddingCache()
        self.batch_size = batch_size
        self.max_length = max_length
        self.texts_encoded = 0
        """How many texts went through the model (cache misses) since creation: used by tests and the bench."""

    @property
    def encoder_id(self) -> str:
        return self.encoder.encoder_id

    @property
    def dim(self) -> int:
        return int(self.encoder.model.config.hidden_size)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """History-side vectors [n, dim] (float32, unit norm), in the order given."""
        return self._encode_cached(list(texts))

    def encode_queries(self, texts: list[str]) -> torch.Tensor:
        """Input-side vectors [n, dim]: the same encoder with its query prefix, if it has one."""
        return self._encode_cached([self.encoder.query_prefix + t for t in texts])

    def _encode_cached(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        hashes = [text_hash(t) for t in texts]
        found = self.cache.get_many(self.encoder_id, list(dict.fromkeys(hashes)))
        missing = {h: t for h, t in zip(hashes, texts) if h not in found}
        if missing:
            new_vectors = self._encode_uncached(list(missing.values()))
            fresh = {h: v for h, v in zip(missing.keys(), new_vectors)}
            self.cache.put_many(self.encoder_id, fresh)
            found = {**found, **fresh}
        return torch.from_numpy(np.stack([np.asarray(found[h], dtype=np.float32) for h in hashes]))

    @torch.inference_mode()
    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        """Run the model on length-sorted batches (less padding), then restore the input order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        tokenizer, model = self.encoder.tokenizer, self.encoder.model
        starts = range(0, len(order), self.batch_size)
        # Long jobs (a whole dataset's profiles: minutes on a CPU) get a progress bar; live edits don't.
        for start in tqdm(starts, desc="encoding history", unit="batch", disable=len(texts) < PROGRESS_MIN):
            index = order[start : start + self.batch_size]
            batch = tokenizer(
                [texts[i] for i in index],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.encoder.device)
            hidden = model(**batch).last_hidden_state
            out[index] = pool(hidden, batch["attention_mask"], self.encoder.pooling).cpu().numpy()
        self.texts_encoded += len(texts)
        return out
