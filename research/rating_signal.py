"""Where is the rating signal? (the diagnosis of the missed "MAE below always-5" target)

1. The LLM: each dev question's five stars scored as `evaluate --decode labels` scores them, with no plug
   (`none`) and with the plug's soft tokens (`pplug`): one JSON line each with the mean star distribution, the
   median-rule MAE, and ranking AUCs against the gold (P(5), and the expected star, for "gold is 5" vs "below
   5"). An AUC of 0.5 means the scores know nothing about the gold, so no decision rule over them (median,
   thresholds, calibration) can beat always-5.
2. Upper bounds for what the plug's inputs could carry: multinomial logistic regressions trained on the
   train split and scored on dev with the median rule, on the encoder's review vector, plus the mean of the
   reviewer's history vectors (the review texts alone, as the plug embeds them, or with each review's score
   added last or in words first), or plus two numbers from the history (mean score, share of 5s).

Usage: PYTHONPATH=. HF_HUB_OFFLINE=1 python research/rating_signal.py DATA_DIR PLUG [SPLIT]
e.g.   ... ../shared/data/amazon_mi_rating assets/plugs/amazon_mi_rating.safetensors dev
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from persona_demo.config import Settings
from persona_demo.engine.cache import disk_embedding_cache
from persona_demo.engine.engine import PersonaEngine
from persona_demo.evaluation.evaluate import gold_examples, method_inputs
from persona_demo.tasks.labels import choose_label, label_log_probs

BATCH = 8


def ranking_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """P(a positive row scores above a negative one), ties counting half (the Mann-Whitney AUC)."""
    pos, neg = scores[positive], scores[~positive]
    above = (pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()
    return float(above.mean())


def star_log_probs(
    engine: PersonaEngine, data: Path, split: str, method: str
) -> tuple[torch.Tensor, list[str], list[str]]:
    """[n, 5] log-probabilities of the stars, the gold answers and the label set."""
    dataset, examples = gold_examples(data, split, 0)
    prompts, histories = method_inputs(dataset, examples, method, 1, 0)
    rows = []
    for start in range(0, len(examples), BATCH):
        chunk = range(start, min(start + BATCH, len(examples)))
        soft = mask = None
        if method == "pplug":
            with torch.no_grad():
                out = engine.plug_output([examples[i].query for i in chunk], [histories[i] for i in chunk])
            soft, mask = out.soft_tokens, out.soft_mask
        rows.append(label_log_probs(engine, [prompts[i] for i in chunk], dataset.spec.labels, soft, mask))
    return torch.cat(rows), [e.target for e in examples], list(dataset.spec.labels)


def mean_history_vectors(engine: PersonaEngine, histories: list[list[str]]) -> np.ndarray:
    """[n, d]: each history's mean vector, all texts encoded in one batched (cached) call."""
    vectors = engine.encoder.encode([text for history in histories for text in history]).float().numpy()
    ends = np.cumsum([len(history) for history in histories])
    return np.stack([chunk.mean(0) for chunk in np.split(vectors, ends[:-1])])


def probe_features(engine: PersonaEngine, data: Path, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Feature sets per question (name -> [n, d]) and the gold stars."""
    dataset, examples = gold_examples(data, split, 0)
    review = engine.encoder.encode_queries([e.query for e in examples]).float().numpy()
    renderings = {
        "text only (as the plug embeds it)": [dataset.spec.history_texts(e.profile) for e in examples],
        "score last": [[f"{p['text']} {p['score']}" for p in e.profile] for e in examples],
        "score in words first": [
            [f"Rated {p['score']} out of 5. {p['text']}" for p in e.profile] for e in examples
        ],
    }
    features = {"review vector": review}
    for name, histories in renderings.items():
        features[f"review + mean history vector, {name}"] = np.hstack(
            [review, mean_history_vectors(engine, histories)]
        )
    scores = [[float(p["score"]) for p in e.profile] for e in examples]
    stats = np.array([[np.mean(s), np.mean([x == 5 for x in s])] for s in scores])
    features["review vector + history mean score and share of 5s"] = np.hstack([review, stats])
    return features, np.array([int(e.target) for e in examples])


def linear_probes(engine: PersonaEngine, data: Path, split: str) -> None:
    """Print each feature set's dev MAE (median rule) at two regularisation strengths."""
    train, train_gold = probe_features(engine, data, "train")
    dev, gold = probe_features(engine, data, split)
    for name in train:
        for c in (0.1, 1.0):
            model = LogisticRegression(C=c, max_iter=3000).fit(train[name], train_gold)
            probs = model.predict_proba(dev[name])
            answers = model.classes_[(np.cumsum(probs, 1) < 0.5).sum(1)]
            five = torch.from_numpy(probs[:, list(model.classes_).index(5)])
            report = {
                "probe": name,
                "C": c,
                "mae_median_rule": round(float(np.abs(answers - gold).mean()), 4),
                "mae_always_5": round(float(np.abs(5 - gold).mean()), 4),
                "auc_p5_gold_is_5": round(ranking_auc(five, torch.from_numpy(gold == 5)), 3),
                "answers_below_5": int((answers < 5).sum()),
            }
            print(json.dumps(report), flush=True)


def main(data: Path, plug: Path, split: str) -> None:
    settings = Settings()
    engine = PersonaEngine.from_settings(settings, plug_path=plug, cache=disk_embedding_cache(settings))
    linear_probes(engine, data, split)
    for method in ("none", "pplug"):
        log_probs, golds, labels = star_log_probs(engine, data, split, method)
        gold = torch.tensor([float(g) for g in golds])
        probs = log_probs.exp()
        answers = torch.tensor([float(a) for a in choose_label(log_probs, labels, "rating")])
        expected_star = (probs * torch.tensor([float(label) for label in labels])).sum(-1)
        report = {
            "method": method,
            "n": len(golds),
            "mean_star_probs": [round(float(p), 3) for p in probs.mean(0)],
            "mae_median_rule": round(float((answers - gold).abs().mean()), 4),
            "mae_always_5": round(float((5 - gold).abs().mean()), 4),
            "auc_p5_gold_is_5": round(ranking_auc(probs[:, labels.index("5")], gold == 5), 3),
            "auc_expected_star_gold_is_5": round(ranking_auc(expected_star, gold == 5), 3),
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "dev")
