"""fp32 decoding on a CPU: linear layers that read their weights once for the few rows of a decoding step.

In fp32, `F.linear(x, W)` with 2 or 3 rows (the side-by-side pair, persona guidance's reference row) costs 2-3×
one row on a CPU: the kernel it reaches streams W once per row, and at SmolLM2-135M's width a decoding step is
bound by reading weights, above all the 49k-token LM head. The same product written as (W · xᵀ)ᵀ reaches the
kernel that reads W once for all rows. bf16 on a CPU with native support batches rows for free already, so only
fp32 CPU models are changed (where bf16 is not chosen: CPUs without AVX512-BF16 or AMX).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

MAX_ROWS = 4
"""Up to this many rows take the weight-reusing form; prefill and training batches keep `F.linear`."""


class RowReuseLinear(nn.Linear):
    """`nn.Linear` whose few-row fp32 CPU products read the weight matrix once (same parameters, same result up
    to float rounding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if 1 < rows <= MAX_ROWS and x.dtype == torch.float32 and x.device.type == "cpu":
            out = (self.weight @ x.reshape(rows, self.in_features).t()).t()
            out = out.reshape(*x.shape[:-1], self.out_features)
            return out if self.bias is None else out + self.bias
        return super().forward(x)


def reuse_weights_across_rows(model: nn.Module) -> int:
    """Turn every plain `nn.Linear` of a frozen fp32 CPU model into a `RowReuseLinear` in place (tied weights
    stay tied: the parameters are the same objects); returns how many were changed."""
    changed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = RowReuseLinear
            changed += 1
    return changed


def reuses_weights(model: nn.Module) -> bool:
    return any(isinstance(module, RowReuseLinear) for module in model.modules())


@contextlib.contextmanager
def plain_linears(model: nn.Module) -> Iterator[None]:
    """The model with plain `nn.Linear` layers while the block runs: the studio before this change, which the
    bench times as its baseline."""
    swapped = [module for module in model.modules() if type(module) is RowReuseLinear]
    for module in swapped:
        module.__class__ = nn.Linear
    try:
        yield
    finally:
        for module in swapped:
            module.__class__ = RowReuseLinear
