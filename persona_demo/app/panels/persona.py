"""The left column: pick, search, create, rename, duplicate, delete, export and import personas."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ...data.seed import first_visit_persona
from ...errors import PersonaDemoError
from .. import args as arg
from ..service import StudioService
from .common import Session, bump, clear_file, history_view, md_escape, notify, persona_choices, user_errors


@dataclass(frozen=True)
class PersonaPanel:
    search: gr.Textbox
    persona: gr.Dropdown
    name: gr.Textbox
    create_btn: gr.Button
    rename_btn: gr.Button
    duplicate_btn: gr.Button
    delete_btn: gr.Button
    confirm_box: gr.Group
    confirm_text: gr.Markdown
    confirm_btn: gr.Button
    cancel_btn: gr.Button
    note: gr.Markdown
    """Where this column's progress and errors show."""
    export_btn: gr.Button
    export_file: gr.File
    import_file: gr.File


def build_persona_panel(service: StudioService) -> PersonaPanel:
    search = gr.Textbox(label="search personas", elem_id="search")
    persona = gr.Dropdown(
        persona_choices(service),
        value=first_visit_persona(service.personas()),  # `wire_persona_panel` re-picks it on each page load
        label="persona",
        elem_id="persona",
        interactive=True,
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
            confirm_btn = gr.Button("Yes, delete", variant="stop", size="sm", elem_id="confirm-delete")
            cancel_btn = gr.Button("Cancel", size="sm")
    note = gr.Markdown(elem_id="persona-note")
    export_btn = gr.Button("Export persona (JSON)", size="sm")
    export_file = gr.File(label="exported persona", interactive=False, height=70)
    import_file = gr.File(
        label="import personas (export JSON, LaMP questions, blog JSONL)",
        file_types=[".json", ".jsonl", ".gz"],
        elem_id="import-file",
        height=120,
    )
    return PersonaPanel(
        search,
        persona,
        name,
        create_btn,
        rename_btn,
        duplicate_btn,
        delete_btn,
        confirm_box,
        confirm_text,
        confirm_btn,
        cancel_btn,
        note,
        export_btn,
        export_file,
        import_file,
    )


def wire_persona_panel(
    service: StudioService,
    panel: PersonaPanel,
    session: Session,
    selected_outputs: list[gr.components.Component],
    demo: gr.Blocks,
) -> None:
    """`selected_outputs`: the history table, item picker and status line a selection fills; `demo`: the page,
    whose load selects the first-visit persona."""

    @user_errors
    def search_personas(search: str, current: int | None):
        choices = persona_choices(service, arg.text(search, "search"))
        keep = current if any(v == current for _, v in choices) else None
        return gr.update(choices=choices, value=keep)

    @user_errors
    def select_persona(persona_id: int | None):
        """Load a persona: its history, the name box, a fresh map position."""
        persona_id = arg.row_id(persona_id)
        if persona_id is None:
            rows, items = history_view(service, None)
            return None, rows, items, "", "Pick or create a persona.", None
        persona = service.persona(int(persona_id))
        rows, items = history_view(service, persona.id)
        status = f"{md_escape(persona.name)}: {persona.item_count} items"
        return persona.id, rows, items, persona.name, status, None

    @user_errors
    def create_persona(name: str, search: str):
        search = arg.text(search, "search")
        pid = service.create_persona(name)
        notify(f"Created persona {name.strip()!r}.")
        return gr.update(choices=persona_choices(service, search), value=pid)

    @user_errors
    def rename_persona(current: int | None, name: str, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        service.rename_persona(current, name)
        return gr.update(choices=persona_choices(service, search), value=current)

    @user_errors
    def duplicate_persona(current: int | None, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        pid = service.duplicate_persona(current)
        return gr.update(choices=persona_choices(service, search), value=pid)

    @user_errors
    def ask_delete(current: int | None):
        if current is None:
            raise PersonaDemoError("Pick a persona first.")
        persona = service.persona(int(current))
        return gr.update(
            visible=True
        ), f"Delete **{md_escape(persona.name)}** and its {persona.item_count} items?"

    @user_errors
    def confirm_delete(current: int | None, search: str):
        current, search = arg.row_id(current), arg.text(search, "search")
        service.delete_persona(current)
        notify("Persona deleted.")
        return gr.update(visible=False), gr.update(choices=persona_choices(service, search), value=None)

    @user_errors
    def export_persona(current: int | None):
        current = arg.row_id(current)
        return str(service.export_persona(current, Path(tempfile.mkdtemp(prefix="persona-export-"))))

    @user_errors
    def import_personas(path: str | None, search: str, progress=gr.Progress()):  # noqa: B008 - gradio idiom
        path, search = arg.file_path(path, "import"), arg.text(search, "search")
        if not path:
            raise PersonaDemoError("Choose a file to import.")
        result = service.import_file(path, lambda done, total: progress((done, total), desc="importing"))
        notify(result.summary())
        value = result.persona_ids[0] if result.persona_ids else None
        return gr.update(choices=persona_choices(service, search), value=value), None

    # A rejected action shows its message once (a toast) and its progress and error mark in ONE place
    # (`show_progress_on`), so no input or pane is left marked "Error" and unusable.
    here = {"show_progress_on": [panel.note]}
    current, persona, search = session.current, panel.persona, panel.search
    history_table, item, status = selected_outputs
    search.change(search_personas, [search, current], persona, api_visibility="private")

    # A new page opens on an example persona, filled in by this load rather than by `persona.change`: the
    # dropdown already shows it, so no change event fires and a first quick Generate is not cancelled.
    def first_visit():
        persona_id = first_visit_persona(service.personas())
        return gr.update(choices=persona_choices(service), value=persona_id), *select_persona(persona_id)

    selected = [current, history_table, item, panel.name, status, session.previous_vector]
    demo.load(first_visit, None, [persona, *selected], api_visibility="private").then(
        bump, session.map_tick, session.map_tick, api_visibility="private"
    )
    persona.change(clear_file, None, panel.import_file, api_visibility="private")
    persona.change(
        select_persona,
        persona,
        [current, history_table, item, panel.name, status, session.previous_vector],
        api_name="select_persona",
    ).then(bump, session.map_tick, session.map_tick, api_visibility="private")
    panel.create_btn.click(create_persona, [panel.name, search], persona, api_name="create_persona", **here)
    panel.rename_btn.click(
        rename_persona, [current, panel.name, search], persona, api_name="rename_persona", **here
    )
    panel.duplicate_btn.click(
        duplicate_persona, [current, search], persona, api_name="duplicate_persona", **here
    )
    panel.delete_btn.click(
        ask_delete, current, [panel.confirm_box, panel.confirm_text], api_visibility="private", **here
    )
    panel.cancel_btn.click(
        lambda: gr.update(visible=False), None, panel.confirm_box, api_visibility="private"
    )
    panel.confirm_btn.click(
        confirm_delete, [current, search], [panel.confirm_box, persona], api_name="delete_persona", **here
    )
    panel.export_btn.click(export_persona, current, panel.export_file, api_name="export_persona", **here)
    panel.import_file.upload(
        import_personas,
        [panel.import_file, search],
        [persona, panel.import_file],
        api_name="import_personas",
        **here,
    ).failure(
        clear_file, None, panel.import_file, api_visibility="private"
    )  # a rejected file does not linger


def stop_on_switch(
    panel: PersonaPanel, running: list, emptied: Sequence[gr.components.Component], empty_js: str
) -> None:
    """Stop `running` generation events and empty the `emptied` outputs whenever the person switches persona
    (pick, create, duplicate, delete, import): an answer must never finish, or stay, under another persona's
    name.

    Tied to the user's own actions, not to `persona.change`: a change event arrives a moment after the new
    selection shows, and would cancel a Generate clicked right after switching. The outputs are emptied in the
    browser (`empty_js` returns their empty values), so the old answer is gone before the new name shows;
    `persona.change` empties them again for switches made by the server (the first visit's example).
    """
    for trigger in (
        panel.persona.input,
        panel.create_btn.click,
        panel.duplicate_btn.click,
        panel.confirm_btn.click,
        panel.import_file.upload,
    ):
        trigger(None, None, list(emptied), cancels=running, js=empty_js, api_visibility="private")
