"""fp32 CPU linear layers that read their weights once for a decoding step's few rows: same results as
`F.linear`, applied only where they pay, undone for the bench's baseline. Real SmolLM2 for the model checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from persona_demo.engine.generation import FrozenLLM, GenerationOptions, Row
from persona_demo.engine.models import load_llm
from persona_demo.engine.row_reuse import (
    MAX_ROWS,
    RowReuseLinear,
    plain_linears,
    reuse_weights_across_rows,
    reuses_weights,
)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 48), (2, 1, 48), (3, 48), (MAX_ROWS, 1, 48), (2, 7, 48)])
def test_the_product_and_its_gradient_match_a_plain_linear(bias, shape):
    torch.manual_seed(0)
    plain = nn.Linear(48, 96, bias=bias)
    reusing = nn.Linear(48, 96, bias=bias)
    reusing.load_state_dict(plain.state_dict())
    assert reuse_weights_across_rows(reusing) == 1 and isinstance(reusing, RowReuseLinear)
    x = torch.randn(*shape, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    expected, got = plain(x), reusing(x2)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    expected.sum().backward()
    got.sum().backward()  # training backpropagates through the frozen LLM into the soft tokens
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-5)


def test_an_fp32_cpu_llm_reuses_weights_keeps_its_tied_head_and_writes_the_same_text(loaded_llm):
    llm = FrozenLLM(loaded_llm)  # the tests' shared LLM is fp32
    model = llm.model
    assert reuses_weights(model) and "read each weight once" in llm.llm.describe()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    rows = [Row(llm.prompt_ids("Write a short post about your weekend.")), Row(llm.prompt_ids("Hi!"))]
    options = GenerationOptions(max_new_tokens=12)
    reused = llm.generate(rows, options)
    with plain_linears(model):
        assert not reuses_weights(model)
        plain = llm.generate(rows, options)
    assert reuses_weights(model) and reused == plain


def test_a_bf16_llm_keeps_plain_linear_layers(settings):
    llm = load_llm(dataclasses.replace(settings, dtype="bfloat16"))
    assert not reuses_weights(llm.model) and "read each weight once" not in llm.describe()
