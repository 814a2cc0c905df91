"""The persona-voice task: self-supervised examples, NLL scoring and the personal share, real models."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
import torch

from persona_demo.__main__ import main
from persona_demo.data.voice import (
    Post,
    UserPosts,
    is_dev_user,
    load_voice_split,
    read_user_posts,
    user_examples,
)
from persona_demo.engine.checkpoint import read_metadata
from persona_demo.errors import PersonaDemoError
from persona_demo.tasks.nll import (
    ScoringItem,
    derangement,
    nll_report,
    per_user_nll,
    score,
    scoring_row,
    share,
    user_bootstrap,
)
from persona_demo.tasks.persona_prompt import CONTENT_FREE_INSTRUCTIONS
from persona_demo.training.train import TrainConfig, train_plug

HOBBIES = ["cycling", "baking", "chess", "sailing", "gardening", "jazz"]


def user_ids(n_dev: int, n_train: int) -> list[str]:
    """Ids chosen so that the hash split puts n_dev of them in dev and n_train in train."""
    dev, train, i = [], [], 0
    while len(dev) < n_dev or len(train) < n_train:
        uid = f"user{i}"
        (dev if is_dev_user(uid) else train).append(uid)
        i += 1
    return dev[:n_dev] + train[:n_train]


def write_blogs(path, n_dev: int = 3, n_train: int = 5, gz: bool = False) -> list[str]:
    ids = user_ids(n_dev, n_train)
    lines = []
    for k, uid in enumerate(ids):
        hobby = HOBBIES[k % len(HOBBIES)]
        posts = [
            {"date": f"2004-05-0{d}", "text": f"Day {d} of my {hobby} diary: more {hobby} with friends."}
            for d in range(1, 6)
        ]
        posts.append({"date": "2004-05-05", "text": f"Second {hobby} post of the fifth: same-day {hobby}."})
        lines.append(json.dumps({"user": uid, "posts": posts}))
    data = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return ids


def test_examples_split_users_and_never_show_the_target_or_later_posts(tmp_path):
    path = tmp_path / "blogs.jsonl.gz"
    write_blogs(path, gz=True)
    train = load_voice_split(path, "train", targets_per_user=3)
    dev = load_voice_split(path, "dev")
    assert {e.user for e in train}.isdisjoint({e.user for e in dev})
    assert len(dev) == 3 and len({e.user for e in dev}) == 3  # one target per dev user
    assert len(train) == 5 * 3
    for e in train + dev:
        assert e.target not in e.history
        assert e.prompt in CONTENT_FREE_INSTRUCTIONS
    newest = dev[0]
    assert "fifth" in newest.target and len(newest.history) == 4  # days 1-4 only, not the other day-5 post


def test_strict_dates_skip_targets_without_enough_history():
    same_day = UserPosts("u", tuple(Post("2004-01-01", f"post {i} about kites") for i in range(5)))
    assert user_examples(same_day) == []
    undated = UserPosts("u", tuple(Post(None, f"post {i} about kites") for i in range(5)))
    (example,) = user_examples(undated)
    assert example.target == "post 4 about kites" and len(example.history) == 4


def test_voice_prompts_carry_no_topic_and_are_stable():
    """The instruction is content-free (the persona must carry the topic) and the same for the same post."""
    user = UserPosts("u", tuple(Post(f"2004-01-0{d}", f"post {d} about kites and rain") for d in range(1, 6)))
    (first,) = user_examples(user)
    (again,) = user_examples(user)
    assert first.prompt in CONTENT_FREE_INSTRUCTIONS and first.prompt == again.prompt
    assert "kites" not in first.prompt


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", "line 1: not JSON"),
        ('{"user": "a"}\n', 'expected {"user"'),
        ('{"user": "a", "posts": [{"date": "x"}]}\n', "every post needs a text"),
        ('{"user": "a", "posts": []}\n{"user": "a", "posts": []}\n', "appears twice"),
        ("", "no users"),
    ],
)
def test_bad_files_get_a_message_naming_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PersonaDemoError, match=message):
        read_user_posts(path)


def test_scoring_matches_a_hand_computed_nll(engine):
    """The NLL of a short target equals −Σ log p(token) from one plain forward pass over the same ids."""
    row = scoring_row(engine, "Say hi.", "Hello there")
    sums, counts = score(engine, ["Say hi."], ["Hello there"])
    ids = torch.tensor([row.prompt_ids + row.target_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(engine.llm.model(input_ids=ids).logits.float()[0], -1)
    start = len(row.prompt_ids)
    expected = -sum(float(logprobs[start + t - 1, tok]) for t, tok in enumerate(row.target_ids))
    assert counts[0] == len(row.target_ids) == len(engine.llm.tokenizer("Hello there")["input_ids"]) + 1
    assert sums[0] == pytest.approx(expected, rel=1e-4)


def test_personal_share_and_per_user_means_by_hand():
    sums, counts = np.array([2.0, 6.0, 3.0]), np.array([1.0, 3.0, 1.0])
    users, means = per_user_nll(sums, counts, ["a", "a", "b"])
    assert users == ["a", "b"] and means.tolist() == [2.0, 3.0]  # token-weighted: (2 + 6) / (1 + 3)
    assert share(none=4.0, shuffled=3.5, own=3.0) == 0.5
    assert math.isnan(share(none=3.0, shuffled=3.0, own=3.0))


def test_user_bootstrap_resamples_users():
    """One user's NLL can't be split: with two users the share only takes the values the users allow."""
    per_user = {"a": np.array([1.0, 3.0])}
    low, high = user_bootstrap(per_user, lambda m: m["a"], n_resamples=500)
    assert low == pytest.approx(1.0) and high == pytest.approx(3.0)  # all-a, all-b draws both occur
    values = np.array([2.0] * 50)
    assert user_bootstrap({"a": values}, lambda m: m["a"]) == (2.0, 2.0)


def test_derangement_never_gives_a_user_their_own_history():
    users = ["a", "a", "a", "b", "c", "d"]
    for seed in range(20):
        order = derangement(users, seed)
        assert sorted(order) == list(range(len(users)))
        assert all(users[i] != users[j] for i, j in enumerate(order))


def test_nll_report_scores_four_conditions_per_user(engine):
    items = [
        ScoringItem("a", "cycling", ["I ride my bike daily."], "Bike lanes", "Write about cycling."),
        ScoringItem("b", "baking", ["Bread from scratch."], "Sourdough tips", "Write about baking."),
        ScoringItem("c", "chess", ["My chess opening."], "Endgames", "Write about chess."),
    ]
    report = nll_report(engine, items, "pplug", shuffles=2, n_resamples=50)
    assert report["users"] == 3 and report["n"] == 3
    assert report["nll"] == report["nll_own"] and report["ppl"] == pytest.approx(math.exp(report["nll_own"]))
    for key in ("nll_none", "nll_no_history", "nll_shuffled"):
        assert math.isfinite(report[key])
    assert report["nll_none"] != report["nll_own"]  # the (untrained) plug changes the scores
    expected = share(report["nll_none"], report["nll_shuffled"], report["nll_own"])
    assert report["personal_share"] == pytest.approx(expected, nan_ok=True)
    assert set(report["own_vs_shuffled"]) == {"diff", "low", "high"}
    with pytest.raises(PersonaDemoError, match="two users"):
        nll_report(engine, items[:1], "pplug")


def test_two_step_voice_training_and_the_evaluate_command(engine, tmp_path, capsys):
    path = tmp_path / "blogs.jsonl"
    write_blogs(path)
    out = tmp_path / "voice.safetensors"
    # in the studio's mode: the content-free instruction under the persona's two most fitting posts
    config = TrainConfig(max_steps=3, batch_size=4, lr=1e-3, eval_every=1, warmup_ratio=0.0, retrieval_k=2)
    result = train_plug(engine, path, out, config)
    assert result["dev_nll_best"] < result["dev_nll_start"]
    metadata = read_metadata(out)
    assert metadata.task == "persona_voice"
    # the collapse detector's figures travel with the plug
    for key in ("persona_cosine_start", "persona_cosine_last"):
        assert -1.0 <= metadata.metrics[key] <= 1.0
    assert 1 / 5 <= metadata.metrics["max_attention_last"] <= 1.0  # 4-5 items per history: at least uniform
    # the CLI loads the default models itself; same ones as the fixture
    code = main(
        [
            "evaluate",
            "--data",
            str(path),
            "--task",
            "persona-voice",
            "--method",
            "pplug-shuffled",
            "--plug",
            str(out),
            "--out",
            str(tmp_path / "eval"),
            "--shuffles",
            "1",
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "persona-voice" and metrics["n"] == 3
    assert metrics["nll"] == metrics["nll_shuffled"] and metrics["ppl"] == pytest.approx(
        math.exp(metrics["nll"])
    )
    assert "vs_none" in metrics and "personal_share_ci" in metrics
    assert -1 <= metrics["persona_cosine"] <= 1  # the collapse detector on the whole split
    assert metrics["persona_cosine_by_token"][0] == metrics["persona_cosine"]


def test_voice_evaluate_refuses_a_lamp_method(tmp_path, capsys):
    path = tmp_path / "blogs.jsonl"
    write_blogs(path)
    assert main(["evaluate", "--data", str(path), "--method", "bm25", "--out", str(tmp_path / "e")]) == 2
    assert "persona-voice supports" in capsys.readouterr().err


def test_text_retrieval_alone_is_scored_without_soft_tokens(engine):
    """`bm25` under --metric nll: own vs another user's retrieved text, no plug (so no no-history row)."""
    items = [
        ScoringItem("a", "cycling", ["I ride my bike daily."], "Bike lanes", "Write about cycling."),
        ScoringItem("b", "baking", ["Bread from scratch."], "Sourdough tips", "Write about baking."),
    ]
    seen: list[tuple[int, int]] = []

    def with_text(i: int, j: int) -> str:
        seen.append((i, j))
        return f"{items[j].history[0]} {items[i].prompt}"

    report = nll_report(engine, items, "bm25", own_prompt=with_text, shuffles=1, n_resamples=20)
    assert "nll_no_history" not in report and report["nll"] == report["nll_own"]
    assert sorted(seen) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # own texts, then the other user's
    own = score(engine, [with_text(0, 0), with_text(1, 1)], ["Bike lanes", "Sourdough tips"])
    assert report["nll_own"] == pytest.approx(float(np.mean(own[0] / own[1])), rel=1e-5)


