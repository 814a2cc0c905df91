"""Check every argument that arrives at an endpoint: the API accepts any JSON, not only what widgets send.

A wrong type or an out-of-range number must become a message naming the setting, not a TypeError deep in
SQLite or torch (which the user would only see as "something went wrong").
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..engine.generation import GenerationOptions
from ..errors import PersonaDemoError

SQLITE_MAX_ID = 2**63 - 1
MAX_NEW_TOKENS = (4, 256)
"""The slider's range; the API may not ask for more than the page can. Each range here is the slider's and
the API's alike."""
STRENGTH = (0.0, 3.0)
TEMPERATURE = (0.05, 2.0)
TOP_P = (0.05, 1.0)
REPETITION_PENALTY = (1.0, 2.0)
NO_REPEAT_NGRAM = (0, 16)
PERSONA_GUIDANCE = (0.0, 5.0)
ECHO_NGRAM = (0, 16)

REPLY_REPETITION_PENALTY = 1.15
"""The studio's default: a 135M model left alone loops ("I'm going to the beach with my family" x3)."""
REPLY_NO_REPEAT_NGRAM = 3
"""The studio's default: no 3 tokens twice in one reply."""
REPLY_ECHO_NGRAM = 4
"""The studio's default for chat and free prompts: no 4 tokens in a row copied from the message or the
persona prompt's instruction (short overlaps such as "been up to" stay possible)."""
REPLY_TOP_P = 0.9
REPLY_SENTENCE_ROOM = 32
"""Every answer on the page: past max new tokens, up to this many more tokens to end the sentence it is in
(48 tokens alone cut replies mid-word: "I'm", "I'll")."""
REPLY_PERSONA_GUIDANCE = 1.0
"""Chat and free prompts: amplify what the persona changes in each next-token distribution (0 = off). Chosen
on dev bloggers' typed personas with every measure at once: 1 gave the same or better topic and style
attribution than 2, with replies closer to the question (docs/persona-voice.md)."""


def row_id(value: Any, what: str = "persona") -> int | None:
    """A persona/item id from a dropdown or the API; None when nothing is picked."""
    if value is None or value == "":
        return None
    number: Any = value
    # Not str.isdigit: it accepts "²" and "--5", which int() refuses (a crash instead of a clear message).
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        number = int(value.strip())
    if isinstance(number, float) and math.isfinite(number) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= SQLITE_MAX_ID:
        raise PersonaDemoError(f"{_show(value)} is not a {what} id.")
    return number


def text(value: Any, what: str) -> str:
    """Text from a textbox; None counts as empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PersonaDemoError(f"The {what} must be text, not {type(value).__name__}.")
    return value


def number(value: Any, what: str, bounds: tuple[float, float], *, integer: bool = False) -> float:
    """A slider value: a finite number within the slider's range."""
    low, high = bounds
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high or (integer and float(value) != int(value)):
        kind = "a whole number" if integer else "a number"
        raise PersonaDemoError(f"{what} must be {kind} from {low:g} to {high:g} (got {_show(value)}).")
    return int(value) if integer else float(value)


def flag(value: Any, what: str) -> bool:
    """A checkbox: true or false."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise PersonaDemoError(f"{what} must be true or false (got {_show(value)}).")


def chat_history(value: Any) -> list[dict[str, Any]]:
    """A chatbot's messages: a list (non-message entries are dropped later by `_clean_chat`)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise PersonaDemoError("The chat history must be a list of messages.")
    return value


def file_path(value: Any, what: str) -> str | None:
    """An uploaded file as gradio hands it over: a path string (or a dict with one)."""
    if isinstance(value, dict):
        value = value.get("path")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\x00" in value:  # a NUL byte is no path (os.stat raises ValueError)
        raise PersonaDemoError(f"Choose a file to {what}.")
    return value


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def reply_defaults(max_new_tokens: int) -> GenerationOptions:
    """The page's default decoding for chat and free prompts (greedy), for scripts that reproduce the page."""
    return GenerationOptions(
        max_new_tokens=max_new_tokens,
        sentence_room=REPLY_SENTENCE_ROOM,
        top_p=REPLY_TOP_P,
        repetition_penalty=REPLY_REPETITION_PENALTY,
        no_repeat_ngram_size=REPLY_NO_REPEAT_NGRAM,
        echo_ngram_size=REPLY_ECHO_NGRAM,
        persona_guidance=REPLY_PERSONA_GUIDANCE,
    )
