"""Reader and writer for LaMP-format data (tasks 1-7, user- and time-based splits).

LaMP ships `{split}_questions.json` (list of {"id", "input", "profile": [...]}) and `{split}_outputs.json`
({"task": "LaMP_k", "golds": [{"id", "output"}]}); predictions for the official evaluator use the outputs
format. Everything a user can get wrong here raises `PersonaDemoError` naming the file, so a bad folder is
reported once, at load time, instead of as a KeyError deep inside training.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from persona_demo.errors import PersonaDemoError

TaskKind = Literal["classification", "rating", "generation"]

UNTITLED_TEMPLATE = '"{text}" '
"""How a retrieved item without its title or score is rendered (LaMP-7's form for a bare text)."""
FREE_TEXT_BLANKED = ("title", "score")
"""The fields a studio persona's items lack: what `free_text_profile` empties to train and test on them."""
HELDOUT_SHARE = 0.2
"""Share of a LaMP folder's authors kept out of training and tuning: the `heldout` split, people never seen."""

LAMP2_TAGS: tuple[str, ...] = (
    "sci-fi",
    "based on a book",
    "comedy",
    "action",
    "twist ending",
    "dystopia",
    "dark comedy",
    "classic",
    "psychology",
    "fantasy",
    "romance",
    "thought-provoking",
    "social commentary",
    "violence",
    "true story",
)


@dataclass(frozen=True)
class LampTask:
    """Everything task-specific: labels, how to parse the input, how to turn a profile item into text."""

    number: int
    name: str
    kind: TaskKind
    labels: tuple[str, ...]
    template_start: str  # lower-cased opening of the input template, used to detect the task
    payload_marker: str  # the payload (query) follows the first occurrence of this in the input
    profile_fields: tuple[str, ...]  # required in every profile item
    # PPlug's history text = these joined by " " (absent optional ones skipped)
    history_fields: tuple[str, ...]
    bm25_fields: tuple[str, ...]  # LaMP's BM25 corpus text = these joined by " "
    rag_template: str  # LaMP's rendering of one retrieved item (str.format over the item's fields)
    rag_field: str  # the field of rag_template that LaMP truncates to fit the budget
    rag_glue: str | None  # text between the joined items and the input; None = LaMP-1 splice after "title"
    optional_fields: Mapping[str, str] = field(default_factory=dict)  # defaults for fields that may be absent

    @property
    def official_name(self) -> str:
        """Name used in outputs.json and by the official evaluator ("LaMP_4")."""
        return f"LaMP_{self.number}"

    def item_field(self, item: Mapping[str, Any], key: str) -> str:
        """A field of a profile item as text (optional fields default, required ones must exist)."""
        if key in item:
            return str(item[key])
        if key in self.optional_fields:
            return self.optional_fields[key]
        raise PersonaDemoError(
            f"LaMP-{self.number} profile item {item.get('id', '?')!r} has no field {key!r} "
            f"(needs {', '.join(self.profile_fields)})"
        )

    def history_text(self, item: Mapping[str, Any]) -> str:
        """Text of one history item as PPlug embeds it (aggr_id.py/embedding.py); empty fields are skipped,
        so an item without a title (a free text, as the studio holds it) reads as its text alone."""
        parts = [
            self.item_field(item, k)
            for k in self.history_fields
            if k in item or k not in self.optional_fields
        ]
        return " ".join(p for p in parts if p.strip())

    def history_texts(self, profile: Sequence[Mapping[str, Any]]) -> list[str]:
        """The non-empty history texts of a whole profile, in profile order (what the plug reads)."""
        return [t for t in map(self.history_text, profile) if t.strip()]

    def bm25_text(self, item: Mapping[str, Any]) -> str:
        """Text of one history item as LaMP's BM25 corpus makers build it."""
        return " ".join(self.item_field(item, k) for k in self.bm25_fields)

    def render_item(self, item: Mapping[str, Any], text: str | None = None) -> str:
        """LaMP's RAG rendering of a retrieved item; `text` replaces the (possibly truncated) rag_field.

        An item whose other template fields are empty (a free text without title or score) is rendered as
        its quoted text, never as `"" is the title for "..."`."""
        keys = {name for _, name, _, _ in string.Formatter().parse(self.rag_template) if name}
        values = {k: self.item_field(item, k) for k in keys if k != self.rag_field}
        values[self.rag_field] = self.item_field(item, self.rag_field) if text is None else text
        if any(not str(v).strip() for k, v in values.items() if k != self.rag_field):
            return UNTITLED_TEMPLATE.format(text=values[self.rag_field])
        return self.rag_template.format_map(values)

    def free_text_profile(self, profile: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The profile as the studio holds a typed or uploaded persona: texts without titles or scores."""
        return [{**item, **{k: "" for k in FREE_TEXT_BLANKED if k in item}} for item in profile]

    def compose(self, rendered_items: list[str], inp: str) -> str:
        """Join rendered items with ", and " and attach them to the input the way LaMP does."""
        if not rendered_items:
            return inp
        joined = ", and ".join(rendered_items)
        if self.rag_glue is not None:
            return f"{joined}{self.rag_glue}{inp}"
        at = inp.find("title")  # LaMP-1: spliced in right after the first "title"
        if at == -1:
            return inp
        return inp[: at + 5] + ", and " + joined + inp[at + 5 :]

    def glue_text(self) -> str:
        """The fixed text the composition adds besides items and joins (for length budgets)."""
        return ", and " if self.rag_glue is None else self.rag_glue


TASKS: dict[int, LampTask] = {
    1: LampTask(
        1,
        "citation identification",
        "classification",
        ("[1]", "[2]"),
        "for an author who has written the paper with the title",
        'title "',
        ("title", "abstract"),
        ("title", "abstract"),
        ("title", "abstract"),
        '"{title}"',
        "title",
        None,
    ),
    2: LampTask(
        2,
        "movie tagging",
        "classification",
        LAMP2_TAGS,
        "which tag does this movie relate to among the following tags",
        "description:",
        ("description", "tag"),
        ("description",),
        ("description",),
        'the tag for the movie: "{description}" is "{tag}" ',
        "description",
        ". ",
    ),
    3: LampTask(
        3,
        "product rating",
        "rating",
        ("1", "2", "3", "4", "5"),
        "what is the score of the following review",
        "review:",
        ("text", "score"),
        ("text",),
        ("text",),
        '{score} is the score for "{text}" ',
        "text",
        ". ",
    ),
    4: LampTask(
        4,
        "news headline generation",
        "generation",
        (),
        "generate a headline for the following article",
        "article:",
        ("text", "title"),
        ("text", "title"),
        ("title", "text"),
        '"{title}" is the title for "{text}" ',
        "text",
        ". ",
    ),
    5: LampTask(
        5,
        "scholarly title generation",
        "generation",
        (),
        "generate a title for the following abstract of a paper",
        "paper:",
        ("title", "abstract"),
        ("title", "abstract"),
        ("title", "abstract"),
        '"{title}" is a title for "{abstract}" ',
        "abstract",
        ". Following the given patterns ",
    ),
    6: LampTask(
        6,
        "email subject generation",
        "generation",
        (),
        "generate a subject for the following email",
        ":",
        ("text",),
        ("text", "title"),
        ("text",),
        '"{title}" is the title for "{text}" ',
        "text",
        ". ",
        {"title": ""},
    ),
    7: LampTask(
        7,
        "tweet paraphrasing",
        "generation",
        (),
        "paraphrase the following tweet without any explanation before or after it",
        "before or after it:",
        ("text",),
        ("text",),
        ("text",),
        '"{text}" ',
        "text",
        " are written by a person. Following the given patterns ",
    ),
}


def get_task(task: int | str | LampTask) -> LampTask:
    """Resolve a task number, a name such as "LaMP_time_4", or a LampTask."""
    if isinstance(task, LampTask):
        return task
    number = task if isinstance(task, int) else task_from_name(task)
    if number not in TASKS:
        raise PersonaDemoError(f"unknown LaMP task {task!r} (known: LaMP-1 … LaMP-7)")
    return TASKS[number]


_TASK_NAME = re.compile(r"^lamp[\s_-]*(?:(?:time|user)[\s_-]*)?([1-7])(m)?$", re.IGNORECASE)


def task_from_name(name: str) -> int:
    """Task number from names such as "LaMP_4", "LaMP-4", "LaMP_time_4" or "LaMP_2M" (2M = movies)."""
    m = _TASK_NAME.match(str(name).strip())
    if m is None or (m.group(2) and m.group(1) != "2"):
        raise PersonaDemoError(
            f"unknown LaMP task {name!r} (expected e.g. 'LaMP_4', 'LaMP-4' or 'LaMP_time_4'; "
            "the retired news-categorisation LaMP-2 is not supported)"
        )
    return int(m.group(1))


def task_from_input(text: str) -> int | None:
    """Task number whose input template `text` starts with, or None."""
    head = text.strip().lower()
    for number, spec in TASKS.items():
        if head.startswith(spec.template_start):
            return number
    return None


def detect_task(task_name: str | None = None, inputs: Iterable[str] = (), source: str = "data") -> int:
    """The task of a split: from outputs.json's "task" when given, else from the input templates.

    Inputs whose template is recognised must agree with the declared task (catches swapped files).
    """
    declared = task_from_name(task_name) if task_name is not None else None
    seen: dict[int, str] = {}
    unknown = None
    for text in inputs:
        number = task_from_input(text)
        if number is None:
            unknown = text
        else:
            seen.setdefault(number, text)
    if declared is not None:
        others = sorted(n for n in seen if n != declared)
        if others:
            raise PersonaDemoError(
                f"{source}: task is {task_name!r} but an input looks like LaMP-{others[0]}: "
                f"{_short(seen[others[0]])!r}"
            )
        return declared
    if len(seen) > 1:
        raise PersonaDemoError(f"{source}: inputs mix LaMP tasks {sorted(seen)}")
    if not seen or unknown is not None:
        hint = f": {_short(unknown)!r}" if unknown is not None else " (no inputs)"
        raise PersonaDemoError(f"{source}: cannot tell the LaMP task from the input template{hint}")
    return next(iter(seen))


def extract_query(task: int | str | LampTask, inp: str) -> str:
    """The payload of an input (article, abstract, review, ...), as PPlug extracts it for the input encoder.

    LaMP-1: the paper title between `title "` and `",`; others: everything after the task's marker, stripped.
    """
    spec = get_task(task)
    at = inp.find(spec.payload_marker)
    if at == -1:
        raise PersonaDemoError(
            f"LaMP-{spec.number} input has no {spec.payload_marker!r} to find the payload after: {_short(inp)!r}"
        )
    start = at + len(spec.payload_marker)
    if spec.number == 1:
        end = inp.find('",', start)
        if end == -1:
            raise PersonaDemoError(f"LaMP-1 input has no closing '\",' after the title: {_short(inp)!r}")
        return inp[start:end].strip()
    return inp[start:].strip()


@dataclass
class LampExample:
    """One question: the full prompt, its payload, the user's profile (all fields kept) and the gold."""

    id: str
    user_id: str | None
    input: str
    query: str
    profile: list[dict[str, Any]]
    target: str | None = None


@dataclass
class LampDataset:
    """The examples of one split plus the task they belong to."""

    task: int
    examples: list[LampExample]
    task_name: str = ""  # the name as written in outputs.json (echoed in predictions); "" = official
    source: str = ""

    def __post_init__(self) -> None:
        if not self.task_name:
            self.task_name = get_task(self.task).official_name

    @property
    def spec(self) -> LampTask:
        return get_task(self.task)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[LampExample]:
        return iter(self.examples)

    def golds(self) -> dict[str, str]:
        """id -> gold output (examples without a gold are left out)."""
        return {e.id: e.target for e in self.examples if e.target is not None}


def _short(text: str | None, n: int = 80) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise PersonaDemoError(f"{path}: file not found")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PersonaDemoError(f"{path}: cannot read as UTF-8 text ({exc})") from exc
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PersonaDemoError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc


def _as_id(value: Any, path: Path, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PersonaDemoError(f"{path}: {what} has an invalid id {value!r} (expected a string)")
    return str(value)


def _read_outputs(path: Path) -> tuple[str | None, dict[str, str]]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise PersonaDemoError(
            f"{path}: top level must be an object {{'task', 'golds'}}, got {type(data).__name__}"
        )
    golds = data.get("golds")
    if not isinstance(golds, list):
        raise PersonaDemoError(f"{path}: 'golds' must be a list of {{'id', 'output'}}")
    task = data.get("task")
    if task is not None and not isinstance(task, str):
        raise PersonaDemoError(f"{path}: 'task' must be a string such as 'LaMP_4', got {task!r}")
    out: dict[str, str] = {}
    for i, g in enumerate(golds):
        if not isinstance(g, dict) or "id" not in g or "output" not in g:
            raise PersonaDemoError(f"{path}: golds[{i}] must be an object with 'id' and 'output'")
        gid = _as_id(g["id"], path, f"golds[{i}]")
        if gid in out:
            raise PersonaDemoError(f"{path}: id {gid!r} appears twice in golds")
        out[gid] = str(g["output"])
    return task, out


def _validate_questions(data: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise PersonaDemoError(f"{path}: top level must be a list of questions, got {type(data).__name__}")
    seen: set[str] = set()
    for i, q in enumerate(data):
        if not isinstance(q, dict):
            raise PersonaDemoError(f"{path}: question #{i} is not an object")
        if "id" not in q:
            raise PersonaDemoError(f"{path}: question #{i} has no 'id'")
        qid = _as_id(q["id"], path, f"question #{i}")
        if qid in seen:
            raise PersonaDemoError(f"{path}: question id {qid!r} appears twice")
        seen.add(qid)
        if not isinstance(q.get("input"), str):
            raise PersonaDemoError(f"{path}: question {qid!r} has no 'input' string")
        profile = q.get("profile", [])
        if not isinstance(profile, list):
            raise PersonaDemoError(
                f"{path}: question {qid!r}: 'profile' must be a list, got {type(profile).__name__}"
            )
        for j, item in enumerate(profile):
            if not isinstance(item, dict):
                raise PersonaDemoError(f"{path}: question {qid!r}: profile[{j}] is not an object")
    return data


SPLITS = ("dev", "test", "heldout", "train")
"""The splits `evaluate` and `significance` read (see `user_split`); train is for fit checks and model-free
baselines."""


def is_heldout_user(user_id: str) -> bool:
    """Whether an author belongs to the held-out share: a fixed hash of the id, so every command agrees."""
    digest = hashlib.sha256(f"heldout:{user_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELDOUT_SHARE


def user_split(data_dir: str | Path, split: str, all_authors: bool = False) -> LampDataset:
    """A split with the held-out authors kept apart: `train`, `dev` and `test` hold the other authors'
    questions, `heldout` the held-out authors' dev and test questions (a time split has every author in
    every split, so their train questions are simply never used). A folder with fewer than
    `MIN_AUTHORS_TO_HOLD_OUT` authors in all (a toy folder) holds none out. `all_authors` reads the split
    file as it is (every author), for plugs trained on every author."""
    if split not in SPLITS:
        raise PersonaDemoError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    names = [name for name in ("train", "dev", "test") if _has_split(data_dir, name)]
    loaded = {name: load_split(data_dir, name) for name in names if name == split or split == "heldout"}
    if split != "heldout" and split not in loaded:
        loaded[split] = load_split(data_dir, split)  # names the missing file
    heldout = set() if all_authors else _heldout_authors(data_dir, names)
    if all_authors and split == "heldout":
        raise PersonaDemoError("the heldout split is the held-out authors: it cannot take every author")
    if split != "heldout":
        dataset = loaded[split]
        dataset.examples = [e for e in dataset.examples if (e.user_id or e.id) not in heldout]
        return dataset
    parts = [loaded[name] for name in ("dev", "test") if name in loaded]
    if not parts:
        raise PersonaDemoError(f"{data_dir}: no dev or test questions to take the held-out authors from")
    examples = [e for part in parts for e in part.examples if (e.user_id or e.id) in heldout]
    if not examples:
        raise PersonaDemoError(
            f"{data_dir}: no held-out authors (it has fewer than {MIN_AUTHORS_TO_HOLD_OUT} authors, or none of "
            "the held-out ones has a dev or test question)"
        )
    return LampDataset(parts[0].task, examples, parts[0].task_name, parts[0].source)


MIN_AUTHORS_TO_HOLD_OUT = 20
"""Below this many authors a folder is a toy (or a test fixture) and keeps every author for training."""


def _heldout_authors(data_dir: str | Path, splits: Sequence[str]) -> set[str]:
    """The folder's held-out authors (ids read from the questions files alone, without validating them)."""
    authors: set[str] = set()
    for name in splits:
        for q in _read_json(Path(data_dir) / f"{name}_questions.json"):
            if isinstance(q, dict):
                authors.add(str(q.get("user_id") or q.get("id")))
    if len(authors) < MIN_AUTHORS_TO_HOLD_OUT:
        return set()
    return {a for a in authors if is_heldout_user(a)}


def _has_split(data_dir: str | Path, split: str) -> bool:
    return (Path(data_dir) / f"{split}_questions.json").is_file()


def load_split(data_dir: str | Path, split: str) -> LampDataset:
    """Load `{split}_questions.json` (+ `{split}_outputs.json` when present) from a LaMP task folder.

    The task comes from outputs.json's "task" or, without outputs (LaMP test), from the input template.
    Every profile item is checked for the fields the task needs, so later code can index them freely.
    """
    data_dir = Path(data_dir)
    q_path = data_dir / f"{split}_questions.json"
    o_path = data_dir / f"{split}_outputs.json"
    questions = _validate_questions(_read_json(q_path), q_path)
    task_name, golds = _read_outputs(o_path) if o_path.exists() else (None, None)
    if task_name is not None:
        try:
            task_from_name(task_name)
        except PersonaDemoError as exc:
            raise PersonaDemoError(f"{o_path}: {exc}") from exc
    task = detect_task(task_name, (q["input"] for q in questions), source=str(q_path))
    spec = get_task(task)

    if golds is not None:
        q_ids = {str(q["id"]) for q in questions}
        missing, extra = sorted(q_ids - golds.keys()), sorted(golds.keys() - q_ids)
        if missing or extra:
            raise PersonaDemoError(
                f"{o_path}: ids do not match {q_path.name} ({len(missing)} questions without a gold, e.g. "
                f"{missing[:3]}; {len(extra)} golds without a question, e.g. {extra[:3]})"
            )

    examples = []
    for q in questions:
        qid = str(q["id"])
        profile = [dict(item) for item in q.get("profile", [])]
        for j, item in enumerate(profile):
            absent = [k for k in spec.profile_fields if k not in item]
            if absent:
                raise PersonaDemoError(
                    f"{q_path}: question {qid!r}: profile[{j}] lacks {', '.join(absent)} (LaMP-{task} needs "
                    f"{', '.join(spec.profile_fields)})"
                )
        try:
            query = extract_query(spec, q["input"])
        except PersonaDemoError as exc:
            raise PersonaDemoError(f"{q_path}: question {qid!r}: {exc}") from exc
        user = q.get("user_id")
        examples.append(
            LampExample(
                id=qid,
                user_id=None if user is None else str(user),
                input=q["input"],
                query=query,
                profile=profile,
                target=None if golds is None else golds[qid],
            )
        )
    return LampDataset(task=task, examples=examples, task_name=task_name or "", source=str(data_dir))


def write_predictions(path: str | Path, task: int | str | LampTask, preds: Mapping[str, Any]) -> Path:
    """Write predictions in the official outputs format {"task": "LaMP_k", "golds": [{"id", "output"}]}.

    A string task name is written as given (after validation), so e.g. "LaMP_2M" round-trips.
    """
    name = task if isinstance(task, str) else get_task(task).official_name
    get_task(name)  # validate
    path = Path(path)
    payload = {"task": name, "golds": [{"id": str(k), "output": str(v)} for k, v in preds.items()]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    except OSError as exc:
        raise PersonaDemoError(f"{path}: cannot write predictions ({exc})") from exc
    return path


def read_predictions(path: str | Path) -> tuple[str, dict[str, str]]:
    """Read an outputs-format file (predictions or golds) -> (task name, id -> output)."""
    path = Path(path)
    task, out = _read_outputs(path)
    if task is None:
        raise PersonaDemoError(f"{path}: no 'task' name")
    get_task(task)
    return task, out
