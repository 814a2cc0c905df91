"""What several test modules share: toy LaMP folders, the shared data folder, a free port.

Test modules import these from here, never from one another."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The real per-user data (`../shared/data`), read in place, never copied into the project."""


def shared_data(*parts: str) -> Path:
    """A path under the shared data folder, or the test is skipped with the reason (pytest.ini's `-rs` prints
    it in every run's summary). Under `CI=true` a data folder that is there but lacks this path fails: the
    data changed under the test. A clone with no `../shared/data` at all skips."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") and SHARED_DATA.is_dir():
            pytest.fail(f"{path} is missing from {SHARED_DATA}")
        pytest.skip(f"{path} not available (the real data lives in ../shared/data)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_lamp4(folder, n: int = 4) -> None:
    """A LaMP-4-style folder: each user writes headlines about one hobby; dev = train (a memorisation check)."""
    hobbies = ["cycling", "baking", "chess", "sailing"]
    questions, golds = [], []
    for i in range(n):
        hobby = hobbies[i % len(hobbies)]
        profile = [
            {
                "id": f"{i}-{j}",
                "text": f"An article about {hobby} number {j}.",
                "title": f"{hobby.title()} news {j}",
            }
            for j in range(3)
        ]
        questions.append(
            {
                "id": str(i),
                "user_id": f"u{i}",
                "input": f"Generate a headline for the following article: A new story about {hobby}.",
                "profile": profile,
            }
        )
        golds.append({"id": str(i), "output": f"{hobby.title()} lovers rejoice"})
    for split in ("train", "dev"):
        (folder / f"{split}_questions.json").write_text(json.dumps(questions))
        (folder / f"{split}_outputs.json").write_text(json.dumps({"task": "LaMP_4", "golds": golds}))


def write_lamp3(folder) -> None:
    """Two reviewers: one gives 1-2 stars, one 4-5 (scores as strings, as LaMP ships them)."""
    users = {"grumpy": ["1", "2", "2"], "happy": ["5", "4", "4"]}
    questions, golds = [], []
    for i, (user, scores) in enumerate(users.items()):
        profile = [
            {"id": f"{i}-{j}", "text": f"Review {j} by {user}.", "score": s} for j, s in enumerate(scores)
        ]
        questions.append(
            {
                "id": str(i),
                "user_id": user,
                "input": "What is the score of the following review on a scale of 1 to 5? just answer with 1, "
                "2, 3, 4, or 5 without further explanation. review: It was fine.",
                "profile": profile,
            }
        )
        golds.append({"id": str(i), "output": "2" if user == "grumpy" else "4"})
    (folder / "dev_questions.json").write_text(json.dumps(questions))
    (folder / "dev_outputs.json").write_text(json.dumps({"task": "LaMP_3", "golds": golds}))
