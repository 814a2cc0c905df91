"""The key/value cache with room for the reply: the same keys as transformers' concatenating cache, written in
place, and the same generated tokens on the real SmolLM2."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from persona_demo.engine import generation
from persona_demo.engine.generation import GenerationOptions, Row
from persona_demo.engine.kv_cache import RoomyLayer, roomy_cache
from persona_demo.tasks.persona_prompt import persona_messages

LONG_TEXTS = [
    f"Day {n}: I cycled to the market for fresh flour and baked a dark rye loaf." for n in range(12)
]


def _steps(n: int, length: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(2, 3, length, 4), torch.randn(2, 3, length, 4)) for _ in range(n)]


def test_a_roomy_layer_holds_what_concatenation_holds_and_writes_steps_in_place():
    roomy, plain = RoomyLayer(room=4), DynamicLayer()
    prompt = (torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4))
    roomy.update(*prompt)
    plain.update(*prompt)
    start = roomy.keys.data_ptr()
    for keys, values in _steps(4):
        got = roomy.update(keys, values)
        want = plain.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert roomy.keys.data_ptr() == start  # four steps fit the room: no copy of the cache
    assert roomy.get_seq_length() == 9
    keys, values = _steps(1)[0]
    got = roomy.update(keys, values)  # past the room: grows, keeps the contents
    assert torch.equal(got[0], plain.update(keys, values)[0]) and roomy.get_seq_length() == 10


def test_a_roomy_layer_stays_right_after_the_cache_is_cropped_or_reordered():
    roomy, plain = RoomyLayer(room=8), DynamicLayer()
    for keys, values in _steps(3, length=2):
        roomy.update(keys, values)
        plain.update(keys, values)
    for layer in (roomy, plain):
        layer.crop(-1)
        layer.batch_select_indices(torch.tensor([1, 0]))
    keys, values = _steps(1)[0]
    got, want = roomy.update(keys, values), plain.update(keys, values)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_the_roomy_cache_is_filled_with_a_prefilled_prompt(engine):
    data = [(torch.randn(1, 3, 6, 64), torch.randn(1, 3, 6, 64)) for _ in engine.llm.model.model.layers]
    room = torch.zeros(1, 3, 5, 64)
    buffers = [(torch.cat([keys, room], -2), torch.cat([values, room], -2)) for keys, values in data]
    cache = roomy_cache(engine.llm.model.config, 5, buffers, length=6)
    assert cache.layers[-1].keys.data_ptr() == buffers[-1][0].data_ptr()  # taken over, not copied
    assert cache.get_seq_length() == 6
    assert all(isinstance(layer, RoomyLayer) for layer in cache.layers)
    assert torch.equal(cache.layers[-1].keys, data[-1][0])


def test_generation_with_room_gives_the_tokens_of_the_concatenating_cache(engine, monkeypatch, bike_history):
    """The side-by-side pair (one prefill for both rows) and a pair prefilled row by row (a long persona prompt
    beside a short one)."""
    plugged, plain, _ = engine.rows("Write a short post about your weekend.", bike_history)
    long = Row(
        engine.llm.prompt_ids(persona_messages([{"role": "user", "content": "Write a post."}], LONG_TEXTS))
    )
    short = Row(engine.llm.prompt_ids("Hi!"))
    embeds, mask = engine.llm.batch([long, short], left_pad=True)
    assert (
        engine.llm.prefilled(embeds, mask, room=1) is not None
    )  # the second batch takes the row-by-row path
    options = GenerationOptions(max_new_tokens=20)
    batches = ([plugged, plain], [long, short])
    with_room = [engine.llm._generate_tokens(rows, options, None) for rows in batches]

    def concatenating(config: object, room: int, prompt: list | None = None, length: int = 0) -> DynamicCache:
        filled = [(keys[..., :length, :], values[..., :length, :]) for keys, values in prompt or []]
        return DynamicCache(ddp_cache_data=filled or None, config=config)

    monkeypatch.setattr(generation, "roomy_cache", concatenating)
    assert [engine.llm._generate_tokens(rows, options, None) for rows in batches] == with_room
    assert all(tokens for batch in with_room for tokens in batch)
