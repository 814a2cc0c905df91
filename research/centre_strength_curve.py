"""How much dev NLL partial centring costs before any training: a trained plug scored at several β.

For each β (0 = the plug as trained) the plug's weights are copied into a plug with `--centre-strength β`,
the centre is set to the training set's mean projected item (as `train --centre-persona` does), and the
training-time dev scores (NLL, contrastive hinge) and collapse detector are printed as JSON lines. This is
how `train --centre-strength` was chosen; it trains nothing.

Usage: PYTHONPATH=. HF_HUB_OFFLINE=1 python research/centre_strength_curve.py PLUG DATA_DIR BETAS [K]
e.g.   ... assets/plugs/huffpost_headline.safetensors ../shared/data/huffpost_headline 0,0.5,0.6 3
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from persona_demo.config import Settings
from persona_demo.engine.cache import disk_embedding_cache
from persona_demo.engine.checkpoint import copy_plug_weights, untrained_plug
from persona_demo.engine.engine import PersonaEngine
from persona_demo.tasks.lamp import load_split
from persona_demo.tasks.nll import prompt_fit
from persona_demo.training.train import PlugTrainer, TrainConfig, to_examples


def main(plug_path: Path, data: Path, betas: list[float], k: int) -> None:
    settings = Settings()
    engine = PersonaEngine.from_settings(settings, cache=disk_embedding_cache(settings))
    config = TrainConfig(retrieval_k=k, contrastive=1.0, contrastive_margin=0.3, eval_limit=64).validated()
    share = {"retrieval_share": 1.0, "share_seed": 0, "fit": prompt_fit(engine, config.max_prompt_tokens)}
    train = to_examples(load_split(data, "train"), 0, k, shuffle_seed=0, **share)
    dev = to_examples(load_split(data, "dev"), 0, k, shuffle_seed=0, **share)[: config.eval_limit]
    trained, _ = engine.read_plug(plug_path)
    for beta in betas:
        shape = {
            "persona_tokens": trained.config.persona_tokens,
            "aggregation": trained.config.aggregation,
        }
        if beta > 0:
            shape |= {"centre_persona": True, "centre_strength": beta}
        engine.plug = untrained_plug(engine.default_plug_config(**shape)).to(engine.loaded_llm.device)
        copy_plug_weights(engine.plug, trained, str(plug_path))
        trainer = PlugTrainer(engine, config)
        if beta > 0:
            trainer.start_centre(train)
        collapse = trainer.dev_diagnostics(dev)
        row = {"beta": beta, **trainer.dev_scores(dev, collapse), **collapse}
        print(json.dumps({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()}))


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        [float(b) for b in sys.argv[3].split(",")],
        int(sys.argv[4]) if len(sys.argv) == 5 else 0,
    )
