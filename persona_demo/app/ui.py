"""The studio page (gr.Blocks): widgets wired to `StudioService`; no logic beyond presentation.

Per-browser-session state (the selected persona, its previous map position) lives in `gr.State`, so one
user's selection never leaks into another's. Generation events share one concurrency group ("llm") whose
limit comes from the settings: the queue, not the model, absorbs a crowd.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

from ..engine.generation import GenerationOptions
from ..errors import PersonaDemoError
from ..tasks.persona_prompt import cut_words
from . import args as arg
from .service import PersonaParts, StudioService
from .space import MapLayouts, attention_figure, map_csv, space_figure, umap_ready, warm_umap

log = logging.getLogger(__name__)

HOW_TO_USE = """# Persona Studio
A frozen LLM personalized by a Persona-Plug: one small plug reads a persona's texts and steers the model.

**How to use:** 1. pick a persona on the left, or create one and add texts it wrote (type them or upload a
file) · 2. *Chat as the persona* or *Compare* a task: the same model answers with and without the persona, side
by side · 3. the map shows where this persona sits among the others."""

HISTORY_SPACE = "history: mean of its texts' vectors"
PLUG_SPACE = "plug: P_u the LLM receives (Compare input)"
PLUG_SPACE_QUERY = "Write a post."
"""The input P_u is computed for when the Compare box is empty (the chat plug's content-free kind)."""

MAP_EVENT = {"api_visibility": "private", "concurrency_id": "map", "concurrency_limit": None}
"""Map redraws are quick (PCA, then UMAP once warmed up) and must never queue behind generation."""


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


def build_studio(service: StudioService, generation_concurrency: int = 1) -> gr.Blocks:
    """The whole page."""
    engine = service.engine
    warm_umap()  # no-op when `main` already started it

    # ------------------------------------------------------------------------------ presentation helpers
    layouts = MapLayouts()  # the map holds still between redraws

    def persona_choices(search: str = "") -> list[tuple[str, int]]:
        return [(f"{p.name} ({p.item_count})", p.id) for p in service.personas(search)]

    def history_view(persona_id: int | None):
        if persona_id is None:
            return [], gr.update(choices=[], value=None)
        items = service.history(persona_id)
        rows = [[i + 1, item.text] for i, item in enumerate(items)]
        labels = [(f"{i + 1}. {item.text[:60]}", item.id) for i, item in enumerate(items)]
        return rows, gr.update(choices=labels, value=None)

    def options(
        max_new: float,
        sample: bool,
        temperature: float,
        top_p: float = arg.REPLY_TOP_P,
        repetition_penalty: float = arg.REPLY_REPETITION_PENALTY,
        no_repeat: float = arg.REPLY_NO_REPEAT_NGRAM,
        guidance: float = arg.REPLY_PERSONA_GUIDANCE,
    ) -> GenerationOptions:
        return GenerationOptions(
            max_new_tokens=int(arg.number(max_new, "max new tokens", arg.MAX_NEW_TOKENS, integer=True)),
            do_sample=arg.flag(sample, "sample"),
            temperature=arg.number(temperature, "temperature", arg.TEMPERATURE),
            top_p=arg.number(top_p, "top-p", arg.TOP_P),
            repetition_penalty=arg.number(repetition_penalty, "repetition penalty", arg.REPETITION_PENALTY),
            no_repeat_ngram_size=int(
                arg.number(no_repeat, "no-repeat n-gram", arg.NO_REPEAT_NGRAM, integer=True)
            ),
            persona_guidance=arg.number(guidance, "persona guidance", arg.PERSONA_GUIDANCE),
        )

    def parts(soft_tokens: bool, retrieved_texts: bool) -> PersonaParts:
        return PersonaParts(arg.flag(soft_tokens, "soft tokens"), arg.flag(retrieved_texts, "own texts"))

    # --------------------------------------------------------------------------------------- callbacks
    @user_errors
    def search_personas(search: str, current: int | None):
        choices = persona_choices(arg.text(search, "search"))
        keep = current if any(v == current for _, v in choices) else None
        return gr.update(choices=choices, value=keep)

    @user_errors
    def select_persona(persona_id: int | None):
        """Load a persona: its history, the name box, a fresh map position."""
        persona_id = arg.row_id(persona_id)
        if persona_id is None:
            rows, items = history_view(None)
            return None, rows, items, "", "Pick or create a persona.", None
        persona = service.store.get_persona(int(persona_id))
        rows, items = history_view(persona.id)
        status = f"{_md_escape(persona.name)}: {persona.item_count} items"
        return persona.id, rows, items, persona.name, status, None

    @user_errors
    def create_persona(name: str, search: str):
        search = arg.text(search, "search")
        pid = service.create_persona(name)
        notify(f"Created persona {name.strip()!r}.")
        return gr.update(choices=persona_choices(search), value=pid)

    @user_errors
    def rename_persona(current: int | None, name: str, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        service.rename_persona(current, name)
        return gr.update(choices=persona_choices(search), value=current)

    @user_errors
    def duplicate_persona(current: int | None, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        pid = service.duplicate_persona(current)
        return gr.update(choices=persona_choices(search), value=pid)

    @user_errors
    def ask_delete(current: int | None):
        if current is None:
            raise PersonaDemoError("Pick a persona first.")
        persona = service.store.get_persona(int(current))
        return gr.update(
            visible=True
        ), f"Delete **{_md_escape(persona.name)}** and its {persona.item_count} items?"

    @user_errors
    def confirm_delete(current: int | None, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        service.delete_persona(current)
        notify("Persona deleted.")
        return gr.update(visible=False), gr.update(choices=persona_choices(search), value=None)

    @user_errors
    def export_persona(current: int | None):
        current = arg.row_id(current)
        return str(service.export_persona(current, Path(tempfile.mkdtemp(prefix="persona-export-"))))

    @user_errors
    def export_map(current: int | None, method: str, space_kind: str, plug_input: str):
        query, kind = map_space(space_kind, plug_input)
        data = service.space(arg.row_id(current), plug_query=query)
        if not data.ids:
            raise PersonaDemoError("The map is empty: add a text to a persona first.")
        folder = Path(tempfile.mkdtemp(prefix="persona-map-"))
        return str(map_csv(data, method.lower(), layouts, folder / "persona-map.csv", kind))

    @user_errors
    def import_personas(path: str | None, search: str, progress=gr.Progress()):  # noqa: B008 - gradio idiom
        path, search = arg.file_path(path, "import"), arg.text(search, "search")
        if not path:
            raise PersonaDemoError("Choose a file to import.")
        result = service.import_file(path, lambda done, total: progress((done, total), desc="importing"))
        notify(result.summary())
        value = result.persona_ids[0] if result.persona_ids else None
        return gr.update(choices=persona_choices(search), value=value), None

    def _after_edit(persona_id: int, update, previous, search: str):
        for (
            note
        ) in update.notes:  # a shortened or skipped text is said where the person looks, not only below
            if note.startswith(("Shortened", "Skipped")):
                gr.Warning(html.escape(note))
        rows, items = history_view(persona_id)
        choices = gr.update(choices=persona_choices(search), value=persona_id)
        return rows, items, update.status, previous, choices, ""

    @user_errors
    def add_text(current: int | None, text: str, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        text = arg.text(text, "text")
        previous = _current_vector(current)
        update = service.add_text(current, text)
        return _after_edit(update.persona_id, update, previous, search)

    @user_errors
    def upload_history(current: int | None, path: str | None, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        path = arg.file_path(path, "upload")
        if not path:
            raise PersonaDemoError("Choose a file to upload.")
        previous = _current_vector(current)
        update = service.upload(current, path)
        return (*_after_edit(update.persona_id, update, previous, search)[:5], None)

    @user_errors
    def pick_item(item_id: int | None):
        item_id = arg.row_id(item_id, "history item")
        return "" if item_id is None else service.store.get_item(int(item_id)).text

    @user_errors
    def save_item(current: int | None, item_id: int | None, text: str, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        item_id, text = arg.row_id(item_id, "history item"), arg.text(text, "item text")
        previous = _current_vector(current)
        update = service.edit_item(current, item_id, text)
        return _after_edit(update.persona_id, update, previous, search)

    @user_errors
    def delete_item(current: int | None, item_id: int | None, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        item_id = arg.row_id(item_id, "history item")
        previous = _current_vector(current)
        update = service.delete_item(current, item_id)
        return _after_edit(update.persona_id, update, previous, search)

    def _current_vector(current: int | None):
        if current is None:
            return None
        return service.store.get_persona_vector(int(current), service.embedding_id())

    @user_errors
    def embedding_map(
        current: int | None,
        method: str,
        with_items: bool,
        previous,
        space_kind: str = HISTORY_SPACE,
        plug_input: str = "",
        progress=gr.Progress(),  # noqa: B008 - gradio idiom
    ):
        """PCA at once; UMAP replaces it when asked for and its kernels are compiled (warmed at start-up;
        until then the map stays PCA and says so). Plug space maps P_u for the chat plug and an input."""
        query, kind = map_space(space_kind, plug_input)
        data = service.space(
            current,
            bool(with_items) and query is None,
            lambda done, total: progress((done, total), desc="persona embeddings"),
            plug_query=query,
        )
        prev = None if previous is None or query is not None else np.asarray(previous)
        yield space_figure(data, "pca", current, prev, layouts, kind)
        if method == "UMAP" and umap_ready():  # never wait: a slow event could overwrite a newer map
            yield space_figure(data, "umap", current, prev, layouts, kind)

    @user_errors
    def describe_task(task_key: str):
        """A task's own hint in the input box and what its output and plug mean, next to it."""
        chosen = service.task(task_key)
        return service.task_note(task_key), gr.update(placeholder=chosen.task.example)

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
    ):
        current, task_key = arg.row_id(current), arg.text(task_key, "task")
        user_input = arg.text(user_input, "input")
        opts = options(max_new, sample, temperature, top_p, repetition_penalty, no_repeat, guidance)
        persona_parts = parts(soft_tokens, own_texts)
        strength = arg.number(strength, "persona strength", arg.STRENGTH)
        result = texts = None
        started = time.perf_counter()
        stream = service.stream_compare(current, task_key, user_input, opts, float(strength), persona_parts)
        for result, texts in stream:
            yield result.without_plug, result.with_plug, None, ""
        if result is not None:
            speed = speed_note(
                service, time.perf_counter() - started, [result.without_plug, result.with_plug]
            )
            yield result.without_plug, result.with_plug, attention_figure(result.top_items(texts, k=5)), speed

    @user_errors
    def chat(
        current,
        message,
        persona_chat,
        plain_chat,
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
    ):
        """Settings after `temperature` came later: API calls that send only the first seven get defaults."""
        current, message = arg.row_id(current), arg.text(message, "message")
        opts = options(max_new, sample, temperature, top_p, repetition_penalty, no_repeat, guidance)
        persona_parts = parts(soft_tokens, own_texts)
        strength = arg.number(strength, "persona strength", arg.STRENGTH)
        persona_chat = list(arg.chat_history(persona_chat))
        plain_chat = list(arg.chat_history(plain_chat))
        user_turn = {"role": "user", "content": message}
        stream = service.stream_chat(
            current, persona_chat, plain_chat, message, opts, float(strength), persona_parts
        )
        note = parts_note(persona_parts, service.chosen_for(current, message, persona_parts))
        started = time.perf_counter()
        with_plug = without_plug = ""
        for with_plug, without_plug in stream:
            yield (
                "",
                [*persona_chat, user_turn, {"role": "assistant", "content": with_plug}],
                [*plain_chat, user_turn, {"role": "assistant", "content": without_plug}],
                note,
            )
        speed = speed_note(service, time.perf_counter() - started, [with_plug, without_plug])
        yield (
            "",
            [*persona_chat, user_turn, {"role": "assistant", "content": with_plug}],
            [*plain_chat, user_turn, {"role": "assistant", "content": without_plug}],
            f"{note}\n\n{speed}",
        )

    # ------------------------------------------------------------------------------------------ layout
    with gr.Blocks(title="Persona Studio") as demo:
        current = gr.State(None)
        previous_vector = gr.State(None)
        map_tick = gr.State(0)
        """Every redraw request bumps this; ONE listener draws, `always_last`, so a slow old map can never
        overwrite a newer one."""
        gr.Markdown(HOW_TO_USE, elem_id="how-to")
        gr.Markdown(service.plain_status(), elem_id="plain-status")
        with gr.Accordion("technical details", open=False):
            gr.Markdown(_md_escape(service.describe()), elem_id="status-line")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                search = gr.Textbox(label="search personas", elem_id="search")
                persona = gr.Dropdown(
                    persona_choices(), value=None, label="persona", elem_id="persona", interactive=True
                )
                name = gr.Textbox(label="name", elem_id="persona-name")
                with gr.Row():
                    create_btn = gr.Button("Create", elem_id="create", size="sm")
                    rename_btn = gr.Button("Rename", size="sm")
                    duplicate_btn = gr.Button("Duplicate", size="sm")
                    delete_btn = gr.Button("Delete", variant="stop", size="sm", elem_id="delete")
                with gr.Group(visible=False) as confirm_box:
                    confirm_text = gr.Markdown()
                    with gr.Row():
                        confirm_btn = gr.Button(
                            "Yes, delete", variant="stop", size="sm", elem_id="confirm-delete"
                        )
                        cancel_btn = gr.Button("Cancel", size="sm")
                persona_note = gr.Markdown(elem_id="persona-note")
                export_btn = gr.Button("Export persona (JSON)", size="sm")
                export_file = gr.File(label="exported persona", interactive=False, height=70)
                import_file = gr.File(
                    label="import personas (export JSON, LaMP questions, blog JSONL)",
                    file_types=[".json", ".jsonl", ".gz"],
                    elem_id="import-file",
                    height=120,
                )
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Persona & history", id="history"):
                        persona_status = gr.Markdown("Pick or create a persona.", elem_id="persona-status")
                        with gr.Row():
                            with gr.Column():
                                new_text = gr.Textbox(
                                    label="add a text this persona wrote", lines=3, elem_id="new-text"
                                )
                                add_btn = gr.Button("Add to history", variant="primary", elem_id="add-text")
                                upload = gr.File(
                                    label="upload history (.txt, .md, .csv, .json, .jsonl)",
                                    file_types=[".txt", ".md", ".csv", ".json", ".jsonl"],
                                    elem_id="upload",
                                    height=120,
                                )
                                item = gr.Dropdown([], label="edit an item", elem_id="item")
                                item_text = gr.Textbox(label="item text", lines=3)
                                with gr.Row():
                                    save_btn = gr.Button("Save item", size="sm")
                                    del_item_btn = gr.Button("Delete item", size="sm")
                            with gr.Column():
                                with gr.Row():
                                    method = gr.Radio(["UMAP", "PCA"], value="UMAP", label="map")
                                    with_items = gr.Checkbox(label="show this persona's items")
                                space_kind = gr.Radio(
                                    [HISTORY_SPACE, PLUG_SPACE],
                                    value=HISTORY_SPACE,
                                    label="space",
                                    elem_id="space-kind",
                                )
                                space_plot = gr.Plot(label="persona embedding space", elem_id="space-plot")
                                with gr.Row():
                                    map_csv_btn = gr.Button("Export map (CSV)", size="sm", elem_id="map-csv")
                                    map_file = gr.File(label="map coordinates", interactive=False, height=70)
                        history_table = gr.Dataframe(
                            headers=["#", "text"],
                            datatype=["number", "str"],
                            interactive=False,
                            wrap=True,
                            column_widths=["8%", "92%"],
                            max_height=300,
                            label="history",
                            elem_id="history-table",
                        )
                    with gr.Tab("Compare", id="compare"):
                        task = gr.Radio(
                            service.task_choices(), value=service.task_choices()[0][1], label="task"
                        )
                        first_task = service.task(service.task_choices()[0][1]).task
                        task_note = gr.Markdown(service.task_note(first_task.key), elem_id="task-note")
                        user_input = gr.Textbox(
                            label="input", lines=4, elem_id="prompt", placeholder=first_task.example
                        )
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="run")
                        compare_status = gr.Markdown(elem_id="compare-status")
                        compare_speed = gr.State("")  # a State: API clients keep their three outputs
                        with gr.Row():
                            without = gr.Textbox(label="without plug", lines=4, elem_id="without")
                            with_plug = gr.Textbox(label="with plug (persona)", lines=4, elem_id="with")
                        attention_plot = gr.Plot(label="attention over the history", elem_id="attention")
                    with gr.Tab("Chat as the persona", id="chat"):
                        with gr.Row():
                            persona_chat = gr.Chatbot(
                                label="as the persona (plug on)", elem_id="chat-persona"
                            )
                            plain_chat = gr.Chatbot(label="unpersonalized (plug off)", elem_id="chat-plain")
                        chat_parts = gr.Markdown(elem_id="chat-parts")
                        message = gr.Textbox(label="message", elem_id="chat-message")
                        with gr.Row():
                            send_btn = gr.Button("Send", variant="primary", elem_id="chat-send")
                            clear_btn = gr.Button("Clear chat")
                with gr.Accordion("generation settings", open=False), gr.Row():
                    max_new = gr.Slider(
                        4, 256, value=engine.settings.max_new_tokens, step=1, label="max new tokens"
                    )
                    strength = gr.Slider(0, 3, value=1.0, step=0.1, label="persona strength")
                    sample = gr.Checkbox(label="sample (else greedy)")
                    temperature = gr.Slider(0.1, 2.0, value=0.7, step=0.05, label="temperature")
                    top_p = gr.Slider(*arg.TOP_P, value=arg.REPLY_TOP_P, step=0.05, label="top-p (sampling)")
                    repetition_penalty = gr.Slider(
                        *arg.REPETITION_PENALTY,
                        value=arg.REPLY_REPETITION_PENALTY,
                        step=0.05,
                        label="repetition penalty (1 = off)",
                    )
                    no_repeat = gr.Slider(
                        *arg.NO_REPEAT_NGRAM,
                        value=arg.REPLY_NO_REPEAT_NGRAM,
                        step=1,
                        label="no repeated n-grams of this size (0 = off)",
                    )
                    guidance = gr.Slider(
                        *arg.PERSONA_GUIDANCE,
                        value=arg.REPLY_PERSONA_GUIDANCE,
                        step=0.25,
                        label="persona guidance, chat and free prompt (0 = off)",
                    )
                    use_soft = gr.Checkbox(
                        value=True, label="persona: plug's soft tokens", elem_id="use-soft"
                    )
                    use_texts = gr.Checkbox(
                        value=True,
                        label="persona: own texts in the prompt",
                        elem_id="use-texts",
                    )

        # ------------------------------------------------------------------------------------ wiring
        map_inputs = [current, method, with_items, previous_vector, space_kind, user_input]
        map_tick.change(embedding_map, map_inputs, space_plot, trigger_mode="always_last", **MAP_EVENT)
        edit_outputs = [history_table, item, persona_status, previous_vector, persona, new_text]

        # A rejected action shows its message once (a toast) and its progress and error mark in ONE place per
        # area (`show_progress_on`), so no input or pane is left marked "Error" and unusable.
        at_persona = {"show_progress_on": [persona_note]}
        at_history = {"show_progress_on": [persona_status]}
        search.change(search_personas, [search, current], persona, api_visibility="private")
        persona.change(
            select_persona,
            persona,
            [current, history_table, item, name, persona_status, previous_vector],
            api_name="select_persona",
        ).then(bump, map_tick, map_tick, api_visibility="private")
        create_btn.click(create_persona, [name, search], persona, api_name="create_persona", **at_persona)
        rename_btn.click(
            rename_persona, [current, name, search], persona, api_name="rename_persona", **at_persona
        )
        duplicate_btn.click(
            duplicate_persona, [current, search], persona, api_name="duplicate_persona", **at_persona
        )
        delete_btn.click(
            ask_delete, current, [confirm_box, confirm_text], api_visibility="private", **at_persona
        )
        cancel_btn.click(lambda: gr.update(visible=False), None, confirm_box, api_visibility="private")
        confirm_btn.click(
            confirm_delete, [current, search], [confirm_box, persona], api_name="delete_persona", **at_persona
        )
        export_btn.click(export_persona, current, export_file, api_name="export_persona", **at_persona)
        import_file.upload(
            import_personas,
            [import_file, search],
            [persona, import_file],
            api_name="import_personas",
            **at_persona,
        ).then(clear_file, None, import_file, api_visibility="private")  # a rejected file does not linger

        add_btn.click(
            add_text, [current, new_text, search], edit_outputs, api_name="add_text", **at_history
        ).then(bump, map_tick, map_tick, api_visibility="private")
        upload.upload(
            upload_history,
            [current, upload, search],
            [*edit_outputs[:5], upload],
            api_name="upload_history",
            **at_history,
        ).then(clear_file, None, upload, api_visibility="private").then(
            bump, map_tick, map_tick, api_visibility="private"
        )
        item.change(pick_item, item, item_text, api_visibility="private", **at_history)
        save_btn.click(
            save_item, [current, item, item_text, search], edit_outputs, api_name="edit_item", **at_history
        ).then(bump, map_tick, map_tick, api_visibility="private")
        del_item_btn.click(
            delete_item, [current, item, search], edit_outputs, api_name="delete_item", **at_history
        ).then(bump, map_tick, map_tick, api_visibility="private")
        method.change(bump, map_tick, map_tick, api_visibility="private")
        with_items.change(bump, map_tick, map_tick, api_visibility="private")
        space_kind.change(bump, map_tick, map_tick, api_visibility="private")
        map_csv_btn.click(
            export_map, [current, method, space_kind, user_input], map_file, api_visibility="private"
        )

        task.change(describe_task, task, [task_note, user_input], api_visibility="private")
        extra_inputs = [top_p, repetition_penalty, no_repeat, use_soft, use_texts, guidance]
        """New settings go last, so API calls written for the first seven arguments keep working."""
        generate_btn.click(
            compare,
            [current, task, user_input, max_new, strength, sample, temperature, *extra_inputs],
            [without, with_plug, attention_plot, compare_speed],
            api_name="compare",
            show_progress_on=[compare_status],  # the elapsed time shows here; errors mark nothing else
            concurrency_id="llm",
            concurrency_limit=generation_concurrency,
        ).success(show, compare_speed, compare_status, api_visibility="private")
        chat_inputs = [
            current,
            message,
            persona_chat,
            plain_chat,
            max_new,
            strength,
            sample,
            temperature,
            *extra_inputs,
        ]
        for trigger in (send_btn.click, message.submit):
            trigger(
                chat,
                chat_inputs,
                [message, persona_chat, plain_chat, chat_parts],
                api_name="chat" if trigger == send_btn.click else False,
                api_visibility="public" if trigger == send_btn.click else "private",
                show_progress_on=[chat_parts],
                concurrency_id="llm",
                concurrency_limit=generation_concurrency,
            )
        chat_views = [persona_chat, plain_chat, chat_parts]
        clear_btn.click(fresh_chat, None, chat_views, api_visibility="private")
        persona.change(
            fresh_chat, None, chat_views, api_visibility="private"
        )  # a chat belongs to one persona
        demo.load(bump, map_tick, map_tick, api_visibility="private")
    return demo


def parts_note(parts: PersonaParts, chosen: list[str]) -> str:
    """Under the chat: what the persona side received, so a user sees where the persona comes from."""
    note = f"**Persona side:** {parts.describe()}"
    if chosen:
        shown = "; ".join(f"“{_md_escape(cut_words(t, 12))}”" for t in chosen)
        note += f". Texts in the prompt: {shown}"
    return note + ". Switch either part off under *generation settings* to see what it adds."


def fresh_chat() -> tuple[list, list, str]:
    return [], [], ""


def map_space(space_kind: str, plug_input: str | None) -> tuple[str | None, str]:
    """The map's space choice as (the input P_u is computed for, or None for history space; its title)."""
    if space_kind != PLUG_SPACE:
        return None, "history"
    query = (plug_input or "").strip() or PLUG_SPACE_QUERY
    return query, f"plug (P_u for “{query[:40]}”)"


def speed_note(service: StudioService, seconds: float, outputs: list[str]) -> str:
    """Elapsed time and new tokens per second of one side-by-side answer (both columns together)."""
    tokens = sum(service.engine.llm.count_tokens(text) for text in outputs)
    rate = f", {tokens / seconds:.1f} tokens/s" if seconds > 0 else ""
    return f"*Both columns: {tokens} new tokens in {seconds:.1f} s{rate}.*"


def show(text: str) -> str:
    """Copies a State's text into a visible component (after the event whose progress it showed)."""
    return text


def clear_file() -> None:
    """Empties an upload zone once its file is handled (added, or rejected with a message): None clears it."""


def bump(tick: int | None) -> int:
    """Request a map redraw (see `map_tick`)."""
    return (tick or 0) + 1


def _md_escape(text: str) -> str:
    """Show user text literally inside Markdown (no HTML, no formatting)."""
    escaped = html.escape(text, quote=False)
    for ch in "\\`*_{}[]()#+-.!|>~":
        escaped = escaped.replace(ch, "\\" + ch)
    return escaped
