"""Evaluation writes the official predictions format and flat metrics for every method."""

from __future__ import annotations

import json

import pytest

from persona_demo.errors import PersonaDemoError
from persona_demo.evaluation.evaluate import (
    METHODS,
    RATING_BASELINES,
    evaluate,
    gold_examples,
    method_inputs,
    rating_baseline,
)
from tests.support import write_lamp3, write_lamp4


@pytest.mark.parametrize("method", [m for m in METHODS if m not in RATING_BASELINES])
def test_evaluate_writes_both_files(engine, tmp_path, method):
    data = tmp_path / "data"
    data.mkdir()
    write_lamp4(data)
    metrics = evaluate(engine, data, "dev", method, tmp_path / "out", limit=2, max_new_tokens=4)
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert preds["task"] == "LaMP_4" and {g["id"] for g in preds["golds"]} == {"0", "1"}
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == metrics
    assert saved["n"] == 2 and saved["method"] == method and 0 <= saved["rouge1"] <= 1
    assert saved["prompt_tokens_mean"] > 0 and saved["sec_per_example"] > 0


@pytest.mark.parametrize("method", ["pplug-shuffled", "pplug+bm25-shuffled"])
def test_shuffled_controls_never_give_a_user_their_own_items(tmp_path, method):
    write_lamp4(tmp_path)
    dataset, examples = gold_examples(tmp_path, "dev")
    prompts, histories = method_inputs(dataset, examples, method, k=2, seed=0)
    own_prompts, own_histories = method_inputs(
        dataset, examples, method.replace("-shuffled", ""), k=2, seed=0
    )
    assert sorted(map(tuple, histories)) == sorted(map(tuple, own_histories))  # a permutation of users
    hobbies = ["Cycling", "Baking", "Chess", "Sailing"]
    for i, (history, prompt) in enumerate(zip(histories, prompts)):
        own = hobbies[i]
        assert history != own_histories[i] and not any(own in text for text in history)
        assert prompt.endswith(examples[i].input)  # this user's own question, whatever was retrieved
        if method == "pplug+bm25-shuffled":
            retrieved = prompt.removesuffix(examples[i].input)
            assert f"{own} news" not in retrieved and any(f"{h} news" in retrieved for h in hobbies)
            assert f"{own} news" in own_prompts[i]


def test_unknown_method_is_refused(engine, tmp_path):
    with pytest.raises(PersonaDemoError, match="unknown method"):
        evaluate(engine, tmp_path, "dev", "magic", tmp_path / "out")


def test_significance_and_report_read_two_runs(engine, tmp_path):
    from persona_demo.cli.report import report
    from persona_demo.cli.significance import significance

    data = tmp_path / "data"
    data.mkdir()
    write_lamp4(data)
    for method in ("none", "pplug"):
        evaluate(engine, data, "dev", method, tmp_path / method, limit=4, max_new_tokens=4)
    result = significance(data, "dev", tmp_path / "pplug", tmp_path / "none", resamples=200, seed=0)
    assert result["n"] == 4 and result["users"] == 4
    ci = result["rouge1"]
    assert ci["low"] <= ci["diff"] <= ci["high"]
    same = significance(data, "dev", tmp_path / "none", tmp_path / "none", resamples=50, seed=0)
    assert same["rouge1"] == {"diff": 0.0, "low": 0.0, "high": 0.0}
    table = report([tmp_path / "none", tmp_path / "pplug"])
    assert table.splitlines()[0].startswith("| task | split | method | n | rouge1 | rougeL |")
    assert "| LaMP_4 | dev | pplug | 4 |" in table


def test_significance_refuses_a_folder_without_predictions(tmp_path):
    from persona_demo.cli.significance import significance

    data = tmp_path / "data"
    data.mkdir()
    write_lamp4(data)
    with pytest.raises(PersonaDemoError, match="predictions.json not found"):
        significance(data, "dev", tmp_path / "a", tmp_path / "b", resamples=10, seed=0)


def test_rating_baselines_need_no_model(engine, tmp_path):
    write_lamp3(tmp_path)
    five = evaluate(engine, tmp_path, "dev", "always-5", tmp_path / "five")
    mean = evaluate(engine, tmp_path, "dev", "profile-mean", tmp_path / "mean")
    assert five["mae"] == pytest.approx((3 + 1) / 2)
    # grumpy: mean 1.67 -> 2 (gold 2); happy: mean 4.33 -> 4 (gold 4)
    assert mean["mae"] == 0.0 and mean["prompt_tokens_mean"] == 0
    median = evaluate(engine, tmp_path, "dev", "profile-median", tmp_path / "median")
    assert median["mae"] == 0.0  # grumpy: median 2 (gold 2); happy: median 4 (gold 4)
    skewed = [{"score": "1"}, {"score": "5"}, {"score": "5"}, {"text": "no score"}]
    assert rating_baseline("profile-mean", skewed) == "4" and rating_baseline("profile-median", skewed) == "5"
    assert rating_baseline("profile-median", [{"score": "4"}, {"score": "5"}]) == "5"  # 4.5: half rounds up
    with pytest.raises(PersonaDemoError, match="rating tasks"):
        data = tmp_path / "lamp4"
        data.mkdir()
        write_lamp4(data)
        evaluate(engine, data, "dev", "always-5", tmp_path / "x")


