"""fp32 CPU linear layers that read half-precision copies of their weights in generation (fp16 for decoding
steps, bf16 for prompts where bf16 is native): close to `F.linear` there, exact outside generation and with
gradients, undone by `plain_linears` and left out with an explicit dtype. Real SmolLM2 for the model checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from persona_demo.engine.generation import FrozenLLM, GenerationOptions, Row
from persona_demo.engine.half_copies import (
    MAX_ROWS,
    HalfCopyLinear,
    generating,
    generation_form,
    plain_linears,
    speed_up_generation,
)
from persona_demo.engine.models import bf16_pays, load_llm

SHAPES = [(1, 1, 48), (2, 1, 48), (3, 48), (MAX_ROWS, 1, 48), (2, 7, 48)]


def layer_pair(bias: bool, bf16_prompts: bool = False) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    plain = nn.Linear(48, 96, bias=bias)
    fast = nn.Linear(48, 96, bias=bias)
    fast.load_state_dict(plain.state_dict())
    assert speed_up_generation(fast, bf16_prompts) == 1 and isinstance(fast, HalfCopyLinear)
    return plain, fast


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_without_gradients_the_product_is_fp32_arithmetic_on_fp16_weights(bias, shape):
    plain, fast = layer_pair(bias)
    assert fast.half_weights is not None  # the x86 CPU wheel has fbgemm
    x = torch.randn(*shape)
    with torch.inference_mode(), generating():
        expected, got = plain(x), fast(x)
        rounded = nn.functional.linear(x, plain.weight.half().float(), plain.bias)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, rounded, rtol=1e-5, atol=1e-5)  # only the weights are rounded
    torch.testing.assert_close(got, expected, rtol=2e-3, atol=2e-3)
    assert not torch.equal(got, expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_with_bf16_copies_a_prompt_reads_them_and_a_decoding_step_the_fp16_ones(shape):
    plain, fast = layer_pair(True, bf16_prompts=True)
    x = torch.randn(*shape)
    with torch.inference_mode(), generating():
        got = fast(x)
        bf16 = nn.functional.linear(x.bfloat16(), plain.weight.bfloat16()).float() + plain.bias
        fp16 = nn.functional.linear(x, plain.weight.half().float(), plain.bias)
    expected = bf16 if x.numel() // 48 > MAX_ROWS else fp16
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.dtype == torch.float32  # the residual stream stays fp32


@pytest.mark.parametrize("shape", SHAPES)
def test_without_fbgemm_few_rows_read_each_weight_once_in_fp32(shape):
    plain, fast = layer_pair(True)
    fast.half_weights = None  # as on an ARM build of torch: prompts keep F.linear
    x = torch.randn(*shape)
    with torch.inference_mode(), generating():
        expected, got = plain(x), fast(x)
    assert got.is_contiguous()  # a transposed result would push attention off its fast kernel
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_outside_generation_the_product_is_the_exact_fp32_one(shape):
    """Scoring a few positions (logits_at, one label) must equal the full forward pass exactly."""
    plain, fast = layer_pair(True)
    x = torch.randn(*shape)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_with_gradients_the_product_is_the_exact_fp32_one(shape):
    plain, fast = layer_pair(True)
    x = torch.randn(*shape, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    with generating():
        expected, got = plain(x), fast(x2)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    expected.sum().backward()
    got.sum().backward()  # training backpropagates through the frozen LLM into the soft tokens
    torch.testing.assert_close(x2.grad, x.grad, rtol=0, atol=0)


def test_an_fp32_cpu_llm_generates_from_weight_copies_keeps_its_tied_head_and_writes_the_same_text(
    loaded_llm,
):
    llm = FrozenLLM(loaded_llm)  # the tests' shared LLM is fp32, as `auto` loads it on a CPU
    model = llm.model
    prompts = "bf16 weight copies for prompts" if bf16_pays(torch.device("cpu")) else "fp16 weight copies"
    assert f"generation reads {prompts}" in llm.llm.describe()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    rows = [Row(llm.prompt_ids("Write a short post about your weekend.")), Row(llm.prompt_ids("Hi!"))]
    options = GenerationOptions(max_new_tokens=24)
    fast = llm.generate(rows, options)
    with plain_linears(model):
        assert generation_form(model) is None
        plain = llm.generate(rows, options)
    assert generation_form(model) is not None and fast == plain


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_an_explicit_dtype_keeps_plain_linear_layers(settings, dtype):
    """`--dtype float32` is exact fp32 everywhere, generation included (how the recorded figures were made)."""
    llm = load_llm(dataclasses.replace(settings, dtype=dtype))
    assert generation_form(llm.model) is None and "copies" not in llm.describe()
    assert not any(isinstance(module, HalfCopyLinear) for module in llm.model.modules())
