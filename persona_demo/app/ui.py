"""The studio page (gr.Blocks): the panels laid out, each wired to `StudioService`; no logic beyond
presentation.

Per-browser-session state (the selected persona, its previous map position) lives in `gr.State`
(`panels.common.Session`), so one user's selection never leaks into another's. Generation events share one
concurrency group ("llm") whose limit comes from the settings: the queue, not the model, absorbs a crowd.
"""

from __future__ import annotations

import gradio as gr

from .panels.chat import CHAT_CSS, build_chat_panel, wire_chat_panel
from .panels.common import Session, bump, md_escape
from .panels.compare import build_compare_panel, wire_compare_panel
from .panels.history import build_history_panel, wire_history_panel
from .panels.persona import build_persona_panel, wire_persona_panel
from .panels.settings import build_settings_panel
from .service import StudioService
from .space import warm_umap

__all__ = ["HOW_TO_USE", "build_studio"]

HOW_TO_USE = """# Persona Studio
**What you see:** one small language model writing for a person. Each persona on the left is a person with
texts they wrote. Under *Compare*, the model answers the same input twice, side by side: on its own, and
after reading the persona's texts, so you see what knowing the person changes. *Chat as the persona* talks
with it; the map under *Persona & history* shows whose writing is alike.

**Try it:** an example persona and input are ready: press **Generate**. Then pick another persona, or create
one and add texts it wrote (type them or upload a file)."""
"""The top of the page, in plain words; the technical terms live in the *technical details* accordion."""


def build_studio(service: StudioService, generation_concurrency: int = 1) -> gr.Blocks:
    """The whole page: the persona column on the left; history & map, compare and chat as tabs; the
    generation settings under them."""
    warm_umap()  # no-op when `main` already started it

    with gr.Blocks(title="Persona Studio") as demo:
        session = Session.create()
        gr.HTML(f"<style>{CHAT_CSS}</style>", container=False, padding=False)
        gr.Markdown(HOW_TO_USE, elem_id="how-to")
        with gr.Accordion("technical details", open=False, elem_id="technical"):
            gr.Markdown(service.plain_status(), elem_id="plain-status")
            gr.Markdown(md_escape(service.describe()), elem_id="status-line")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                personas = build_persona_panel(service)
            with gr.Column(scale=3):
                with gr.Tabs(selected="compare"):  # a first visit lands where one click runs an example
                    with gr.Tab("Persona & history", id="history"):
                        history = build_history_panel()
                    with gr.Tab("Compare", id="compare"):
                        compare = build_compare_panel(service)
                    with gr.Tab("Chat as the persona", id="chat"):
                        chat = build_chat_panel()
                settings = build_settings_panel(service.engine.settings.max_new_tokens)

        wire_persona_panel(service, personas, session, [history.table, history.item, history.status], demo)
        wire_history_panel(service, history, personas, session, plug_input=compare.user_input)
        wire_compare_panel(service, compare, settings, session, personas, generation_concurrency)
        wire_chat_panel(service, chat, settings, session, personas, generation_concurrency)
        demo.load(bump, session.map_tick, session.map_tick, api_visibility="private")

    return demo