def test_record_stores_dev_scores_in_the_plug(engine, tmp_path, capsys):
    from persona_demo.__main__ import main
    from persona_demo.engine.checkpoint import new_plug_metadata, read_metadata, save_plug

    data = tmp_path / "data"
    data.mkdir()
    write_lamp4(data)
    plug = tmp_path / "plug.safetensors"
    save_plug(
        plug,
        engine.plug,
        new_plug_metadata(engine.plug, engine.loaded_llm.model_id, engine.encoder.encoder_id),
    )
    args = ["evaluate", "--data", str(data), "--split", "dev", "--plug", str(plug), "--max-new-tokens", "4"]
    assert main([*args, "--method", "pplug", "--out", str(tmp_path / "out"), "--record"]) == 0
    recorded = read_metadata(plug).metrics
    assert recorded["dev_n"] == 4 and 0 <= recorded["dev_rouge1"] <= 1
    nll_run = [*args, "--metric", "nll", "--shuffles", "1", "--out", str(tmp_path / "nll"), "--record"]
    assert main([*nll_run, "--method", "pplug"]) == 0
    recorded = read_metadata(plug).metrics
    measured = json.loads((tmp_path / "nll" / "metrics.json").read_text())
    assert recorded["dev_nll"] == pytest.approx(measured["nll_own"])  # the status line's "dev nll"
    assert recorded["dev_ppl"] == pytest.approx(measured["ppl"])
    assert main([*args, "--method", "none", "--out", str(tmp_path / "none"), "--record"]) == 2
    assert "--record needs --method pplug" in capsys.readouterr().err
    train = [a if a != "dev" else "train" for a in args]  # write_lamp4's train split = its dev split
    assert main([*train, "--method", "pplug", "--out", str(tmp_path / "train"), "--record"]) == 2
    assert "held-out" in capsys.readouterr().err
    assert main([*train, "--method", "pplug", "--out", str(tmp_path / "train")]) == 0  # a fit check
    assert json.loads((tmp_path / "train" / "metrics.json").read_text())["split"] == "train"


def test_hybrid_reads_as_many_items_as_its_plug_was_trained_with():
    from types import SimpleNamespace

    from persona_demo.cli.evaluate import default_k
    from persona_demo.engine.checkpoint import PlugMetadata
    from persona_demo.engine.plug import PlugConfig

    def engine(training):
        config = PlugConfig(encoder_dim=4, llm_dim=4, token_norm=1.0)
        return SimpleNamespace(plug_metadata=PlugMetadata("llm", "enc", config, training=training))

    assert default_k(engine({"retrieval_k": 3}), "pplug+bm25") == 3
    assert default_k(engine({"retrieval_k": 3}), "pplug+bm25-shuffled") == 3
    assert default_k(engine({"retrieval_k": 3}), "bm25") == 1  # text-only baselines keep LaMP's k=1
    assert default_k(engine({}), "pplug+bm25") == 1
    assert default_k(engine({"retrieval_k": "junk"}), "pplug+bm25") == 1


def test_the_persona_prompt_keeps_as_many_words_as_its_plug_was_trained_with():
    from types import SimpleNamespace

    from persona_demo.cli.evaluate import default_words
    from persona_demo.engine.checkpoint import PlugMetadata
    from persona_demo.engine.plug import PlugConfig
    from persona_demo.tasks.persona_prompt import DEFAULT_PROMPT

    def engine(training):
        config = PlugConfig(encoder_dim=4, llm_dim=4, token_norm=1.0)
        return SimpleNamespace(plug_metadata=PlugMetadata("llm", "enc", config, training=training))

    assert default_words(engine({"retrieval_k": 6, "words_per_text": 80}), "pplug+texts") == 80
    assert default_words(engine({"words_per_text": 80}), "texts") == DEFAULT_PROMPT.words_per_text
    assert default_words(engine({}), "pplug+texts") == DEFAULT_PROMPT.words_per_text
    assert default_words(engine({"words_per_text": "junk"}), "pplug+texts") == DEFAULT_PROMPT.words_per_text
