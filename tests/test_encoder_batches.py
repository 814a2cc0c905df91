"""Encoder batching: every text once, shortest first, within the row and padded-token caps."""

from __future__ import annotations

import torch

from persona_demo.engine.encoder import length_batches, right_padded


def test_length_batches_cover_every_text_once_within_the_caps():
    lengths = [5, 300, 12, 12, 40, 7, 41, 3, 90, 12]
    batches = length_batches(lengths, max_texts=3, max_tokens=100)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)  # shortest first, so padding is small
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 100
    assert [300] in [[lengths[i] for i in b] for b in batches]  # longer than the cap: alone, not dropped


def test_right_padded_masks_the_padding():
    ids, mask = right_padded([[7, 8, 9], [4]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
