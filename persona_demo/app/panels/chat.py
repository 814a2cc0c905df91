"""The "Chat as the persona" tab: two threads, as the persona and unpersonalized, one message at a time."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

import gradio as gr

from ...tasks.persona_prompt import cut_words
from .. import args as arg
from ..service import PersonaParts, StudioService
from .common import Session, md_escape, speed_note, user_errors
from .persona import PersonaPanel, stop_on_switch
from .settings import SettingsPanel, options, parts


@dataclass(frozen=True)
class ChatPanel:
    persona_chat: gr.Chatbot
    plain_chat: gr.Chatbot
    parts: gr.Markdown
    """What the persona side received (and the speed line); progress and errors show here."""
    message: gr.Textbox
    send_btn: gr.Button
    stop_btn: gr.Button
    clear_btn: gr.Button


CHAT_CSS = "#chat-persona .md, #chat-plain .md { white-space: pre-wrap; }"
"""Messages are shown as text (`as_shown`): keep the model's line breaks and spaces as it wrote them."""


def build_chat_panel() -> ChatPanel:
    with gr.Row():
        # No Markdown: a reply starting with "- " is text, not a bullet. Without Markdown the chatbot inserts
        # the message as (sanitized) HTML, so every message is HTML-escaped first (`as_shown`).
        persona_chat = gr.Chatbot(
            label="as the persona (plug on)", elem_id="chat-persona", render_markdown=False
        )
        plain_chat = gr.Chatbot(
            label="unpersonalized (plug off)", elem_id="chat-plain", render_markdown=False
        )
    chat_parts = gr.Markdown(elem_id="chat-parts")
    message = gr.Textbox(label="message", elem_id="chat-message")
    with gr.Row():
        send_btn = gr.Button("Send", variant="primary", elem_id="chat-send", scale=3)
        stop_btn = gr.Button("Stop", variant="stop", elem_id="chat-stop", scale=1)
        clear_btn = gr.Button("Clear chat", scale=1)
    return ChatPanel(persona_chat, plain_chat, chat_parts, message, send_btn, stop_btn, clear_btn)


def as_shown(text: str) -> str:
    """A message as the chat shows it: HTML-escaped (<, >, &), so it reads as the text the model wrote."""
    return html.escape(text, quote=False)


def as_written(text: str) -> str:
    """Exactly undo `as_shown`, so the model gets back the thread as it was written."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def written_history(messages: list) -> list:
    """A chat history from the page (shown form) as the text the model and the persona wrote."""
    return [
        {**m, "content": as_written(m["content"])}
        if isinstance(m, dict) and isinstance(m.get("content"), str)
        else m
        for m in messages
    ]


def parts_note(persona_parts: PersonaParts, chosen: list[str]) -> str:
    """Under the chat: what the persona side received, so a user sees where the persona comes from."""
    note = f"**Persona side:** {persona_parts.describe()}"
    if chosen:
        shown = "; ".join(f"“{md_escape(cut_words(t, 12))}”" for t in chosen)
        note += f". Texts in the prompt: {shown}"
    return note + ". Switch either part off under *generation settings* to see what it adds."


def fresh_chat() -> tuple[list, list, str]:
    return [], [], ""


def wire_chat_panel(
    service: StudioService,
    panel: ChatPanel,
    settings: SettingsPanel,
    session: Session,
    personas: PersonaPanel,
    generation_concurrency: int,
) -> None:
    """`personas`: the persona column; a chat belongs to one persona, so picking another starts afresh (and
    stops a running reply)."""
    persona = personas.persona

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
        no_echo=arg.REPLY_ECHO_NGRAM,
    ):
        """Settings after `temperature` came later: API calls that send only the first seven get defaults."""
        current, message = arg.row_id(current), arg.text(message, "message")
        opts = options(max_new, sample, temperature, top_p, repetition_penalty, no_repeat, guidance, no_echo)
        persona_parts = parts(soft_tokens, own_texts)
        strength = arg.number(strength, "persona strength", arg.STRENGTH)
        persona_chat = written_history(list(arg.chat_history(persona_chat)))
        plain_chat = written_history(list(arg.chat_history(plain_chat)))
        # Checked before the first update, which empties the message box: a refused message stays there.
        window = service.chat_window(current, persona_chat, plain_chat, message, opts, persona_parts)
        stream = service.stream_chat(
            current, persona_chat, plain_chat, message, opts, float(strength), persona_parts, window
        )
        note = parts_note(persona_parts, window.chosen)
        if window.left_out:
            note += (
                f"\n\n*The model no longer reads the {window.left_out} oldest messages of this chat: "
                "with them the thread would be longer than it can read.*"
            )
        started = time.perf_counter()
        with_plug = without_plug = ""

        def shown(thread: list, reply: str) -> list:
            turns = [*thread, {"role": "user", "content": message}, {"role": "assistant", "content": reply}]
            return [
                {**m, "content": as_shown(m["content"])} if isinstance(m.get("content"), str) else m
                for m in turns
            ]

        for with_plug, without_plug in stream:
            running = f"*Writing… {time.perf_counter() - started:.1f} s*"
            yield "", shown(persona_chat, with_plug), shown(plain_chat, without_plug), f"{note}\n\n{running}"
        speed = speed_note(service, time.perf_counter() - started, [with_plug, without_plug], opts)
        yield "", shown(persona_chat, with_plug), shown(plain_chat, without_plug), f"{note}\n\n{speed}"

    chat_inputs = [
        session.current,
        panel.message,
        panel.persona_chat,
        panel.plain_chat,
        *settings.first_inputs(),
        *settings.extra_inputs(),
    ]
    chats = []
    for trigger in (panel.send_btn.click, panel.message.submit):
        chats.append(
            trigger(
                chat,
                chat_inputs,
                [panel.message, panel.persona_chat, panel.plain_chat, panel.parts],
                api_name="chat" if trigger == panel.send_btn.click else False,
                api_visibility="public" if trigger == panel.send_btn.click else "private",
                show_progress_on=[panel.parts],
                concurrency_id="llm",
                concurrency_limit=generation_concurrency,
            )
        )
    views = [panel.persona_chat, panel.plain_chat, panel.parts]
    panel.stop_btn.click(None, None, None, cancels=chats, api_visibility="private")
    panel.clear_btn.click(fresh_chat, None, views, cancels=chats, api_visibility="private")
    persona.change(fresh_chat, None, views, api_visibility="private")
    stop_on_switch(personas, chats, views, '() => [[], [], ""]')
