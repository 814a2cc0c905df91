"""The bf16 LLM (`--dtype bfloat16`; `auto` keeps fp32 weights on a CPU and generates from bf16 copies where
bf16 is native): it scores like fp32 and serves the studio's paths (plugged generation, the side-by-side pair,
guided chat). These compare the two dtypes on the real models and a shipped plug."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from persona_demo.engine.engine import PersonaEngine
from persona_demo.engine.generation import GenerationOptions, Row
from persona_demo.engine.models import load_llm
from persona_demo.tasks.nll import score
from tests.support import shared_data

NLL_EXAMPLES = 24
BF16_NLL_TOLERANCE = 0.005
"""The shipped plugs' dev NLL may move by at most 0.5% in bf16 (docs/performance.md has the full splits)."""


@pytest.fixture(scope="module")
def bf16_engine(settings, loaded_encoder):
    llm = load_llm(dataclasses.replace(settings, dtype="bfloat16"))
    engine = PersonaEngine(llm, loaded_encoder, settings=settings)
    engine.load_plug(settings.plugs_dir / "huffpost_headline.safetensors")
    return engine


def test_the_headline_plugs_nll_in_bf16_is_within_half_a_percent_of_fp32(engine, bf16_engine, settings):
    from persona_demo.evaluation.evaluate_nll import lamp_items

    engine.load_plug(settings.plugs_dir / "huffpost_headline.safetensors")
    _, items, _ = lamp_items(shared_data("huffpost_headline"), "dev", NLL_EXAMPLES)
    means = []
    for model in (engine, bf16_engine):
        sums, counts = score(
            model,
            [i.prompt for i in items],
            [i.target for i in items],
            queries=[i.query for i in items],
            histories=[i.history for i in items],
        )
        means.append(sums.sum() / counts.sum())
    fp32, bf16 = means
    assert abs(bf16 - fp32) / fp32 < BF16_NLL_TOLERANCE, (fp32, bf16)


def test_bf16_serves_the_side_by_side_pair_and_guided_chat(bf16_engine, bike_history):
    assert bf16_engine.llm.embedding.weight.dtype == torch.bfloat16
    options = GenerationOptions(max_new_tokens=6, min_new_tokens=6)
    comparison = bf16_engine.compare("Write a short post about your weekend.", bike_history, options)
    assert comparison.with_plug and comparison.without_plug
    chat = [{"role": "user", "content": "Any plans for the weekend?"}]
    guided = dataclasses.replace(
        options, persona_guidance=2.0, repetition_penalty=1.15, no_repeat_ngram_size=3
    )
    plugged, plain, _ = bf16_engine.rows(chat, bike_history, reference_prompt=chat)
    replies = bf16_engine.llm.generate([plugged, plain], guided)
    assert len(replies) == 2 and all(replies)
    tokens = bf16_engine.llm._generate_tokens([Row(plain.prompt_ids)], options, None)
    assert len(tokens[0]) == 6
