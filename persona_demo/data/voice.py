"""The self-supervised persona-voice task: per-user post collections → (prompt, history, target) examples.

Design (README, "Persona voice"):
- A user's posts are sorted by date (stable, so same-day posts keep their file order). A *target* is one of
  the user's most recent posts; its *history* is every post dated strictly before it (when dates exist, so
  nothing written the same day or later leaks in; without dates, every post before it in the file).
- The prompt is a content-free instruction ("What have you been up to?", one of
  `CONTENT_FREE_INSTRUCTIONS`, chosen by a hash of the user and the post): it says nothing of the topic, so
  topic, tone and vocabulary must come from the persona. The same prompt is used with and without the
  plug, so the comparison isolates what the persona adds.
- Users are split into train/dev by a hash of their id (stable whatever the file order; no user in both).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import PersonaDemoError
from ..tasks.persona_prompt import CONTENT_FREE_INSTRUCTIONS

DEV_PERCENT = 10
"""Share of users (by id hash) in the dev split."""
MIN_HISTORY = 2
"""A target needs at least this many earlier posts, or it is skipped."""
TYPED_TEXTS = (3, 10)
TYPED_WORDS = (20, 60)
"""What a person types into the studio: 3-10 texts of 20-60 words (training samples typed histories here)."""
TYPED_EVAL = (6, 40)
"""The typed persona evaluation reads: each dev blogger's last 6 posts, cut to 40 words."""


@dataclass(frozen=True)
class Post:
    date: str | None
    text: str


@dataclass(frozen=True)
class UserPosts:
    user: str
    posts: tuple[Post, ...]


@dataclass(frozen=True)
class VoiceExample:
    """One held-out post: the user, the instruction prompt, the earlier posts, and the post itself."""

    user: str
    prompt: str
    history: list[str]
    target: str


def is_voice_file(path: str | Path) -> bool:
    """A per-user JSONL file (`.jsonl`, `.jsonl.gz`) rather than a LaMP folder."""
    return Path(path).is_file() and Path(path).name.endswith((".jsonl", ".jsonl.gz"))


def read_user_posts(path: str | Path) -> list[UserPosts]:
    """`{user, posts: [{date, text}]}` JSON lines (optionally .gz); a bad line names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise PersonaDemoError(f"{path}: no such file (expected per-user JSON lines, .jsonl or .jsonl.gz)")
    opener = gzip.open if path.suffix == ".gz" else open
    users: list[UserPosts] = []
    seen: set[str] = set()
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    user = _parse_user(json.loads(line), path, number)
                    if user.user in seen:
                        raise PersonaDemoError(f"{path}, line {number}: user {user.user!r} appears twice")
                    seen.add(user.user)
                    users.append(user)
    except json.JSONDecodeError as exc:
        raise PersonaDemoError(f"{path}, line {number}: not JSON ({exc.msg})") from None
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise PersonaDemoError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not users:
        raise PersonaDemoError(f"{path}: no users in the file")
    return users


def _parse_user(record: object, path: Path, number: int) -> UserPosts:
    where = f"{path}, line {number}"
    if not isinstance(record, dict) or not isinstance(record.get("posts"), list):
        raise PersonaDemoError(f'{where}: expected {{"user": ..., "posts": [{{"date", "text"}}, ...]}}')
    user = record.get("user")
    if not isinstance(user, str | int) or str(user).strip() == "":
        raise PersonaDemoError(f"{where}: missing user id")
    posts = []
    for item in record["posts"]:
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise PersonaDemoError(f"{where}: every post needs a text")
        if item["text"].strip():
            date = item.get("date")
            posts.append(Post(str(date) if date else None, item["text"].strip()))
    return UserPosts(str(user), tuple(posts))


def typed_history(history: list[str], texts: int, words: int) -> list[str]:
    """The persona a person would type from `history`: its last `texts` posts of 10+ words (any posts when
    too few are that long), each cut to its first `words` words."""
    keep = [p for p in history if len(p.split()) >= 10][-texts:] or history[-texts:]
    return [" ".join(p.split()[:words]) for p in keep]


def typed_examples(examples: list[VoiceExample], share: float, seed: int) -> list[VoiceExample]:
    """A seeded `share` of `examples` with a typed history (`TYPED_TEXTS` texts of `TYPED_WORDS` words, drawn
    per example): a plug that only ever read 50 long posts learns nothing of the short personas people type."""
    if share <= 0:
        return examples
    rng = random.Random(seed)
    out = []
    for example in examples:
        if rng.random() < share:
            texts, words = rng.randint(*TYPED_TEXTS), rng.randint(*TYPED_WORDS)
            example = replace(example, history=typed_history(example.history, texts, words))
        out.append(example)
    return out


def is_dev_user(user: str, dev_percent: int = DEV_PERCENT) -> bool:
    """Stable split by hashed id: the same user lands in the same split whatever the file's order."""
    digest = hashlib.sha1(user.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % 100 < dev_percent


def split_users(users: Iterable[UserPosts], split: str) -> list[UserPosts]:
    if split not in {"train", "dev"}:
        raise PersonaDemoError(f"persona-voice splits are train and dev, not {split!r}")
    want_dev = split == "dev"
    return [u for u in users if is_dev_user(u.user) == want_dev]


def voice_prompt(user: str, target: str) -> str:
    """A content-free instruction, the same for the same (user, post) whatever the file order."""
    digest = hashlib.sha1(f"{user}\n{target}".encode()).hexdigest()
    return CONTENT_FREE_INSTRUCTIONS[int(digest[:8], 16) % len(CONTENT_FREE_INSTRUCTIONS)]


def user_examples(user: UserPosts, targets: int = 1, min_history: int = MIN_HISTORY) -> list[VoiceExample]:
    """Up to `targets` examples from the user's most recent posts, each with its strictly earlier posts."""
    posts = sorted(user.posts, key=lambda p: p.date or "")  # stable: same-day posts keep file order
    out: list[VoiceExample] = []
    for index in range(len(posts) - 1, -1, -1):
        if len(out) == targets:
            break
        target = posts[index]
        earlier = posts[:index]
        if target.date and all(p.date for p in earlier):
            earlier = [p for p in earlier if p.date < target.date]  # type: ignore[operator]
        if len(earlier) >= min_history:
            out.append(
                VoiceExample(
                    user.user, voice_prompt(user.user, target.text), [p.text for p in earlier], target.text
                )
            )
    return out


def load_voice_split(
    path: str | Path, split: str, targets_per_user: int = 1, limit_users: int = 0
) -> list[VoiceExample]:
    """Examples for the users of one split (dev: one target per user, the most recent post)."""
    users = split_users(read_user_posts(path), split)
    examples: list[VoiceExample] = []
    kept = 0
    for user in users:
        found = user_examples(user, targets_per_user)
        if found:
            examples += found
            kept += 1
            if limit_users and kept >= limit_users:
                break
    if not examples:
        raise PersonaDemoError(f"{path}: no {split} user has a post with {MIN_HISTORY}+ earlier posts")
    return examples
