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
import torch.nn.functional as F
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
    """SDPA, except that a decoding step runs row by row over each row's own contiguous keys.

    A decoding step calls this once per layer with the same mask: where each row's keys start is worked out
    once per step (`_key_starts`), and each row goes straight to torch's SDPA, as transformers' wrapper would
    send an unmasked single query (its checks cost as much as the kernel for one short row)."""
    if query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    outputs = []
    for row, start in enumerate(_key_starts(attention_mask, query.shape[0])):
        if start is None:  # a hole inside the row's keys: keep its mask
            mask = attention_mask[row : row + 1] if attention_mask is not None else None
            out, _ = sdpa_attention_forward(
                module, query[row : row + 1], key[row : row + 1], value[row : row + 1], mask, **kwargs
            )
            outputs.append(out)
            continue
        out = F.scaled_dot_product_attention(
            query[row : row + 1],
            key[row : row + 1, :, start:],
            value[row : row + 1, :, start:],
            dropout_p=float(kwargs.get("dropout") or 0.0),  # type: ignore[arg-type]
            scale=kwargs.get("scaling"),  # type: ignore[arg-type]
            enable_gqa=gqa,
        )
        outputs.append(out.transpose(1, 2))
    return torch.cat(outputs).contiguous(), None


_last_starts: tuple[torch.Tensor | None, list[int | None]] = (None, [])
"""The last step's mask and its rows' key starts (every layer of a step passes the same mask object)."""


def _key_starts(mask: torch.Tensor | None, rows: int) -> list[int | None]:
    global _last_starts
    if mask is None:
        return [0] * rows
    seen, starts = _last_starts
    if seen is mask:
        return starts
    starts = [_first_key(mask, row) for row in range(rows)]
    _last_starts = (mask, starts)
    return starts


def _first_key(mask: torch.Tensor, row: int) -> int | None:
    """Where the row's attended keys start, if they run unbroken to the end (left padding); else None."""
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
