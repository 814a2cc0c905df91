"""Replies that end where a sentence ends: a length limit alone cut answers mid-word ("I'm", "I'll")."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from transformers import StoppingCriteria

SENTENCE_END = re.compile(r"""[.!?…][\s"'”’)\]*_~]*$|[\r\n]\s*$""")
"""A sentence's last mark, optionally followed by closing quotes or brackets; or a line break."""


def ends_sentence(text: str) -> bool:
    """True when `text` (as decoded, trailing spaces included) stops at the end of a sentence or a line."""
    return bool(SENTENCE_END.search(text))


class FinishSentence(StoppingCriteria):
    """After `limit` new tokens, each row ends at its first sentence end; `generate`'s own length limit
    (`limit` + the room the caller gave) ends a row that never reaches one.

    Rows from `rows` on (guidance's reference rows, forced along with their guided row) end once every row
    before them ended, so they never keep the batch running on their own."""

    def __init__(self, tokenizer: object, limit: int, rows: int, eos_token_id: int) -> None:
        self.tokenizer = tokenizer
        self.limit = limit
        self.rows = rows
        self.eos_token_id = eos_token_id
        self.start: int | None = None
        """Width of `input_ids` before the first new token (0 for inputs_embeds, 1 with a decoder start)."""
        self.ended: set[int] = set()

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        if self.start is None:  # called after every step: the first call sees one new token
            self.start = input_ids.shape[1] - 1
        generated = input_ids[:, self.start :].tolist()
        if len(generated[0]) >= self.limit:
            for row, tokens in enumerate(generated[: self.rows]):
                if row not in self.ended and self._finished(tokens):
                    self.ended.add(row)
        if len(self.ended) >= min(self.rows, len(generated)):
            self.ended.update(range(len(generated)))
        done = [row in self.ended for row in range(len(generated))]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _finished(self, tokens: Sequence[int]) -> bool:
        if self.eos_token_id in tokens:
            return True
        return ends_sentence(self.tokenizer.decode(tokens, skip_special_tokens=True))
