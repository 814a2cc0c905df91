"""Decoding-step attention that gives each row of a batch the numbers it would get alone.

The studio decodes the persona row, the plain row and guidance's reference row in one batch. Left-padded to a
common length, a short row's attention sums over extra (masked) keys placed at other positions, so it rounds
differently than the same row decoded alone, and greedy decoding then drifts: unticking "own texts in the
prompt" changed the *without plug* answer. Here a decoding step (one query position) runs each row over its
own keys only, with no mask, exactly as a batch of one does; prompts (many query positions) keep the model's
usual SDPA. Together with the per-row prefill (`FrozenLLM.prefilled`) and fbgemm's fp16 products, which give
each row the same result whatever the batch (`half_copies.py`), a row's greedy tokens do not depend on its
neighbours.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ROW_BY_ROW = "persona_demo_row_by_row"
"""The attention implementation's registered name."""


def row_by_row_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """SDPA, except that a decoding step runs row by row over each row's own contiguous keys."""
    if query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outputs = []
    for row in range(query.shape[0]):
        start = _first_key(attention_mask, row)
        if start is None:  # a hole inside the row's keys: keep its mask
            mask = attention_mask[row : row + 1] if attention_mask is not None else None
            out, _ = sdpa_attention_forward(
                module, query[row : row + 1], key[row : row + 1], value[row : row + 1], mask, **kwargs
            )
        else:
            out, _ = sdpa_attention_forward(
                module,
                query[row : row + 1].contiguous(),
                key[row : row + 1, :, start:].contiguous(),
                value[row : row + 1, :, start:].contiguous(),
                None,
                **kwargs,
            )
        outputs.append(out)
    return torch.cat(outputs), None


def _first_key(mask: torch.Tensor | None, row: int) -> int | None:
    """Where the row's attended keys start, if they run unbroken to the end (left padding); else None."""
    if mask is None:
        return 0
    allowed = mask[row].reshape(-1, mask.shape[-1])[-1]
    allowed = allowed if allowed.dtype == torch.bool else allowed == 0
    hits = allowed.nonzero()
    if len(hits) == 0:
        return None
    start = int(hits[0])
    return start if bool(allowed[start:].all()) else None


def use_row_by_row_attention(model: nn.Module) -> bool:
    """Switch a decoder-only model that runs SDPA to the row-by-row decoding attention; False if it runs
    another kernel (eager, flash attention), which is left alone."""
    if getattr(model.config, "is_encoder_decoder", False) or model.config._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(ROW_BY_ROW, row_by_row_attention)
    AttentionMaskInterface.register(ROW_BY_ROW, sdpa_mask)
    model.set_attn_implementation(ROW_BY_ROW)
    return True
