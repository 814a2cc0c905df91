"""A key/value cache that appends a decoding step in place instead of copying the whole cache.

transformers' `DynamicLayer` grows by `torch.cat([cache, new])`, so every decoding step copies every layer's
keys and values: for a chat turn (a ~770-token persona prompt, three rows, 64 new tokens) that is ~115 MB per
step and ~0.8 s of a ~3.6 s turn on a 2-core CPU. `RoomyLayer` allocates room for the prompt and every token
`generate` may add when it first sees the prompt, writes each step's keys into that room and hands attention a
view of the filled part, so a step copies only its own keys. The attention arithmetic is unchanged (same
values, same shapes).
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
    config: object, room: int, data: list[tuple[torch.Tensor, torch.Tensor]] | None = None
) -> DynamicCache:
    """A `DynamicCache` of `RoomyLayer`s with room for `room` new positions after the prompt (optionally filled
    with a prefilled prompt's keys and values per layer)."""
    cache = DynamicCache(config=config)  # type: ignore[arg-type]
    if not all(type(layer) is DynamicLayer for layer in cache.layers):
        return DynamicCache(ddp_cache_data=data, config=config) if data else cache  # type: ignore[arg-type]
    cache.layers = [RoomyLayer(room) for _ in cache.layers]
    for layer, (keys, values) in zip(cache.layers, data or []):
        layer.update(keys, values)
    return cache
