"""fp32 generation on a CPU: linear layers that read half-precision copies of their weights while generating,
and the exact fp32 weights everywhere else.

The frozen LLM keeps fp32 weights on a CPU, so every score (a label's, an NLL, a training loss) is exact fp32.
Generation does not need that exactness and is where the time goes:
- A decoding step of a model this small is bound by reading its weights (~0.5 GB for SmolLM2-135M, a fifth of
  it the 49k-token LM head), and `F.linear` reads them once per row: the side-by-side pair and persona
  guidance's reference row cost 2-3× one row. fbgemm's fp16 product (`torch.ops.quantized.linear_dynamic_fp16`)
  reads weights stored in fp16 (half the bytes) once for all rows, widens them in registers and multiplies and
  accumulates in fp32: with every kernel library capped at AVX2, a 3-row step of the LM head takes 1.4 ms
  instead of 35 ms. Rounding a weight to fp16 changes it by at most 2⁻¹¹ of its value.
- A prompt (the prefill) is compute-bound: where bf16 is native (`hardware.bf16_is_faster_on_cpu`) it reads a
  bf16 copy of the weights (2× the fp32 speed, accumulation in fp32, the residual stream stays fp32); elsewhere
  the fp16 copy (1.2-1.3× the fp32 speed under AVX2).
Only code inside `generating()` (entered by `FrozenLLM` around a generation) sees the copies. Where fbgemm is
missing (ARM builds), few rows take the form (W · xᵀ)ᵀ instead, which still reads W once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

MAX_ROWS = 4
"""Up to this many rows (a decoding step) read the fp16 copy; more rows are a prompt."""


_state = threading.local()
"""Per thread: whether products belong to a generation (the studio generates in worker threads while other
threads may score)."""


@contextlib.contextmanager
def generating() -> Iterator[None]:
    """Products in this block, on this thread, belong to a generation (its prompt and decoding steps): they may
    read the half-precision weight copies. Outside it every product is the exact fp32 one."""
    previous = getattr(_state, "generating", False)
    _state.generating = True
    try:
        yield
    finally:
        _state.generating = previous


class HalfCopyLinear(nn.Linear):
    """`nn.Linear` whose fp32 CPU products in generation read half-precision copies of the weight (same
    parameters; the copies are made when the layer is converted): a decoding step's few rows read the fp16 copy
    once for all rows (fbgemm), a prompt reads the bf16 copy where bf16 is native, else the fp16 one."""

    half_weights: object | None = None
    bf16_weight: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            not getattr(_state, "generating", False)
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or torch.is_grad_enabled()
        ):
            return super().forward(x)
        rows = x.numel() // self.in_features
        if rows > MAX_ROWS and self.bf16_weight is not None:
            # a prompt: compute-bound, and native bf16 runs it 2× as fast as fp32
            out = F.linear(x.to(torch.bfloat16), self.bf16_weight).float()
            return out if self.bias is None else out + self.bias
        flat = x.reshape(rows, self.in_features)
        if self.half_weights is not None:
            out = torch.ops.quantized.linear_dynamic_fp16(flat, self.half_weights)
        elif 1 < rows <= MAX_ROWS:
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


def speed_up_generation(model: nn.Module, bf16_prompts: bool) -> int:
    """Turn every plain `nn.Linear` of a frozen fp32 CPU model into a `HalfCopyLinear` in place (tied weights stay
    tied: the parameters are the same objects), with bf16 copies for prompts where `bf16_prompts` (native bf16);
    returns how many were changed."""
    changed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = HalfCopyLinear
            module.half_weights = pack_half_weights(module.weight, module.bias)
            module.bf16_weight = module.weight.detach().to(torch.bfloat16) if bf16_prompts else None
            changed += 1
    return changed


def generation_form(model: nn.Module) -> str | None:
    """What the status line says of generation's products, or None for plain linear layers."""
    layers = [module for module in model.modules() if isinstance(module, HalfCopyLinear)]
    if not layers:
        return None
    bf16_prompts = all(layer.bf16_weight is not None for layer in layers)
    if all(layer.half_weights is not None for layer in layers):
        if bf16_prompts:
            return "generation reads bf16 weight copies for prompts and fp16 ones for decoding"
        return "generation reads fp16 weight copies"
    return "decoding steps read each weight once" + (", prompts bf16 weight copies" if bf16_prompts else "")


@contextlib.contextmanager
def plain_linears(model: nn.Module) -> Iterator[None]:
    """The model with plain `nn.Linear` layers while the block runs: exact fp32 generation, for comparisons."""
    swapped = [module for module in model.modules() if type(module) is HalfCopyLinear]
    for module in swapped:
        module.__class__ = nn.Linear
    try:
        yield
    finally:
        for module in swapped:
            module.__class__ = HalfCopyLinear
