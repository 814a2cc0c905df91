"""A key/value cache that appends a decoding step in place instead of copying the whole cache.

transformers' `DynamicLayer` grows by `torch.cat([cache, new])`, so every decoding step copies every layer's
keys and values: for a chat turn (a ~770-token persona prompt, three rows, 64 new tokens) that is ~115 MB per
step and ~0.8 s of a ~3.6 s turn on a 2-core CPU. `RoomyLayer` allocates room for the prompt and every token
`generate` may add when it first sees the prompt (or takes over buffers a row-by-row prefill wrote with that
room, `FrozenLLM.prefilled`), writes each step's keys into that room and hands attention a view of the filled
part, so a step copies only its own keys. The attention arithmetic is unchanged (same values, same shapes).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class RoomyLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views into buffers with room for `room` more positions."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        if not self._owns_views() or end > self._key_buffer.shape[-2]:  # type: ignore[union-attr]
            self._key_buffer = _with_room(self.keys, key_states, length, end + self.room)
            self._value_buffer = _with_room(self.values, value_states, length, end + self.room)
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[..., length:end, :] = key_states
        self._value_buffer[..., length:end, :] = value_states
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values

    def adopt(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Take over buffers whose first `length` positions hold a prefilled prompt, as they are (no copy); their
        positions past `length` are the room."""
        self.lazy_initialization(keys, values)
        self._key_buffer, self._value_buffer = keys, values
        self.keys, self.values = keys[..., :length, :], values[..., :length, :]

    def _owns_views(self) -> bool:
        """Whether `keys` is still the view this layer handed out (crop, reorder or batch selection replace it)."""
        return (
            self._key_buffer is not None
            and self.keys is not None
            and self.keys.numel() > 0
            and self.keys.data_ptr() == self._key_buffer.data_ptr()
            and self.keys.shape[:-2] == self._key_buffer.shape[:-2]
        )

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()


def _with_room(filled: torch.Tensor | None, new: torch.Tensor, length: int, capacity: int) -> torch.Tensor:
    """A buffer of `capacity` positions shaped like `new`, holding the first `length` positions of `filled`."""
    buffer = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
    if length and filled is not None:
        buffer[..., :length, :] = filled
    return buffer


def roomy_cache(
    config: object,
    room: int,
    prompt: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    length: int = 0,
) -> DynamicCache:
    """A `DynamicCache` of `RoomyLayer`s with room for `room` new positions after the prompt. `prompt`: per
    layer, key and value buffers whose first `length` positions hold a prefilled prompt, taken over as they are.
    Models with other layer kinds (sliding windows) keep transformers' own layers."""
    cache = DynamicCache(config=config)  # type: ignore[arg-type]
    if not all(type(layer) is DynamicLayer for layer in cache.layers):
        if not prompt:
            return cache
        filled = [(keys[..., :length, :], values[..., :length, :]) for keys, values in prompt]
        return DynamicCache(ddp_cache_data=filled, config=config)  # type: ignore[arg-type]
    cache.layers = [RoomyLayer(room) for _ in cache.layers]
    for layer, (keys, values) in zip(cache.layers, prompt or []):
        layer.adopt(keys, values, length)
    return cache


def zeros_with_room(like: torch.Tensor, rows: int, capacity: int) -> torch.Tensor:
    """A zeroed [rows, heads, capacity, dim] buffer for the cache of one layer shaped like `like`; positions left
    at zero are padding, which the attention mask hides."""
    return like.new_zeros((rows, *like.shape[1:-2], capacity, like.shape[-1]))
