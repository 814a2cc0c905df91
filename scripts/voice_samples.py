"""Side-by-side free-prompt samples for two very different dev personas (the README's persona-voice samples).

    python scripts/voice_samples.py [--plug assets/plugs/persona_voice.safetensors] [--data FILE] [--tokens 40]

Picks the youngest and the oldest dev blogger (self-reported age; dev users only, so the plug never saw
them), gives each the same free prompts, and prints both outputs (greedy, one batched call per prompt).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from persona_demo.config import Settings
from persona_demo.data.voice import is_dev_user
from persona_demo.engine.engine import PersonaEngine
from persona_demo.engine.generation import GenerationOptions

PROMPTS = ("Write a short blog post about your weekend.", "What did you think of the news this week?")


def pick_personas(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        users = [json.loads(line) for line in handle]
    dev = [u for u in users if is_dev_user(u["user"]) and str(u.get("age", "")).isdigit()]
    dev.sort(key=lambda u: int(u["age"]))
    return [dev[0], dev[-1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plug", default="assets/plugs/persona_voice.safetensors")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/blogs/blogs_per_user.jsonl.gz"))
    parser.add_argument("--tokens", type=int, default=40)
    args = parser.parse_args()
    engine = PersonaEngine.from_settings(Settings.from_env(), plug_path=args.plug)
    options = GenerationOptions(max_new_tokens=args.tokens)
    for user in pick_personas(args.data):
        history = [p["text"] for p in user["posts"]]
        print(
            f"### {user['user']} ({user['gender']}, {user['age']}, {user['industry']}), {len(history)} posts"
        )
        print(f"first post: {history[0][:160]!r}")
        for prompt in PROMPTS:
            result = engine.compare(prompt, history, options)
            print(f"- prompt: {prompt}")
            print(f"  - without plug: {result.without_plug!r}")
            print(f"  - with plug:    {result.with_plug!r}")
        print()


if __name__ == "__main__":
    main()
