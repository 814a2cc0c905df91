"""What every panel shares: user-facing errors, the per-session state, and small presentation helpers."""

from __future__ import annotations

import functools
import html
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import torch

from ...engine.generation import GenerationOptions
from ...engine.sentence_end import ends_sentence
from ...errors import PersonaDemoError
from ..service import StudioService

log = logging.getLogger(__name__)

MAP_EVENT = {"api_visibility": "private", "concurrency_id": "map", "concurrency_limit": None}
"""Map redraws are quick (PCA, then UMAP once warmed up) and must never queue behind generation."""


@dataclass(frozen=True)
class Session:
    """Per-browser-session state: one user's selection never leaks into another's."""

    current: gr.State
    """The selected persona's id."""
    previous_vector: gr.State
    """Its map embedding before the last edit (the map's "moved from" marker)."""
    map_tick: gr.State
    """Every redraw request bumps this; ONE listener draws, `always_last`, so a slow old map can never
    overwrite a newer one."""

    @classmethod
    def create(cls) -> Session:
        return cls(gr.State(None), gr.State(None), gr.State(0))


def _as_gradio_error(exc: BaseException) -> gr.Error:
    """Every failure becomes a message a person can read; details go to the log, never to the page.

    A rejected action (bad input) is logged as one line; only an unexpected failure logs its traceback.
    Messages quote user input (persona names...) and gradio renders them as HTML: escape them.
    """
    if isinstance(exc, PersonaDemoError):
        log.info("rejected: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return gr.Error(html.escape(str(exc)), print_exception=False)
    if isinstance(exc, torch.OutOfMemoryError):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the freed blocks back so the next request can run
        log.warning("out of memory: %s", exc)
        return gr.Error(
            "The model ran out of memory: try fewer new tokens or a shorter input.", print_exception=False
        )
    log.exception("studio action failed")
    return gr.Error(
        f"Something went wrong ({type(exc).__name__}); nothing was changed. The app keeps running.",
        print_exception=False,
    )


def notify(message: str) -> None:
    """A toast with user text shown literally."""
    gr.Info(html.escape(message))


def user_errors(fn: Callable) -> Callable:
    """Wrap a callback (plain or generator) so any exception reaches the user as a gradio message."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - converted to a user-facing message
                raise _as_gradio_error(exc) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - converted to a user-facing message
            raise _as_gradio_error(exc) from None

    return wrapper


def persona_choices(service: StudioService, search: str = "") -> list[tuple[str, int]]:
    """The persona dropdown's entries: "name (items)" → id."""
    return [(f"{p.name} ({p.item_count})", p.id) for p in service.personas(search)]


def history_view(service: StudioService, persona_id: int | None):
    """The history table's rows and the item picker's choices for a persona."""
    if persona_id is None:
        return [], gr.update(choices=[], value=None)
    items = service.history(persona_id)
    rows = [[i + 1, item.text] for i, item in enumerate(items)]
    labels = [(f"{i + 1}. {item.text[:60]}", item.id) for i, item in enumerate(items)]
    return rows, gr.update(choices=labels, value=None)


def speed_note(
    service: StudioService, seconds: float, outputs: list[str], options: GenerationOptions | None = None
) -> str:
    """Elapsed time and new tokens per second of one side-by-side answer (both columns together), and a word
    when a reply used up its room to end a sentence and still stopped mid-sentence."""
    counts = [service.engine.llm.count_tokens(text) for text in outputs]
    rate = f", {sum(counts) / seconds:.1f} tokens/s" if seconds > 0 else ""
    note = f"*Both columns: {sum(counts)} new tokens in {seconds:.1f} s{rate}.*"
    if options is not None and any(
        count > options.max_new_tokens and not ends_sentence(text) for count, text in zip(counts, outputs)
    ):
        note += " *A reply stopped at the length limit mid-sentence: raise max new tokens to let it finish.*"
    return note


def clear_file() -> None:
    """Empties an upload zone once its file is handled (added, or rejected with a message): None clears it."""


def bump(tick: int | None) -> int:
    """Request a map redraw (see `Session.map_tick`)."""
    return (tick or 0) + 1


def md_escape(text: str) -> str:
    """Show user text literally inside Markdown (no HTML, no formatting)."""
    escaped = html.escape(text, quote=False)
    for ch in "\\`*_{}[]()#+-.!|>~":
        escaped = escaped.replace(ch, "\\" + ch)
    return escaped
