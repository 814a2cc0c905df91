"""Side-by-side free-prompt and chat replies for two personas typed as a new user types them (a few short
texts each, two different voices), through the studio's own code (`StudioService` over a temporary SQLite
store, the shipped plugs, the page's default settings).

    PYTHONPATH=. python scripts/voice_samples.py [--tokens N]

Prints Markdown: each persona's texts, then for the free prompt and for a two-turn chat the reply with the
plug (soft tokens + the persona's texts) and without it (the plain model, its own thread).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from persona_demo.app import args as page
from persona_demo.app.service import StudioService
from persona_demo.app.tasks import FREE_PROMPT
from persona_demo.config import Settings
from persona_demo.data.store import PersonaStore
from persona_demo.engine.engine import PersonaEngine

PERSONAS = {
    "Marta, night-shift nurse": [
        "Twelve-hour night shift again. Three admissions after 2am and the coffee machine is broken, of course.",
        "Finally slept till noon. Walked the dog by the river and did absolutely nothing useful. Bliss.",
        "Patients always ask if nights get easier. Honestly? You just get better at pretending they do.",
        "Made my grandmother's lentil soup for the whole team. Gone in ten minutes, not a drop left.",
        "Signed up for a half marathon in October. My knees have already filed a complaint.",
        "Nobody warns you how loud a hospital is at 4am. Beeping, always beeping.",
    ],
    "Kev, 16, gamer": [
        "lol just got wrecked in ranked again, my team was trash ngl",
        "new gpu finally arrived!!! 144fps on ultra, im never going outside again",
        "mum says i have to get a summer job. like who even hires a 16 year old",
        "stayed up till 4am grinding the new raid, 100% worth it tho",
        "school tmrw and i havent done the chem homework lmaooo",
    ],
}
FREE = "Write a short post about your week."
CHAT = ("What have you been up to lately?", "Any plans for the weekend?")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=None, help="max new tokens (default: the studio's)")
    args = parser.parse_args()
    settings = Settings.from_env()
    options = page.reply_defaults(args.tokens or settings.max_new_tokens)
    engine = PersonaEngine.from_settings(settings)
    with tempfile.TemporaryDirectory() as folder:
        service = StudioService(engine, PersonaStore(Path(folder) / "personas.db"))
        print(f"<!-- {service.describe()} -->\n")
        for name, texts in PERSONAS.items():
            pid = service.create_persona(name)
            for text in texts:
                service.add_text(pid, text)
            print(f"### {name}\n\nTyped texts: " + " | ".join(f"“{t}”" for t in texts) + "\n")
            *_, (result, _) = service.stream_compare(pid, FREE_PROMPT, FREE, options)
            print(f"- free prompt *{FREE}*")
            print(f"  - with the plug: “{result.with_plug}”\n  - without: “{result.without_plug}”")
            persona_chat: list[dict[str, str]] = []
            plain_chat: list[dict[str, str]] = []
            for message in CHAT:
                *_, (persona, plain) = service.stream_chat(pid, persona_chat, plain_chat, message, options)
                persona_chat += [
                    {"role": "user", "content": message},
                    {"role": "assistant", "content": persona},
                ]
                plain_chat += [{"role": "user", "content": message}, {"role": "assistant", "content": plain}]
                print(f"- chat *{message}*\n  - as the persona: “{persona}”\n  - unpersonalized: “{plain}”")
            print()


if __name__ == "__main__":
    main()
