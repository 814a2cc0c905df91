"""The "Persona & history" tab: add, upload, edit and delete texts, and the map of the embedding space."""

from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from ...errors import PersonaDemoError
from .. import args as arg
from ..service import StudioService
from ..space import MapLayouts, map_csv, space_figure, umap_ready
from .common import MAP_EVENT, Session, bump, clear_file, history_view, persona_choices, user_errors
from .persona import PersonaPanel

HISTORY_SPACE = "history: mean of its texts' vectors"
PLUG_SPACE = "plug: P_u the LLM receives (Compare input)"
PLUG_SPACE_QUERY = "Write a post."
"""The input P_u is computed for when the Compare box is empty (the chat plug's content-free kind)."""


@dataclass(frozen=True)
class HistoryPanel:
    status: gr.Markdown
    """The selected persona's name and item count; this tab's progress and errors show here."""
    new_text: gr.Textbox
    add_btn: gr.Button
    upload: gr.File
    item: gr.Dropdown
    item_text: gr.Textbox
    save_btn: gr.Button
    delete_btn: gr.Button
    method: gr.Radio
    with_items: gr.Checkbox
    space_kind: gr.Radio
    space_plot: gr.Plot
    map_csv_btn: gr.Button
    map_file: gr.File
    table: gr.Dataframe


def build_history_panel() -> HistoryPanel:
    status = gr.Markdown("Pick or create a persona.", elem_id="persona-status")
    with gr.Row():
        with gr.Column():
            new_text = gr.Textbox(label="add a text this persona wrote", lines=3, elem_id="new-text")
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
                delete_btn = gr.Button("Delete item", size="sm")
        with gr.Column():
            with gr.Row():
                method = gr.Radio(["UMAP", "PCA"], value="UMAP", label="map")
                with_items = gr.Checkbox(label="show this persona's items")
            space_kind = gr.Radio(
                [HISTORY_SPACE, PLUG_SPACE], value=HISTORY_SPACE, label="space", elem_id="space-kind"
            )
            space_plot = gr.Plot(label="persona embedding space", elem_id="space-plot")
            with gr.Row():
                map_csv_btn = gr.Button("Export map (CSV)", size="sm", elem_id="map-csv")
                map_file = gr.File(label="map coordinates", interactive=False, height=70)
    table = gr.Dataframe(
        headers=["#", "text"],
        datatype=["number", "str"],
        interactive=False,
        wrap=True,
        column_widths=["8%", "92%"],
        max_height=300,
        label="history",
        elem_id="history-table",
    )
    return HistoryPanel(
        status,
        new_text,
        add_btn,
        upload,
        item,
        item_text,
        save_btn,
        delete_btn,
        method,
        with_items,
        space_kind,
        space_plot,
        map_csv_btn,
        map_file,
        table,
    )


def map_space(space_kind: str, plug_input: str | None) -> tuple[str | None, str]:
    """The map's space choice as (the input P_u is computed for, or None for history space; its title)."""
    if space_kind != PLUG_SPACE:
        return None, "history"
    query = (plug_input or "").strip() or PLUG_SPACE_QUERY
    return query, f"plug (P_u for “{query[:40]}”)"


