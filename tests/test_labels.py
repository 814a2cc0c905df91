"""Label tasks are answered by scoring the label set: the median star for ratings, the likeliest class else."""

from __future__ import annotations

import json
import math

import pytest
import torch

from persona_demo.engine.generation import Row
from persona_demo.errors import PersonaDemoError
from persona_demo.evaluation.evaluate import evaluate
from persona_demo.tasks.labels import choose_label, label_log_probs
from persona_demo.tasks.nll import scoring_row
from tests.support import write_lamp3, write_lamp4

STARS = ("1", "2", "3", "4", "5")


def test_rating_answer_is_the_median_class_answer_the_most_likely():
    probs = torch.tensor(
        [[0.30, 0.0, 0.0, 0.0, 0.70], [0.45, 0.0, 0.10, 0.0, 0.45], [0.4, 0.3, 0.0, 0.0, 0.3]]
    )
    log_probs = probs.clamp(min=1e-9).log()
    # medians: 5 (0.3 < 0.5), 3 (0.45 then 0.55), 2 (0.4 then 0.7); argmax: 5, 1 (first of a tie), 1
    assert choose_label(log_probs, STARS, "rating") == ["5", "3", "2"]
    assert choose_label(log_probs, STARS, "classification") == ["5", "1", "1"]


def test_one_pass_label_scores_equal_each_label_scored_alone(engine, bike_history):
    """The fast path (next-token logits of one prompt) must equal teacher-forcing each label's token."""
    prompts = ["Rate this review from 1 to 5: great bike, fast delivery.", "Rate this: it broke on day one."]
    out = engine.plug_output(["great bike", "it broke"], [bike_history, bike_history])
    fast = label_log_probs(engine, prompts, STARS, out.soft_tokens, out.soft_mask)
    assert fast.shape == (2, 5)
    assert torch.allclose(fast.exp().sum(-1), torch.ones(2), atol=1e-5)
    tokenizer = engine.llm.tokenizer
    for i, prompt in enumerate(prompts):
        base = scoring_row(engine, prompt, "x", out.soft_tokens[i], out.soft_mask[i])
        rows = [
            Row(
                base.prompt_ids,
                base.soft_tokens,
                base.soft_mask,
                tokenizer(s, add_special_tokens=False)["input_ids"][:1],
            )
            for s in STARS
        ]
        nll, _ = engine.llm.token_nll(rows)
        assert torch.allclose(fast[i], torch.log_softmax(-nll.float(), -1), atol=1e-4)


def test_evaluate_scores_labels_on_rating_tasks(engine, tmp_path):
    write_lamp3(tmp_path)
    metrics = evaluate(engine, tmp_path, "dev", "none", tmp_path / "out")
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert metrics["decode"] == "labels"
    assert {g["output"] for g in preds["golds"]} <= set(STARS)
    assert not math.isnan(metrics["mae"]) and metrics["mae"] <= 4


def test_labels_are_refused_on_generation_tasks(engine, tmp_path):
    write_lamp4(tmp_path)
    with pytest.raises(PersonaDemoError, match="no label set"):
        evaluate(engine, tmp_path, "dev", "none", tmp_path / "out", decode="labels")


def test_plugged_and_plain_prompts_share_one_pass(engine, bike_history):
    """One entry per prompt (None = no plug) scores like separate calls: the studio's rating compare."""
    prompt = "Rate this review from 1 to 5: great bike, fast delivery."
    out = engine.plug_output(["great bike"], [bike_history])
    both = label_log_probs(
        engine, [prompt, prompt], STARS, [out.soft_tokens[0], None], [out.soft_mask[0], None]
    )
    plugged = label_log_probs(engine, [prompt], STARS, out.soft_tokens, out.soft_mask)
    plain = label_log_probs(engine, [prompt], STARS)
    assert torch.allclose(both[0], plugged[0], atol=1e-4) and torch.allclose(both[1], plain[0], atol=1e-4)
    assert not torch.allclose(both[0], both[1], atol=1e-4)
