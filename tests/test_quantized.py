"""The 4-bit nf4 path (what a consumer GPU runs), exercised on CPU through bitsandbytes' CPU backend.

No GPU here, so this keeps the quantized code path from rotting; VRAM and speed on a GPU are measured by
the bench when one is available.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def nf4_engine(settings, loaded_encoder):
    from dataclasses import replace

    from persona_demo.engine.engine import PersonaEngine
    from persona_demo.engine.models import load_llm

    nf4 = replace(settings, quantization="nf4", device="cpu")
    return PersonaEngine(load_llm(nf4), loaded_encoder, settings=nf4)


def test_nf4_llm_is_quantized_and_serves_the_shipped_plug(nf4_engine, settings, bike_history):
    import bitsandbytes as bnb

    from persona_demo.engine.generation import GenerationOptions

    llm = nf4_engine.loaded_llm
    assert llm.quantization == "nf4"
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in llm.model.modules())
    nf4_engine.load_plug(settings.plugs_dir / "huffpost_headline.safetensors")  # plugs fit the nf4 model
    result = nf4_engine.compare(
        "Write a headline about a new bike lane.", bike_history, GenerationOptions(max_new_tokens=8)
    )
    assert result.with_plug.strip() and result.without_plug.strip()
    assert len(result.weights) == len(bike_history)
