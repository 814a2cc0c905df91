"""HistoryEncoder: texts → L2-normalised vectors, batched by length, each text encoded at most once.

History items and queries share one frozen encoder (the paper trains a copy for queries; see training).
Queries get the encoder's query prefix (BGE) and are cached under their prefixed text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .cache import EmbeddingCache, MemoryEmbeddingCache, text_hash
from .models import LoadedEncoder

PROGRESS_MIN = 512
"""Encoding at least this many new texts at once shows a progress bar."""


@dataclass
class QueryTokens:
    """A tokenized, right-padded batch of queries [B, T], for a plug that encodes its queries itself."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: torch.device) -> QueryTokens:
        return QueryTokens(self.input_ids.to(device), self.attention_mask.to(device))


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
        batch_size: int = 128,
        max_length: int = 256,
        batch_tokens: int = 4096,
    ) -> None:
        self.encoder = encoder
        self.cache: EmbeddingCache = cache if cache is not None else MemoryEmbeddingCache()
        self.batch_size = batch_size
        self.max_length = max_length
        self.batch_tokens = batch_tokens
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

    def query_tokens(self, texts: list[str]) -> QueryTokens:
        """Queries (with the query prefix) tokenized for a plug that encodes them with its own encoder."""
        ids = self.encoder.tokenizer(
            [self.encoder.query_prefix + t for t in texts], truncation=True, max_length=self.max_length
        )["input_ids"]
        return QueryTokens(*right_padded(ids, self.encoder.tokenizer.pad_token_id or 0))

    @torch.inference_mode()
    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        """Tokenize once, run the model on token-length-sorted batches (little padding), restore the input order."""
        ids = self.encoder.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        batches = length_batches([len(x) for x in ids], self.batch_size, self.batch_tokens)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pad_id = self.encoder.tokenizer.pad_token_id or 0
        # Long jobs (a whole dataset's profiles: minutes on a CPU) get a progress bar; live edits don't.
        for index in tqdm(batches, desc="encoding history", unit="batch", disable=len(texts) < PROGRESS_MIN):
            input_ids, attention_mask = right_padded([ids[i] for i in index], pad_id)
            device = self.encoder.device
            hidden = self.encoder.model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
            ).last_hidden_state
            out[index] = pool(hidden, attention_mask.to(device), self.encoder.pooling).cpu().numpy()
        self.texts_encoded += len(texts)
        return out


def length_batches(lengths: list[int], max_texts: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped shortest first, each group ≤ max_texts texts and ≤ max_tokens padded tokens (≥ 1 text).

    Sorting by token count (not characters) and capping padded tokens instead of rows is what makes
    batching pay on a CPU: ~1.3× over fixed 64-row batches sorted by characters on huffpost histories."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending lengths: the newest item is the longest, so it sets the padded width
        if current and (len(current) >= max_texts or (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def right_padded(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [n, longest], padded on the right as encoders expect."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask
