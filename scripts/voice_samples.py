"""Side-by-side chat and free-prompt replies for two contrasting dev bloggers, through the studio's own code
(`StudioService` over a temporary SQLite store, the shipped plugs, the page's default settings).

    python scripts/voice_samples.py [--data FILE] [--tokens 64]

Picks the youngest and the oldest dev blogger (self-reported age; dev users only, so the plug never saw
them), uploads all their posts but the last, and prints, for the same messages, the reply as the persona
(soft tokens + the persona's most fitting texts) and the unpersonalized reply, plus which texts the persona
prompt carried.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persona_demo.app import args as page
from persona_demo.app.service import PersonaParts, StudioService
from persona_demo.app.tasks import FREE_PROMPT
from persona_demo.config import Settings
from persona_demo.data.store import PersonaStore
from persona_demo.data.voice import is_dev_user
from persona_demo.engine.engine import PersonaEngine

FREE = "Write a short post about your weekend."
CHAT = "Any news? What have you been busy with?"


def pick_personas(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        users = [json.loads(line) for line in handle]
    dev = [u for u in users if is_dev_user(u["user"]) and str(u.get("age", "")).isdigit()]
    dev.sort(key=lambda u: int(u["age"]))
    return [dev[0], dev[-1]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/blogs/blogs_per_user.jsonl.gz"))
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    options = page.reply_defaults(args.tokens)
    engine = PersonaEngine.from_settings(Settings.from_env())
    with tempfile.TemporaryDirectory() as folder:
        service = StudioService(engine, PersonaStore(Path(folder) / "personas.db"))
        print(f"# {service.describe()}\n")
        for user in pick_personas(args.data):
            pid = service.create_persona(user["user"])
            posts = [p["text"] for p in user["posts"][:-1]]
            for text in posts:
                service.add_text(pid, text)
            print(
                f"### {user['user']} ({user['gender']}, {user['age']}, {user['industry']}), {len(posts)} posts"
            )
            *_, (result, _) = service.stream_compare(pid, FREE_PROMPT, FREE, options)
            print(
                f"- free prompt: {FREE}\n  - with plug:    {result.with_plug!r}\n  - without plug: {result.without_plug!r}"
            )
            *_, (persona, plain) = service.stream_chat(pid, [], [], CHAT, options)
            print(f"- chat: {CHAT}\n  - as the persona: {persona!r}\n  - unpersonalized: {plain!r}")
            chosen = service.chosen_for(pid, CHAT, PersonaParts())
            print("  - texts in the persona prompt: " + " | ".join(repr(t[:70]) for t in chosen) + "\n")


if __name__ == "__main__":
    main()
