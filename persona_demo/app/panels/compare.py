"""The "Compare" tab: one input, a task, the same frozen LLM with and without the persona side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from .. import args as arg
from ..service import StudioService
from ..space import attention_figure
from .clock import RunClock, next_run, run_key
from .common import Session, speed_note, user_errors
from .persona import PersonaPanel, stop_on_switch
from .settings import SettingsPanel, options, parts


@dataclass(frozen=True)
class ComparePanel:
    task: gr.Radio
    task_note: gr.Markdown
    user_input: gr.Textbox
    generate_btn: gr.Button
    stop_btn: gr.Button
    """Cancels the running comparison (the engine is asked to stop its generation thread)."""
    status: gr.Markdown
    """The running time, then the speed line once the answer is complete (`clock`)."""
    run: gr.State
    """This browser tab's count of its Generate clicks: pairs an answer with its clock."""
    without: gr.Textbox
    with_plug: gr.Textbox
    attention_plot: gr.Plot


EXAMPLE_INPUTS = {
    "huffpost_headline": (
        "The city council voted on Tuesday to turn the old harbour warehouses into a public market with room "
        "for forty small food stalls. Work starts in spring; the first stalls should open next autumn."
    ),
    "acl_title": (
        "We show that a small language model can follow a person's writing style when a short summary of "
        "their past posts is added to its input, and that this helps most for people with few posts."
    ),
    "amazon_mi_rating": (
        "The stand mixer is quiet and kneads bread dough well, but the bowl scratches easily and the lid "
        "stopped fitting after a month."
    ),
    "free": "Write a short post about your weekend.",
}
"""A ready input per task: the box starts with one, so a first visit needs a single click on Generate."""


def example_input(task_key: str) -> str:
    return EXAMPLE_INPUTS.get(task_key, "")


def build_compare_panel(service: StudioService) -> ComparePanel:
    first_key = service.task_choices()[0][1]
    task = gr.Radio(service.task_choices(), value=first_key, label="task")
    first_task = service.task(first_key).task
    task_note = gr.Markdown(service.task_note(first_task.key), elem_id="task-note")
    user_input = gr.Textbox(
        value=example_input(first_key),
        label="input",
        lines=4,
        elem_id="prompt",
        placeholder=first_task.example,
    )
    with gr.Row():
        generate_btn = gr.Button("Generate", variant="primary", elem_id="run", scale=3)
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop", scale=1)
    status = gr.Markdown(elem_id="compare-status")
    run = gr.State(0)
    with gr.Row():
        without = gr.Textbox(label="without plug", lines=4, elem_id="without")
        with_plug = gr.Textbox(label="with plug (persona)", lines=4, elem_id="with")
    attention_plot = gr.Plot(label="attention over the history", elem_id="attention")
    return ComparePanel(
        task, task_note, user_input, generate_btn, stop_btn, status, run, without, with_plug, attention_plot
    )


def cleared() -> tuple[str, str, None, str]:
    """Empty columns, chart and status: what Compare shows when no answer belongs to the persona."""
    return "", "", None, ""


def wire_compare_panel(
    service: StudioService,
    panel: ComparePanel,
    settings: SettingsPanel,
    session: Session,
    personas: PersonaPanel,
    generation_concurrency: int,
) -> None:
    """`personas`: the persona column. An answer belongs to the persona it was made for: picking another one
    (select, create, duplicate, delete) stops a running comparison and empties every output area."""
    persona = personas.persona
    clock = RunClock()

    @user_errors
    def describe_task(task_key: str, current_input: str | None):
        """A task's own hint in the input box and what its output and plug mean, next to it; an empty box
        or another task's untouched example becomes this task's example."""
        chosen = service.task(task_key)
        keep = (current_input or "").strip() and current_input not in EXAMPLE_INPUTS.values()
        value = current_input if keep else example_input(task_key)
        return service.task_note(task_key), gr.update(placeholder=chosen.task.example, value=value)

    @user_errors
    def compare(
        current,
        task_key,
        user_input,
        max_new,
        strength,
        sample,
        temperature,
        top_p=arg.REPLY_TOP_P,
        repetition_penalty=arg.REPLY_REPETITION_PENALTY,
        no_repeat=arg.REPLY_NO_REPEAT_NGRAM,
        soft_tokens=True,
        own_texts=True,
        guidance=arg.REPLY_PERSONA_GUIDANCE,
        no_echo=arg.REPLY_ECHO_NGRAM,
        run=None,
        request: gr.Request = None,
    ):
        """Both columns, streamed. The status line is not an output (API clients get three values): the
        running time and the closing speed line reach it through `clock` (`run`: a State, not in the API)."""
        key = run_key(request, run)
        clock.start(key)
        started = time.perf_counter()
        closing = f"*Stopped after {time.perf_counter() - started:.1f} s.*"
        try:
            current, task_key = arg.row_id(current), arg.text(task_key, "task")
            user_input = arg.text(user_input, "input")
            opts = options(
                max_new, sample, temperature, top_p, repetition_penalty, no_repeat, guidance, no_echo
            )
            persona_parts = parts(soft_tokens, own_texts)
            strength = arg.number(strength, "persona strength", arg.STRENGTH)
            stream = service.stream_compare(
                current, task_key, user_input, opts, float(strength), persona_parts
            )
            yield "", "", None  # the last answer goes at once: what shows while this one runs is this one
            result = texts = None
            for result, texts in stream:
                closing = f"*Stopped after {time.perf_counter() - started:.1f} s.*"
                yield result.without_plug, result.with_plug, None
            closing = ""
            if result is not None:
                outputs = [result.without_plug, result.with_plug]
                closing = speed_note(service, time.perf_counter() - started, outputs, opts)
                yield *outputs, attention_figure(result.top_items(texts, k=5))
        except Exception:
            closing = ""  # the error shows as a message of its own
            raise
        finally:
            clock.finish(key, closing)

    panel.task.change(
        describe_task,
        [panel.task, panel.user_input],
        [panel.task_note, panel.user_input],
        api_visibility="private",
    )

    def tick(run: int, request: gr.Request):
        yield from clock.ticks(run_key(request, run))

    numbered = panel.generate_btn.click(
        next_run, panel.run, panel.run, queue=False, show_progress="hidden", api_visibility="private"
    )
    generation = numbered.then(
        compare,
        [
            session.current,
            panel.task,
            panel.user_input,
            *settings.first_inputs(),
            *settings.extra_inputs(),
            panel.run,
        ],
        [panel.without, panel.with_plug, panel.attention_plot],
        api_name="compare",
        show_progress="hidden",  # the status line shows the time instead (`clock`)
        concurrency_id="llm",
        concurrency_limit=generation_concurrency,
    )
    ticking = numbered.then(
        tick,
        panel.run,
        panel.status,
        api_visibility="private",
        show_progress="hidden",
        concurrency_id="clock",
        concurrency_limit=None,
    )
    outputs = [panel.without, panel.with_plug, panel.attention_plot, panel.status]
    panel.stop_btn.click(
        lambda: "*Stopped.*", None, panel.status, cancels=[generation, ticking], api_visibility="private"
    )
    persona.change(cleared, None, outputs, api_visibility="private")
    stop_on_switch(personas, [generation, ticking], outputs, '() => ["", "", null, ""]')
