"""Rows of very different lengths are prefilled one by one, then decoded together: the same replies as one
padded batch. Real SmolLM2 with exact fp32 linear layers (`plain_linears`): with fp16-weight decoding the
last prompt position runs as a few-row step in one path and inside the full prompt in the other, so a near-tie
may round differently (half_copies.py)."""

from __future__ import annotations

import dataclasses

from persona_demo.engine.generation import GenerationOptions, Row
from persona_demo.engine.half_copies import plain_linears
from persona_demo.tasks.persona_prompt import persona_messages

LONG_TEXTS = [
    f"Day {n}: I cycled to the market for fresh flour and baked a dark rye loaf." for n in range(12)
]


def test_a_long_persona_prompt_and_short_rows_give_the_same_replies_as_one_padded_batch(engine):
    llm = engine.llm
    long = llm.prompt_ids(persona_messages([{"role": "user", "content": "Write a post."}], LONG_TEXTS))
    rows = [Row(long, reference_ids=llm.prompt_ids("Write a post.")), Row(llm.prompt_ids("Hi!"))]
    embeds, mask = llm.batch(rows, left_pad=True)
    assert llm.prefilled(embeds, mask, room=8) is not None  # each row runs alone
    options = GenerationOptions(max_new_tokens=16, persona_guidance=2.0, no_repeat_ngram_size=3)
    with plain_linears(llm.model):
        each = llm._generate_tokens(rows, options, None)
        padded = llm._generate_tokens(rows, dataclasses.replace(options, prefill_each_row=False), None)
    assert each == padded and all(each)


def test_hidden_soft_positions_are_skipped_like_padding(engine, bike_history):
    """A persona with no history hides its soft tokens (mask 0): the per-row prefill leaves them out too."""
    plugged, plain, _ = engine.rows("Write a short post.", bike_history)
    plugged.soft_mask = plugged.soft_mask * 0
    rows = [plugged, Row(plain.prompt_ids[:3] + plain.prompt_ids[-3:])]
    options = GenerationOptions(max_new_tokens=8)
    assert engine.llm.prefilled(*engine.llm.batch(rows, left_pad=True), room=8) is not None
    with plain_linears(engine.llm.model):
        each = engine.llm._generate_tokens(rows, options, None)
        padded = engine.llm._generate_tokens(rows, dataclasses.replace(options, prefill_each_row=False), None)
    assert each == padded
