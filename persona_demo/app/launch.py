"""A first, minimal studio: paste a persona's history, type a prompt, compare with and without the plug.

The full studio (persona store, live embedding plot, chat) is issue 5; this page already runs the real engine.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def build_demo(engine, store=None):
    """The page; with a `PersonaStore`, a persona picker fills the history box from stored personas."""
    import gradio as gr

    from ..engine.generation import GenerationOptions
    from ..errors import PersonaDemoError

    def compare(history_text: str, prompt: str, max_new_tokens: float, strength: float):
        history = [block.strip() for block in (history_text or "").split("\n\n") if block.strip()]
        try:
            options = GenerationOptions(max_new_tokens=int(max_new_tokens))
            for result in engine.stream_compare(prompt or "", history, options, strength=float(strength)):
                top = "\n".join(f"{w:.3f}  {t[:90]}" for w, t in result.top_items(history, k=5))
                yield result.without_plug, result.with_plug, top
        except PersonaDemoError as exc:
            raise gr.Error(str(exc)) from None

    personas = {p.name: p.id for p in store.list_personas()} if store is not None else {}

    def load_persona(name: str) -> str:
        if name not in personas:
            raise gr.Error("Pick a persona from the list.")
        return "\n\n".join(item.text for item in store.list_items(personas[name]))

    with gr.Blocks(title="Persona Studio") as demo:
        gr.Markdown(f"# Persona Studio\n{engine.describe()}")
        picker = gr.Dropdown(list(personas), label="persona", elem_id="persona", visible=bool(personas))
        history = gr.Textbox(
            label="Persona history (one text per blank-line-separated block)", lines=8, elem_id="history"
        )
        picker.change(load_persona, picker, history, api_name="load_persona")
        prompt = gr.Textbox(label="Prompt", elem_id="prompt")
        with gr.Row():
            max_new = gr.Slider(4, 256, value=engine.settings.max_new_tokens, step=1, label="max new tokens")
            strength = gr.Slider(0, 3, value=1.0, step=0.1, label="persona strength")
        run = gr.Button("Generate", variant="primary", elem_id="run")
        with gr.Row():
            without = gr.Textbox(label="without plug", elem_id="without")
            with_plug = gr.Textbox(label="with plug (persona)", elem_id="with")
        attended = gr.Textbox(label="history items the plug attended to", elem_id="attended")
        run.click(
            compare, [history, prompt, max_new, strength], [without, with_plug, attended], api_name="compare"
        )
    return demo


def main(argv: list[str] | None = None) -> int:
    from ..config import Settings
    from ..data.seed import ensure_seed_personas
    from ..data.store import PersonaStore
    from ..engine.engine import PersonaEngine

    parser = argparse.ArgumentParser(description="Persona Studio")
    parser.add_argument("--host", default=os.environ.get("PERSONA_DEMO_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PERSONA_DEMO_PORT", "7860")))
    parser.add_argument("--plug", default=os.environ.get("PERSONA_DEMO_PLUG"), help="plug checkpoint path")
    parser.add_argument(
        "--db", default=None, help="persona database (default: PERSONA_DEMO_DB or the user data folder)"
    )
    args = parser.parse_args(argv)
    store = PersonaStore(args.db)
    ensure_seed_personas(store)  # first start: example personas, so the demo is alive at once
    engine = PersonaEngine.from_settings(
        Settings.from_env(), plug_path=args.plug, cache=store.embedding_cache
    )
    build_demo(engine, store).queue().launch(server_name=args.host, server_port=args.port)
    return 0