def wire_history_panel(
    service: StudioService,
    panel: HistoryPanel,
    personas: PersonaPanel,
    session: Session,
    plug_input: gr.Textbox,
) -> None:
    """`plug_input`: the Compare box, whose text the plug-space map computes P_u for."""
    layouts = MapLayouts()  # the map holds still between redraws

    max_chars = service.store.limits.max_chars

    def after_edit(persona_id: int, update, previous, search: str):
        for note in update.notes:  # a split, shortened or skipped text is said where the person looks
            if note.startswith(("Shortened", "Skipped")):
                gr.Warning(html.escape(note))
            elif "added as" in note:
                gr.Info(html.escape(note))
        rows, items = history_view(service, persona_id)
        choices = gr.update(choices=persona_choices(service, search), value=persona_id)
        return rows, items, update.status, previous, choices, ""

    @user_errors
    def add_text(current: int | None, text: str, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        text = arg.text(text, "text")
        previous = service.persona_vector(current)
        update = service.add_text(current, text)  # a text over the item limit becomes several items
        return after_edit(update.persona_id, update, previous, search)

    @user_errors
    def upload_history(current: int | None, path: str | None, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        path = arg.file_path(path, "upload")
        if not path:
            raise PersonaDemoError("Choose a file to upload.")
        previous = service.persona_vector(current)
        update = service.upload(current, path)
        return (*after_edit(update.persona_id, update, previous, search)[:5], None)

    @user_errors
    def pick_item(item_id: int | None):
        return service.item_text(arg.row_id(item_id, "history item"))

    @user_errors
    def save_item(current: int | None, item_id: int | None, text: str, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        item_id, text = arg.row_id(item_id, "history item"), arg.text(text, "item text")
        if len(text or "") > max_chars:  # refused, not shortened: the box keeps the whole text
            raise PersonaDemoError(
                f"An item holds at most {max_chars:,} characters; this one has {len(text):,}. Shorten it, or "
                "add the text with “Add to history”, which splits a long text into several items."
            )
        previous = service.persona_vector(current)
        update = service.edit_item(current, item_id, text)
        return after_edit(update.persona_id, update, previous, search)

    @user_errors
    def delete_item(current: int | None, item_id: int | None, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        item_id = arg.row_id(item_id, "history item")
        previous = service.persona_vector(current)
        update = service.delete_item(current, item_id)
        return after_edit(update.persona_id, update, previous, search)

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
    def export_map(current: int | None, method: str, space_kind: str, plug_input: str):
        query, kind = map_space(space_kind, plug_input)
        data = service.space(arg.row_id(current), plug_query=query)
        if not data.ids:
            raise PersonaDemoError("The map is empty: add a text to a persona first.")
        folder = Path(tempfile.mkdtemp(prefix="persona-map-"))
        return str(map_csv(data, method.lower(), layouts, folder / "persona-map.csv", kind))

    current, tick, search = session.current, session.map_tick, personas.search
    map_inputs = [
        current,
        panel.method,
        panel.with_items,
        session.previous_vector,
        panel.space_kind,
        plug_input,
    ]
    tick.change(embedding_map, map_inputs, panel.space_plot, trigger_mode="always_last", **MAP_EVENT)
    redraw = {"fn": bump, "inputs": tick, "outputs": tick, "api_visibility": "private"}
    edit_outputs = [
        panel.table,
        panel.item,
        panel.status,
        session.previous_vector,
        personas.persona,
        panel.new_text,
    ]
    here = {"show_progress_on": [panel.status]}
    panel.add_btn.click(
        add_text, [current, panel.new_text, search], edit_outputs, api_name="add_text", **here
    ).then(**redraw)
    uploaded = panel.upload.upload(
        upload_history,
        [current, panel.upload, search],
        [*edit_outputs[:5], panel.upload],
        api_name="upload_history",
        **here,
    )
    uploaded.then(**redraw)  # an accepted file was cleared by `upload_history` itself
    # `.then` does not run after a failure (gradio 6): a rejected file is cleared here, or it would linger
    uploaded.failure(clear_file, None, panel.upload, api_visibility="private")
    # The upload zone belongs to the persona too: a file (a rejected one included) is gone on switch/delete.
    personas.persona.change(clear_file, None, panel.upload, api_visibility="private")
    panel.item.change(pick_item, panel.item, panel.item_text, api_visibility="private", **here)
    panel.save_btn.click(
        save_item, [current, panel.item, panel.item_text, search], edit_outputs, api_name="edit_item", **here
    ).then(**redraw)
    panel.delete_btn.click(
        delete_item, [current, panel.item, search], edit_outputs, api_name="delete_item", **here
    ).then(**redraw)
    for control in (panel.method, panel.with_items, panel.space_kind):
        control.change(**redraw)
    panel.map_csv_btn.click(
        export_map,
        [current, panel.method, panel.space_kind, plug_input],
        panel.map_file,
        api_visibility="private",
    )
