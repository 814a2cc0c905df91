"""fp32 decoding on a CPU: linear layers that multiply a decoding step's few rows by half-precision copies of
their weights.

A decoding step of an fp32 model this small is bound by reading its weights (~0.5 GB for SmolLM2-135M, a fifth
of it the 49k-token LM head), and `F.linear` reads them once per row: the side-by-side pair and persona
guidance's reference row cost 2-3× one row. fbgemm's fp16 product (`torch.ops.quantized.linear_dynamic_fp16`)
reads weights stored in fp16 (half the bytes) once for all rows, widens them in registers and multiplies and
accumulates in fp32: on a 2-core EPYC with every kernel library capped at AVX2, a 3-row step of the LM head
takes 1.4 ms instead of 35 ms. Rounding a weight to fp16 changes it by at most 2⁻¹¹ of its value. Only
generation's decoding steps use the copies (`decoding()`, entered by `FrozenLLM` around `generate`): prompts
(prefill), scoring (a few positions' logits, one label) and training keep the fp32 weights, so every recorded
NLL is exact fp32 and only the tokens decoded one at a time see the rounding (same greedy text in the tests).

Where fbgemm is missing (ARM builds), few rows take the form (W · xᵀ)ᵀ instead, which still reads W once.
bf16 models keep plain linear layers: native bf16 already reads each weight once for a few rows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import nn

MAX_ROWS = 4
"""Up to this many rows (a decoding step) take the fast form; prompts and training batches keep `F.linear`."""


_state = threading.local()
"""Per thread: whether few-row products are decoding steps (the studio generates in worker threads while
other threads may score)."""


@contextlib.contextmanager
def decoding() -> Iterator[None]:
    """Few-row products in this block, on this thread, are generation's decoding steps: they may use the fp16
    weight copies. Outside it every product is the exact fp32 one."""
    previous = getattr(_state, "decoding", False)
    _state.decoding = True
    try:
        yield
    finally:
        _state.decoding = previous


class FewRowLinear(nn.Linear):
    """`nn.Linear` whose few-row fp32 CPU products in a decoding step read the weights once, from an fp16 copy
    where fbgemm is there (same parameters; `half_weights` is packed when the layer is converted)."""

    half_weights: object | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if (
            rows > MAX_ROWS
            or not getattr(_state, "decoding", False)
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or torch.is_grad_enabled()
        ):
            return super().forward(x)
        flat = x.reshape(rows, self.in_features)
        if self.half_weights is not None:
            out = torch.ops.quantized.linear_dynamic_fp16(flat, self.half_weights)
        elif rows > 1:
            out = (self.weight @ flat.t()).t().contiguous()  # contiguous: attention's fast kernel needs it
            out = out if self.bias is None else out + self.bias
        else:
            return super().forward(x)
        return out.reshape(*x.shape[:-1], self.out_features)


def pack_half_weights(weight: torch.Tensor, bias: torch.Tensor | None) -> object | None:
    """fbgemm's packed fp16 copy of a weight, or None where this build of torch has no fbgemm."""
    try:
        return torch.ops.quantized.linear_prepack_fp16(
            weight.detach(), None if bias is None else bias.detach()
        )
    except (RuntimeError, AttributeError, NotImplementedError):
        return None


def speed_up_decoding(model: nn.Module) -> int:
    """Turn every plain `nn.Linear` of a frozen fp32 CPU model into a `FewRowLinear` in place (tied weights stay
    tied: the parameters are the same objects); returns how many were changed."""
    changed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FewRowLinear
            module.half_weights = pack_half_weights(module.weight, module.bias)
            changed += 1
    return changed


def decoding_form(model: nn.Module) -> str | None:
    """What the status line says of the model's few-row products, or None for plain linear layers."""
    layers = [module for module in model.modules() if isinstance(module, FewRowLinear)]
    if not layers:
        return None
    if all(layer.half_weights is not None for layer in layers):
        return "decoding reads fp16 copies of the weights, fp32 arithmetic"
    return "few-row products read each weight once"


@contextlib.contextmanager
def plain_linears(model: nn.Module) -> Iterator[None]:
    """The model with plain `nn.Linear` layers while the block runs: the studio before this change, which the
    bench times as its baseline."""
    swapped = [module for module in model.modules() if type(module) is FewRowLinear]
    for module in swapped:
        module.__class__ = nn.Linear
    try:
        yield
    finally:
        for module in swapped:
            module.__class__ = FewRowLinear