def test_hybrid_prompt_uses_the_right_users_items_never_the_question(tmp_path):
    """pplug+bm25: own = the user's own retrieved item; shuffled = the other user's; the gold never leaks."""
    from persona_demo.evaluation.evaluate_nll import lamp_items, rag_prompt_builder
    from tests.support import write_lamp4

    write_lamp4(tmp_path)
    examples, _, task = lamp_items(tmp_path, "dev", 0)
    prompt = rag_prompt_builder(task, examples, k=1)
    own, other = prompt(0, 0), prompt(0, 1)
    assert "Cycling news" in own and "Baking" not in own
    assert "Baking news" in other and "Cycling news" not in other
    for i, example in enumerate(examples):
        assert example.target not in prompt(i, i) and example.input in prompt(i, i)


def test_typed_histories_are_what_a_person_types():
    from persona_demo.data.voice import TYPED_TEXTS, TYPED_WORDS, VoiceExample, typed_examples, typed_history

    posts = [f"post {n} " + " ".join(f"w{i}" for i in range(100)) for n in range(12)] + ["too short"]
    typed = typed_history(posts, 6, 40)
    assert len(typed) == 6 and typed[-1].startswith("post 11") and all(len(t.split()) == 40 for t in typed)
    assert typed_history(["a b", "c d"], 6, 40) == ["a b", "c d"]  # too few long posts: any posts
    examples = [VoiceExample(str(u), "Write a blog post.", posts, "target") for u in range(200)]
    mixed = typed_examples(examples, 0.5, seed=0)
    short = [e for e in mixed if e.history != posts]
    assert 60 < len(short) < 140  # about half, seeded
    for example in short:
        assert TYPED_TEXTS[0] <= len(example.history) <= TYPED_TEXTS[1]
        assert all(TYPED_WORDS[0] <= len(t.split()) <= TYPED_WORDS[1] for t in example.history)
    assert typed_examples(examples, 0.5, seed=0) == mixed and typed_examples(examples, 0.0, 0) == examples


def test_the_typed_profile_is_for_blog_files_only(tmp_path, capsys):
    lamp = tmp_path / "lamp"
    lamp.mkdir()
    args = [
        "evaluate",
        "--data",
        str(lamp),
        "--method",
        "none",
        "--profile",
        "typed",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) != 0
    assert "--profile typed is for a blog file" in capsys.readouterr().err
