"""The 4-bit path on a real GPU: plug forward, generation and a training step with the LLM in nf4.

Marked `gpu` and skipped where there is no CUDA device (CI has none): it runs in scripts/gpu_check.sh on a GPU
machine. The CPU-side tests below keep the GPU bench's shapes and command honest everywhere."""

from __future__ import annotations

import pytest
import torch

from persona_demo.bench.shapes import SHAPES, ShapeBenchConfig, main, random_llm, table
from persona_demo.engine.generation import GenerationOptions, Row
from persona_demo.engine.plug import PersonaPlug, PlugConfig

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@pytest.mark.gpu
@needs_cuda
def test_plug_generates_and_trains_over_an_nf4_llm_on_cuda():
    import bitsandbytes as bnb

    llm = random_llm("135m", "nf4", "cuda")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in llm.model.modules())
    plug = PersonaPlug(PlugConfig(encoder_dim=384, llm_dim=llm.hidden_size, token_norm=1.0)).cuda()
    history = torch.nn.functional.normalize(torch.randn(2, 20, 384, device="cuda"), dim=-1)
    query = torch.nn.functional.normalize(torch.randn(2, 384, device="cuda"), dim=-1)
    out = plug(query, history)
    prompt = list(range(10, 60))
    rows = [Row(prompt, out.soft_tokens[i].detach(), out.soft_mask[i]) for i in range(2)] + [Row(prompt)]
    texts = llm.generate(rows, GenerationOptions(max_new_tokens=4, min_new_tokens=4))
    assert [len(t.split()) for t in texts] == [4, 4, 4]
    before = [p.detach().clone() for p in plug.parameters()]
    optimizer = torch.optim.AdamW(plug.parameters(), lr=1e-2)
    nll, count = llm.token_nll(
        [Row(prompt, out.soft_tokens[i], out.soft_mask[i], target_ids=[5, 6, 7]) for i in range(2)]
    )
    (nll.sum() / count.sum()).backward()
    optimizer.step()
    assert torch.isfinite(nll).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, plug.parameters()))


def test_the_135m_shape_is_the_embedded_models_config(loaded_llm):
    config = loaded_llm.model.config
    for key, value in SHAPES["135m"].items():
        if key == "rope_theta" and not hasattr(config, key):  # transformers 5 keeps it in rope_parameters
            assert config.rope_parameters["rope_theta"] == pytest.approx(value)
            continue
        assert getattr(config, key) == pytest.approx(value), key


def test_the_shapes_bench_refuses_cuda_without_a_gpu_and_unknown_shapes(capsys):
    if not torch.cuda.is_available():
        assert main(["--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["--device", "cpu", "--shapes", "70b"]) == 2
    assert "unknown shape" in capsys.readouterr().err


def test_the_shapes_table_has_a_row_per_model_and_says_where_it_ran():
    row = {
        "shape": "8b",
        "dtype": "nf4",
        "weights_mb": 5600.0,
        "peak_memory_mb_batch2": 6100.0,
        "prefill_tokens_per_s_batch1": 9000.0,
        "prefill_tokens_per_s_batch2": 15000.0,
        "decode_tokens_per_s_batch1": 40.0,
        "decode_tokens_per_s_batch2": 78.5,
        "plug_overhead": 1.01,
        "side_by_side": 1.04,
        "train_examples_per_s": 12.5,
    }
    report = {"environment": {"device": "cuda", "gpu": "NVIDIA H200"}, "results": [row]}
    text = table(report)
    assert text.startswith("GPU/CPU: NVIDIA H200")
    assert "| 8b | nf4 | 5,600 | 6,100 | 9,000 / 15,000 | 40.0 / 78.5 | 1.010 | 1.040 | 12.50 |" in text
    assert ShapeBenchConfig().prompt_tokens == 256  # the VRAM target's prompt length
