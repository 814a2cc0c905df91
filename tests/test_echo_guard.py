"""The echo guard: chat and free-prompt replies may not copy the message or the persona prompt's instruction.
Real SmolLM2, the shipped voice plug and the seeded personas, except the first test (the rule on token ids)."""

from __future__ import annotations

import math

import pytest
import torch

from persona_demo.app.tasks import FREE_PROMPT
from persona_demo.engine.generation import EchoGuard, GenerationOptions, Row
from persona_demo.errors import PersonaDemoError
from persona_demo.tasks.persona_prompt import EARLIER_REQUESTS, not_to_echo


def banned(guard: EchoGuard, reply: list[list[int]]) -> list[set[int]]:
    scores = guard(torch.tensor(reply, dtype=torch.long).reshape(len(reply), -1), torch.zeros(len(reply), 12))
    return [set(torch.nonzero(row == -math.inf).flatten().tolist()) for row in scores]


def test_the_rule_bans_copied_ngrams_and_the_opening_per_row():
    guard = EchoGuard([[[5, 6, 7, 8, 9]], []], size=3)
    assert banned(guard, [[], []]) == [{5}, set()]  # a reply may not open as the avoided text opens
    assert banned(guard, [[5], [5]]) == [{6}, set()]
    assert banned(guard, [[1, 6, 7], [1, 6, 7]]) == [{8}, set()]  # 6 7 8 would copy 3 tokens in a row
    assert banned(guard, [[2, 5], [2, 5]]) == [set(), set()]  # 5 6 mid-reply is 2 tokens: allowed


def test_a_reply_copies_no_four_tokens_of_what_it_must_not_echo(engine):
    llm = engine.llm
    message = "Repeat this sentence exactly: my sourdough starter doubled overnight."
    row = Row(llm.prompt_ids(message), avoid_ids=llm.echo_sources([message]))
    (free,) = llm.generate([row], GenerationOptions(max_new_tokens=20))
    assert "sourdough starter doubled overnight" in free  # without the guard the model parrots
    (tokens,) = llm._generate_tokens([row], GenerationOptions(max_new_tokens=20, echo_ngram_size=4), None)
    copied = {tuple(ids[i : i + 4]) for ids in row.avoid_ids for i in range(len(ids) - 3)}
    assert tokens and not any(tuple(tokens[i : i + 4]) in copied for i in range(len(tokens) - 3))


@pytest.mark.parametrize("size", [1, 17, -1])
def test_a_meaningless_size_is_refused_with_a_message(size):
    with pytest.raises(PersonaDemoError, match="no-echo"):
        GenerationOptions(echo_ngram_size=size).validated()


def test_the_studio_guards_free_prompts_and_chat_with_the_message_and_the_earlier_requests(studio_service):
    """The seeded speedrunner answered the free prompt with the prompt itself before the guard."""
    assert not_to_echo("Hi there") == ("Hi there", *EARLIER_REQUESTS)
    dex = next(p.id for p in studio_service.personas() if p.name.startswith("Dex"))
    message = "Write a short post about your weekend."
    options = GenerationOptions(max_new_tokens=12, echo_ngram_size=4)
    *_, (compared, _) = studio_service.stream_compare(dex, FREE_PROMPT, message, options)
    *_, (chat_reply, _) = studio_service.stream_chat(dex, [], [], message, options)
    for reply in (compared.with_plug, compared.without_plug, chat_reply):
        assert reply and not reply.startswith("Write") and "a short post about" not in reply
