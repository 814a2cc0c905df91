"""The encoder-decoder path (T5 family) on a tiny T5 built from a config.

No T5 weights can be had offline, so the model is randomly initialised: this checks shapes, batching,
generation and gradients, not output quality. It borrows the embedded SmolLM2 tokenizer (any tokenizer with
pad/eos works for a config-built model).
"""

from __future__ import annotations

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from persona_demo.engine.engine import PersonaEngine
from persona_demo.engine.generation import GenerationOptions, Row
from persona_demo.engine.models import wrap_llm


@pytest.fixture(scope="module")
def t5_engine(loaded_llm, loaded_encoder, settings):
    tokenizer = loaded_llm.tokenizer
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    llm = wrap_llm(T5ForConditionalGeneration(config), tokenizer, "tiny-t5-from-config")
    return PersonaEngine(llm, loaded_encoder, settings=settings)


def test_t5_is_detected_and_skips_the_chat_template(t5_engine):
    assert t5_engine.loaded_llm.is_encoder_decoder
    assert not t5_engine.llm.uses_chat_template
    assert t5_engine.plug.config.llm_dim == 32


def test_t5_batched_generation_has_both_rows(t5_engine, bike_history):
    plugged, plain, weights = t5_engine.rows("Write a post.", bike_history)
    tokens = t5_engine.llm._generate_tokens([plugged, plain], GenerationOptions(max_new_tokens=5), None)
    assert len(tokens) == 2 and all(1 <= len(t) <= 5 for t in tokens)
    alone = t5_engine.llm._generate_tokens([plugged], GenerationOptions(max_new_tokens=5), None)[0]
    assert tokens[0][: len(alone)] == alone
    assert len(weights) == len(bike_history)


def test_t5_gradients_reach_only_the_plug(t5_engine, bike_history):
    t5_engine.plug.train()
    out = t5_engine.plug_output(["Write a post."], [bike_history])
    row = Row(t5_engine.llm.prompt_ids("Write a post."), out.soft_tokens[0], out.soft_mask[0], [5, 6, 7])
    nll, count = t5_engine.llm.token_nll([row])
    assert count.tolist() == [3]
    (nll.sum() / count.sum()).backward()
    assert all(p.grad is not None for p in t5_engine.plug.parameters())
    assert all(p.grad is None for p in t5_engine.llm.model.parameters())
