"""The "without plug" column is the plain model, and a generation can be stopped. Real SmolLM2, MiniLM, the
shipped plugs and a real SQLite store."""

from __future__ import annotations

import dataclasses
import itertools
import threading

import pytest

pytestmark = pytest.mark.slow

from persona_demo.app import args as page
from persona_demo.app.service import PersonaParts
from persona_demo.app.tasks import FREE_PROMPT
from persona_demo.engine.generation import GenerationOptions, Row
from persona_demo.tasks.persona_prompt import not_to_echo

TEXTS = [
    "Sunday I baked three loaves of rye and burned the last one, again.",
    "My sourdough starter is called Gerald and he is older than my car.",
    "Flour everywhere. The cat is now white. Worth it for these croissants.",
]
MESSAGE = "What have you been up to lately?"


@pytest.fixture
def baker(studio_service) -> int:
    pid = studio_service.create_persona("Baker")
    for text in TEXTS:
        studio_service.add_text(pid, text)
    return pid


def persona_sides():
    """Every persona-side setting that must leave the plain column alone."""
    for soft, texts, strength, guidance in itertools.product(
        (True, False), (True, False), (1.0, 2.5), (0.0, 2.0)
    ):
        yield PersonaParts(soft_tokens=soft, retrieved_texts=texts), strength, guidance


def test_the_plain_chat_column_is_the_plain_model_alone_whatever_the_persona_side(studio_service, baker):
    llm = studio_service.engine.llm
    options = page.reply_defaults(24)
    turn = [{"role": "user", "content": MESSAGE}]
    alone_row = Row(llm.prompt_ids(turn), avoid_ids=llm.echo_sources(not_to_echo(MESSAGE)))
    (alone,) = llm.generate([alone_row], options)
    assert alone
    for parts, strength, guidance in persona_sides():
        side = dataclasses.replace(options, persona_guidance=guidance)
        *_, (persona, plain) = studio_service.stream_chat(baker, [], [], MESSAGE, side, strength, parts)
        assert plain == alone, (parts, strength, guidance, persona)


@pytest.mark.parametrize("task", [FREE_PROMPT, "huffpost_headline"])
def test_the_plain_compare_column_is_the_plain_model_alone(studio_service, baker, task):
    llm = studio_service.engine.llm
    options = page.reply_defaults(16)
    text = "Write a short post about your week." if task == FREE_PROMPT else "City bakery wins award for rye."
    loaded = studio_service.task(task)
    avoid = llm.echo_sources(not_to_echo(text)) if task == FREE_PROMPT else []
    guidance = options.persona_guidance if task == FREE_PROMPT else 0.0
    solo = dataclasses.replace(options, persona_guidance=guidance)
    (alone,) = llm.generate([Row(llm.prompt_ids(loaded.task.prompt(text)), avoid_ids=avoid)], solo)
    for parts, strength, guidance in persona_sides():
        side = dataclasses.replace(options, persona_guidance=guidance)
        *_, (result, _) = studio_service.stream_compare(baker, task, text, side, strength, parts)
        assert result.without_plug == alone, (parts, strength, guidance, result.with_plug)


def test_closing_a_stream_stops_the_generation(studio_service, baker):
    """A Stop button (or a client that left) closes the stream: decoding ends at the next step instead of
    running on to max new tokens for nobody."""
    llm = studio_service.engine.llm
    steps = []
    hook = llm.model.register_forward_hook(lambda *_: steps.append(1))
    try:
        options = GenerationOptions(max_new_tokens=200, min_new_tokens=200)
        stream = studio_service.stream_chat(baker, [], [], MESSAGE, options)
        for _ in itertools.islice(stream, 3):
            pass
        stream.close()
        taken = len(steps)
        assert not any(t.name == "persona-demo-generate" and t.is_alive() for t in threading.enumerate())
    finally:
        hook.remove()
    assert taken < 60, f"{taken} forward passes: the generation ran on after the stream was closed"
