"""LaMP reader/writer: every task's template, the error messages, and the real data folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persona_demo.errors import PersonaDemoError
from persona_demo.tasks.lamp import (
    LAMP2_TAGS,
    TASKS,
    LampDataset,
    LampExample,
    detect_task,
    extract_query,
    get_task,
    load_split,
    read_predictions,
    task_from_input,
    task_from_name,
    write_predictions,
)
from tests.support import shared_data

TAGS = ", ".join(LAMP2_TAGS)
# task -> (input, query, gold, profile item)
SAMPLES: dict[int, tuple[str, str, str, dict]] = {
    1: (
        (
            'For an author who has written the paper with the title "Deep Nets", which reference is related? '
            'Just answer with [1] or [2] without explanation. [1]: "Shallow Trees" [2]: "Deep Forests"'
        ),
        "Deep Nets",
        "[2]",
        {"id": "p1", "title": "Deep Learning", "abstract": "We study nets.", "date": "2019"},
    ),
    2: (
        (
            "Which tag does this movie relate to among the following tags? Just answer with the tag name without "
            f"further explanation. tags: [{TAGS}] description: A robot falls in love."
        ),
        "A robot falls in love.",
        "sci-fi",
        {"id": "p2", "description": "Two friends rob a bank.", "tag": "comedy"},
    ),
    3: (
        (
            "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
            "without further explanation. review: Great strings."
        ),
        "Great strings.",
        "5",
        {"id": "p3", "text": "Broke fast.", "score": "2", "date": "2013-03-09"},
    ),
    4: (
        "Generate a headline for the following article: Markets rose today.",
        "Markets rose today.",
        "Stocks Up",
        {
            "id": "p4",
            "text": "Rain all week.",
            "title": "Wet Week",
            "category": "WEATHER",
            "date": "2020-01-02",
        },
    ),
    5: (
        "Generate a title for the following abstract of a paper: We propose X.",
        "We propose X.",
        "X: A Method",
        {"id": "p5", "title": "Y Works", "abstract": "We show Y.", "date": "2010-05", "year": "2010"},
    ),
    6: (
        "Generate a subject for the following email: Meeting at 5.",
        "Meeting at 5.",
        "Meeting",
        {"id": "p6", "text": "Lunch on Friday?", "title": "Lunch"},
    ),
    7: (
        "Paraphrase the following tweet without any explanation before or after it: so happy today",
        "so happy today",
        "feeling great today",
        {"id": "p7", "text": "rainy again", "date": "2015-01-01"},
    ),
}


def write_split(
    folder: Path, split: str, questions: object, outputs: object | None = None, *, raw: str | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    q_path = folder / f"{split}_questions.json"
    q_path.write_text(raw if raw is not None else json.dumps(questions), encoding="utf-8")
    if outputs is not None:
        (folder / f"{split}_outputs.json").write_text(json.dumps(outputs), encoding="utf-8")
    return q_path


def task_folder(tmp_path: Path, task: int, name: str | None = None, with_outputs: bool = True) -> Path:
    inp, _, gold, item = SAMPLES[task]
    questions = [
        {"id": f"{task}00", "user_id": "u1", "input": inp, "profile": [item, {**item, "id": "px"}]},
        {"id": f"{task}01", "input": inp, "profile": []},
    ]
    outputs = {
        "task": name or f"LaMP_{task}",
        "golds": [{"id": f"{task}00", "output": gold}, {"id": f"{task}01", "output": gold}],
    }
    folder = tmp_path / f"lamp{task}"
    write_split(folder, "dev", questions, outputs if with_outputs else None)
    return folder


@pytest.mark.parametrize("task", sorted(SAMPLES))
def test_load_split_every_task(tmp_path: Path, task: int) -> None:
    inp, query, gold, item = SAMPLES[task]
    ds = load_split(task_folder(tmp_path, task), "dev")
    assert isinstance(ds, LampDataset) and ds.task == task and len(ds) == 2
    assert ds.task_name == f"LaMP_{task}" and ds.spec is TASKS[task]
    first, second = ds.examples
    assert isinstance(first, LampExample)
    assert (first.id, first.user_id, first.input, first.query, first.target) == (
        f"{task}00",
        "u1",
        inp,
        query,
        gold,
    )
    assert first.profile[0] == item  # every field kept, including extras such as "category"/"year"
    assert second.user_id is None and second.profile == []
    assert ds.golds() == {f"{task}00": gold, f"{task}01": gold}


@pytest.mark.parametrize("task", sorted(SAMPLES))
def test_test_split_without_outputs_detects_task_from_template(tmp_path: Path, task: int) -> None:
    ds = load_split(task_folder(tmp_path, task, with_outputs=False), "dev")
    assert ds.task == task
    assert all(e.target is None for e in ds) and ds.golds() == {}


@pytest.mark.parametrize(
    ("name", "number"),
    [("LaMP_4", 4), ("LaMP-4", 4), ("LaMP_time_4", 4), ("lamp-user-7", 7), ("LaMP_2M", 2), ("LaMP1", 1)],
)
def test_task_from_name(name: str, number: int) -> None:
    assert task_from_name(name) == number


@pytest.mark.parametrize("name", ["LaMP_8", "LaMP_0", "LaMP_2N", "LaMP_4M", "news", ""])
def test_task_from_name_rejects(name: str) -> None:
    with pytest.raises(PersonaDemoError, match="unknown LaMP task"):
        task_from_name(name)


def test_detect_task() -> None:
    assert (
        task_from_input("  paraphrase the following tweet without any explanation before or after it: x") == 7
    )
    assert task_from_input("Tell me a joke") is None
    assert detect_task(inputs=[SAMPLES[3][0], SAMPLES[3][0]]) == 3
    assert detect_task("LaMP_time_5", [SAMPLES[5][0]]) == 5
    with pytest.raises(PersonaDemoError, match="looks like LaMP-3"):
        detect_task("LaMP_4", [SAMPLES[3][0]], source="x.json")
    with pytest.raises(PersonaDemoError, match="mix"):
        detect_task(inputs=[SAMPLES[3][0], SAMPLES[4][0]])
    with pytest.raises(PersonaDemoError, match="cannot tell"):
        detect_task(inputs=[SAMPLES[3][0], "Tell me a joke"])


def test_extract_query_edge_cases() -> None:
    # LaMP-1 stops at the first '",' after the title, as PPlug's code does
    assert extract_query(1, 'with the title "A, B", which reference [1]: "x" [2]: "y"') == "A, B"
    # "Just" vs "just" and a missing space after the colon both work
    assert extract_query("LaMP_3", "What is the score ... review:Nice") == "Nice"
    with pytest.raises(PersonaDemoError, match="article:"):
        extract_query(4, "Write a headline about cats")


def test_history_text_and_rag_rendering_per_task() -> None:
    expected = {
        1: ("Deep Learning We study nets.", '"Deep Learning"'),
        2: ("Two friends rob a bank.", 'the tag for the movie: "Two friends rob a bank." is "comedy" '),
        3: ("Broke fast.", '2 is the score for "Broke fast." '),
        4: ("Rain all week. Wet Week", '"Wet Week" is the title for "Rain all week." '),
        5: ("Y Works We show Y.", '"Y Works" is a title for "We show Y." '),
        6: ("Lunch on Friday? Lunch", '"Lunch" is the title for "Lunch on Friday?" '),
        7: ("rainy again", '"rainy again" '),
    }
    for task, (history, rag) in expected.items():
        spec = get_task(task)
        item = SAMPLES[task][3]
        assert spec.history_text(item) == history, task
        assert spec.render_item(item) == rag, task
    assert get_task(4).bm25_text(SAMPLES[4][3]) == "Wet Week Rain all week."
    # LaMP-6 title is optional (the id-only LaMP release has none)
    assert get_task(6).history_text({"id": "e", "text": "hi"}) == "hi"
    with pytest.raises(PersonaDemoError, match="'title'"):
        get_task(4).history_text({"id": "n", "text": "body"})


def test_spec_labels_and_kinds() -> None:
    assert TASKS[1].labels == ("[1]", "[2]") and len(TASKS[2].labels) == 15
    assert [TASKS[k].kind for k in range(1, 8)] == ["classification"] * 2 + ["rating"] + ["generation"] * 4


def test_write_and_read_predictions(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "out" / "preds.json", 5, {"a": "Title A", "b": 3})
    assert json.loads(path.read_text()) == {
        "task": "LaMP_5",
        "golds": [{"id": "a", "output": "Title A"}, {"id": "b", "output": "3"}],
    }
    assert read_predictions(path) == ("LaMP_5", {"a": "Title A", "b": "3"})
    write_predictions(path, "LaMP_2M", {"a": "comedy"})
    assert read_predictions(path)[0] == "LaMP_2M"
    with pytest.raises(PersonaDemoError, match="unknown LaMP task"):
        write_predictions(path, "LaMP_9", {})


def test_predictions_feed_back_into_loader(tmp_path: Path) -> None:
    folder = task_folder(tmp_path, 4, name="LaMP_time_4")
    ds = load_split(folder, "dev")
    write_predictions(folder / "test_outputs.json", ds.task_name, {e.id: "x" for e in ds})
    (folder / "test_questions.json").write_text((folder / "dev_questions.json").read_text())
    assert load_split(folder, "test").golds() == {"400": "x", "401": "x"}


# ------------------------------------------------------------------------------------------- errors

GOOD_Q = [{"id": "1", "input": SAMPLES[4][0], "profile": [SAMPLES[4][3]]}]
GOOD_O = {"task": "LaMP_4", "golds": [{"id": "1", "output": "h"}]}


@pytest.mark.parametrize(
    ("questions", "outputs", "raw", "bad_file", "pattern"),
    [
        (None, None, '[{"id": "1",\n "input": }]', "q", r"invalid JSON at line 2, column 11"),
        ({"id": "1"}, GOOD_O, None, "q", "top level must be a list"),
        (GOOD_Q, [GOOD_O], None, "o", "top level must be an object"),
        (GOOD_Q, {"task": "LaMP_4", "golds": {}}, None, "o", "'golds' must be a list"),
        (GOOD_Q, {"task": "LaMP_4", "golds": [{"id": "1"}]}, None, "o", r"golds\[0\]"),
        ([{"input": SAMPLES[4][0]}], GOOD_O, None, "q", "question #0 has no 'id'"),
        ([{"id": "1", "profile": []}], GOOD_O, None, "q", "has no 'input'"),
        (
            [{"id": "1", "input": SAMPLES[4][0], "profile": {"a": 1}}],
            GOOD_O,
            None,
            "q",
            "'profile' must be a list",
        ),
        ([{"id": "1", "input": SAMPLES[4][0], "profile": ["x"]}], GOOD_O, None, "q", r"profile\[0\] is not"),
        (GOOD_Q * 2, GOOD_O, None, "q", "appears twice"),
        (GOOD_Q, {"task": "LaMP_4", "golds": [{"id": "2", "output": "h"}]}, None, "o", "ids do not match"),
        (GOOD_Q, {"task": "LaMP_4", "golds": []}, None, "o", "1 questions without a gold"),
        (GOOD_Q, {"task": "LaMP_9", "golds": [{"id": "1", "output": "h"}]}, None, "o", "unknown LaMP task"),
        (GOOD_Q, {"task": "LaMP_3", "golds": [{"id": "1", "output": "h"}]}, None, "q", "looks like LaMP-4"),
        (
            [{"id": "1", "input": "Tell me a joke", "profile": []}],
            None,
            None,
            "q",
            "cannot tell the LaMP task",
        ),
        (
            [{"id": "1", "input": SAMPLES[4][0], "profile": [{"id": "p", "text": "t"}]}],
            GOOD_O,
            None,
            "q",
            "lacks title",
        ),
        ([{"id": "1", "input": "Tell me a joke", "profile": []}], GOOD_O, None, "q", "no 'article:'"),
    ],
)
def test_load_errors_name_the_file(
    tmp_path: Path, questions: object, outputs: object, raw: str | None, bad_file: str, pattern: str
) -> None:
    folder = tmp_path / "bad"
    write_split(folder, "dev", questions, outputs, raw=raw)
    name = "dev_questions.json" if bad_file == "q" else "dev_outputs.json"
    with pytest.raises(PersonaDemoError, match=pattern) as info:
        load_split(folder, "dev")
    assert name in str(info.value)


def test_missing_questions_file(tmp_path: Path) -> None:
    with pytest.raises(PersonaDemoError, match=r"train_questions\.json: file not found"):
        load_split(tmp_path, "train")


# ------------------------------------------------------------------------------------------- real data

REAL = {
    # folder: (task, {split: (questions, users, (mean, min, max) profile length)}) — from each README.md
    "huffpost_headline": (
        4,
        {
            "train": (1362, 124, (22.7, 3, 32)),
            "dev": (279, 97, (18.3, 3, 32)),
            "test": (194, 97, (20.2, 6, 32)),
        },
    ),
    "acl_title": (
        5,
        {
            "train": (533, 533, (10.0, 4, 20)),
            "dev": (127, 127, (9.5, 4, 20)),
            "test": (137, 137, (9.5, 4, 20)),
        },
    ),
    "amazon_mi_rating": (
        3,
        {
            "train": (998, 998, (6.2, 4, 37)),
            "dev": (220, 220, (5.9, 4, 24)),
            "test": (197, 197, (6.7, 4, 41)),
        },
    ),
    "amazon_mi_review_title": (
        4,
        {
            "train": (991, 991, (6.2, 4, 37)),
            "dev": (217, 217, (5.9, 4, 24)),
            "test": (195, 195, (6.7, 4, 41)),
        },
    ),
}


@pytest.mark.parametrize("folder", sorted(REAL))
def test_real_folders_match_their_readme(folder: str) -> None:
    path = shared_data(folder)
    task, splits = REAL[folder]
    for split, (n_questions, n_users, (mean, lo, hi)) in splits.items():
        ds = load_split(path, split)
        assert ds.task == task, split
        assert len(ds) == n_questions, split
        assert len({e.user_id for e in ds}) == n_users, split
        lengths = [len(e.profile) for e in ds]
        assert (round(sum(lengths) / len(lengths), 1), min(lengths), max(lengths)) == (mean, lo, hi), split
        assert all(e.target and e.query and e.query in e.input for e in ds), split
        spec = ds.spec
        assert all(spec.history_text(p) for e in ds for p in e.profile), split
