"""Metrics against hand-computed values and the official LaMP evaluator's edge cases; paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from persona_demo.errors import PersonaDemoError
from persona_demo.evaluation.metrics import (
    classification_metrics,
    classification_per_example,
    compute_metrics,
    label_indices,
    macro_f1,
    paired_bootstrap,
    per_example_scores,
    rating_metrics,
    rating_per_example,
    rating_value,
    rouge_metrics,
    rouge_per_example,
)
from persona_demo.tasks.lamp import LAMP2_TAGS

LABELS = ["[1]", "[2]"]


def test_classification_hand_example() -> None:
    # indices: preds [0, 1, -1, 0], golds [0, 1, 0, 1] -> 2/4 correct
    # class 0: tp1 fp1 fn1 -> F1 2/4; class 1: tp1 fp0 fn1 -> F1 2/3; macro = 7/12
    m = classification_metrics(["[1]", " [2] ", "[3]", "[1]"], ["[1]", "[2]", "[1]", "[2]"], LABELS)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(7 / 12)


def test_classification_edge_cases() -> None:
    # exact, case-sensitive match after strip; empty and verbose answers are errors (-1)
    assert label_indices(["comedy", " comedy\n", "Comedy", "", "comedy!"], LAMP2_TAGS).tolist() == [
        2,
        2,
        -1,
        -1,
        -1,
    ]
    assert classification_per_example(["", "It is [1]", "[2]"], ["[1]", "[1]", "[2]"], LABELS) == [
        0.0,
        0.0,
        1.0,
    ]
    # F1 averages over all 15 tags, absent ones scoring 0
    m = classification_metrics(["comedy", "action"], ["comedy", "action"], LAMP2_TAGS)
    assert m == {"accuracy": 1.0, "f1": pytest.approx(2 / 15)}
    # an invalid prediction is not a class of its own but costs the gold class its recall
    m = classification_metrics(["[1]", "???"], ["[1]", "[2]"], LABELS)
    assert m["accuracy"] == 0.5 and m["f1"] == pytest.approx((1.0 + 0.0) / 2)
    # like the official mapping, a gold outside the label set maps to -1 too (and then equals a -1 prediction)
    assert classification_per_example(["x"], ["y"], LABELS) == [1.0]


def test_macro_f1_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for n_labels in (2, 5, 15):
        for _ in range(20):
            gold = rng.integers(0, n_labels, size=30)
            pred = rng.integers(-1, n_labels, size=30)
            ref = metrics.f1_score(gold, pred, labels=list(range(n_labels)), average="macro", zero_division=0)
            assert macro_f1(pred, gold, n_labels) == pytest.approx(ref)


def test_rating_hand_example_with_official_fallback() -> None:
    preds = ["5", "4.0", " 3 ", "great", "", "nan"]
    golds = ["4", "4", "1", "2", "5", "3"]
    # non-numeric -> the farther of 1.0/5.0: gold 2 -> 5.0, gold 5 -> 1.0, gold 3 (tie) -> 5.0
    assert [rating_value(p, g) for p, g in zip(preds, golds)] == [5.0, 4.0, 3.0, 5.0, 1.0, 5.0]
    assert rating_per_example(preds, golds)["abs_error"] == [1.0, 0.0, 2.0, 3.0, 4.0, 2.0]
    m = rating_metrics(preds, golds)
    assert m["mae"] == pytest.approx(2.0)
    assert m["rmse"] == pytest.approx(math.sqrt(34 / 6))
    assert rating_value("7", "5") == 7.0  # out of range is kept, as in the official float() parse
    with pytest.raises(PersonaDemoError, match="gold rating"):
        rating_metrics(["1"], ["five"])


def test_rouge_hand_example() -> None:
    gold = "The cat sat on the mat"
    per = rouge_per_example(["the cat sat", "", "Mat on the cat!"], [gold] * 3)
    # 1) unigram P=1 R=1/2 -> 2/3, LCS 3 -> 2/3; 2) empty -> 0; 3) unigram P=1 R=4/6 -> 0.8, LCS 2 -> P=1/2 R=1/3 -> 0.4
    assert per["rouge1"] == pytest.approx([2 / 3, 0.0, 0.8])
    assert per["rougeL"] == pytest.approx([2 / 3, 0.0, 0.4])
    m = rouge_metrics(["the cat sat", "", "Mat on the cat!"], [gold] * 3)
    assert m == {"rouge1": pytest.approx((2 / 3 + 0.8) / 3), "rougeL": pytest.approx((2 / 3 + 0.4) / 3)}
    assert rouge_per_example(["cats running"], ["cat runs"])["rouge1"] == [0.0]  # no stemming


def test_compute_metrics_dispatch_and_alignment() -> None:
    assert compute_metrics(1, {"b": "[2]", "a": "[1]"}, {"a": "[1]", "b": "[1]"})["accuracy"] == 0.5
    assert compute_metrics("LaMP_3", ["1"], ["2"]) == {"mae": 1.0, "rmse": 1.0}
    assert set(compute_metrics(7, ["a b"], ["a b"])) == {"rouge1", "rougeL"}
    assert per_example_scores(2, ["comedy", "x"], ["comedy", "comedy"]) == {"accuracy": [1.0, 0.0]}
    with pytest.raises(PersonaDemoError, match="do not match"):
        compute_metrics(4, {"a": "x"}, {"b": "x"})
    with pytest.raises(PersonaDemoError, match="both as lists"):
        compute_metrics(4, ["x"], {"b": "x"})
    with pytest.raises(PersonaDemoError, match="2 predictions for 1 golds"):
        compute_metrics(4, ["x", "y"], ["x"])
    with pytest.raises(PersonaDemoError, match="no examples"):
        compute_metrics(3, [], [])


def test_bootstrap_identical_inputs_give_zero_interval() -> None:
    a = [0.1, 0.5, 0.9, 0.3]
    assert paired_bootstrap(a, a) == {"diff": 0.0, "low": 0.0, "high": 0.0}
    assert paired_bootstrap(a, a, groups=["u1", "u1", "u2", "u3"]) == {"diff": 0.0, "low": 0.0, "high": 0.0}


def test_bootstrap_contains_true_difference_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, size=400)
    a = b + 0.1 + rng.normal(0, 0.2, size=400)  # true mean difference 0.1
    r = paired_bootstrap(a, b, n_resamples=2000, seed=1)
    assert r["low"] < 0.1 < r["high"] and r["low"] < r["diff"] < r["high"]
    assert r["high"] - r["low"] < 0.1
    assert paired_bootstrap(a, b, n_resamples=2000, seed=1) == r
    # a constant shift has no sampling variance
    s = paired_bootstrap([x + 0.25 for x in b], b)
    assert (
        s["diff"] == pytest.approx(0.25)
        and s["low"] == pytest.approx(0.25)
        and s["high"] == pytest.approx(0.25)
    )


def test_bootstrap_by_group_is_wider_for_correlated_users() -> None:
    # 10 users x 10 questions; the difference is a per-user effect, so questions of one user are not independent
    effects = np.linspace(-0.4, 0.6, 10)
    diff = np.repeat(effects, 10)
    users = np.repeat([f"u{i}" for i in range(10)], 10).tolist()
    flat = paired_bootstrap(diff, np.zeros(100), seed=0)
    grouped = paired_bootstrap(diff, np.zeros(100), seed=0, groups=users)
    assert flat["diff"] == grouped["diff"] == pytest.approx(effects.mean())
    assert grouped["low"] <= effects.mean() <= grouped["high"]
    assert grouped["high"] - grouped["low"] > 2 * (flat["high"] - flat["low"])


def test_bootstrap_input_errors() -> None:
    with pytest.raises(PersonaDemoError, match="equal-length"):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(PersonaDemoError, match="group labels"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], groups=["a"])
    with pytest.raises(PersonaDemoError, match="no scores"):
        paired_bootstrap([], [])
