"""The copy guard: a persona reply never reproduces 8 words in a row of the persona's texts, compared as
lower-cased words without punctuation. Real SmolLM2 tokenizer and model."""

from __future__ import annotations

import math

import pytest
import torch

from persona_demo.engine.generation import GenerationOptions, Row
from persona_demo.engine.reply_guards import WordRunGuard, longest_copied_run
from persona_demo.errors import PersonaDemoError

TEXT = "Yesterday I walked the dog, along the river, to the old stone bridge and back home."


def banned_text(guard: WordRunGuard, tokenizer, reply: str) -> set[str]:
    return {tokenizer.decode([t]) for t in guard.banned_tokens(reply, 0)}


def test_the_next_word_of_a_copied_run_is_banned_whatever_the_case_and_punctuation(loaded_llm):
    tok = loaded_llm.tokenizer
    guard = WordRunGuard(tok, [[(TEXT, 8, True)]])
    # 7 words of the text, commas dropped and capitals changed: the 8th ("to") may not follow
    shown = banned_text(guard, tok, "yesterday i Walked the dog along the river")
    assert " to" in shown and " To" in shown and " t" in shown  # the word, and a piece that could become it
    assert " today" not in shown and " the" not in shown
    # mid-word: "riv" may not be finished as "river" after six copied words
    mid = banned_text(guard, tok, "Yesterday I walked the dog along the riv")
    assert "er" in mid
    assert banned_text(guard, tok, "Today we strolled the dog along the river") == set()  # 2 words changed


def test_rows_without_sources_are_left_alone(loaded_llm):
    guard = WordRunGuard(loaded_llm.tokenizer, [[(TEXT, 8, True)], []])
    ids = loaded_llm.tokenizer(
        "Yesterday I walked the dog along the river", add_special_tokens=False
    ).input_ids
    scores = guard(torch.tensor([ids, ids]), torch.zeros(2, len(loaded_llm.tokenizer)))
    assert (scores[0] == -math.inf).any() and not (scores[1] == -math.inf).any()


def test_a_reply_asked_to_recite_a_text_does_not_copy_eight_words_of_it(engine):
    llm = engine.llm
    prompt = f"Repeat this sentence exactly, word for word: {TEXT}"
    row = Row(llm.prompt_ids(prompt))
    (free,) = llm.generate([row], GenerationOptions(max_new_tokens=40, copy_word_run=0))
    assert longest_copied_run(free, [TEXT]) >= 8  # without the guard the model recites
    guarded = Row(llm.prompt_ids(prompt), copy_sources=[TEXT.replace(",", "")])
    (reply,) = llm.generate([guarded], GenerationOptions(max_new_tokens=40))
    assert reply.strip() and longest_copied_run(reply, [TEXT]) < 8


def test_the_run_length_is_checked():
    with pytest.raises(PersonaDemoError, match="copied-run"):
        GenerationOptions(copy_word_run=1).validated()


def test_a_short_text_may_not_come_back_whole_and_each_source_keeps_its_run(loaded_llm):
    tok = loaded_llm.tokenizer
    guard = WordRunGuard(
        tok, [[("I love my cat so much.", 8, True), ("Write a blog post.", 4, False), ("hello", 8, True)]]
    )
    assert " much" in banned_text(guard, tok, "Well, I LOVE my cat, so")  # the whole 6-word text
    assert " post" in banned_text(guard, tok, "write a blog")  # a request, 4 words, any case
    assert banned_text(guard, tok, "I love my cat") == set()  # 4 words of the 6: allowed
    assert banned_text(guard, tok, "") == set()  # a one-word text ("hello") may be said


def test_a_persona_text_retyped_with_one_word_changed_or_its_opening_counts_as_a_copy(loaded_llm):
    tok = loaded_llm.tokenizer
    text = "new gpu finally arrived!!! 144fps on ultra, im never going outside again"
    guard = WordRunGuard(tok, [[(text, 8, True)], [(text, 4, False)]])
    # "am" for "im": still the text, so the 8th word may not follow
    assert " never" in banned_text(guard, tok, "new gpu finally arrived 144fps on ultra, am")
    assert " finally" in banned_text(guard, tok, "new gpu")  # a reply may not open as a persona text opens
    assert " finally" not in banned_text(guard, tok, "my new gpu")  # elsewhere three words are fine
    echo = {tok.decode([t]) for t in guard.banned_tokens("new gpu finally arrived 144fps on ultra, am", 1)}
    assert " never" not in echo  # echo texts (the message, the requests) count exact runs only
