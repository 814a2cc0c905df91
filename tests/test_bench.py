"""The bench's bookkeeping (no timing asserted: speed targets live in `python -m persona_demo bench`)."""

from __future__ import annotations

import pytest

from persona_demo.bench.bench import (
    ENCODE_NAIVE_SIZE,
    GENERATION_PAIRS_MIN,
    TARGETS,
    BenchConfig,
    _meets,
    encode_history_texts,
    interleaved,
    naive_slice,
    table,
)


def test_interleaved_alternates_flips_the_order_and_warms_up_once():
    calls: list[str] = []
    interleaved(lambda i: calls.append(f"a{i}"), lambda i: calls.append(f"b{i}"), repeats=3)
    assert calls == ["a-1", "b-1", "a0", "b0", "b1", "a1", "a2", "b2"]


def test_interleaved_ratio_is_the_median_of_pair_ratios():
    """Pairs run back to back, so the ratio follows each pair (a fake clock: no timing is asserted)."""
    now = [0.0]
    # warm-up, then 4 pairs: a is 10% slower than b in each, while the machine slows down 2x
    a_durations = iter([9.0, 1.1, 1.1, 2.2, 2.2])
    b_durations = iter([9.0, 1.0, 1.0, 2.0, 2.0])

    def work(durations):
        def run(_: int) -> None:
            now[0] += next(durations)

        return run

    timing = interleaved(work(a_durations), work(b_durations), repeats=4, clock=lambda: now[0])
    assert abs(timing.ratio - 1.1) < 1e-9
    assert (timing.a_s, timing.b_s) == pytest.approx((1.65, 1.5))


def test_naive_encode_loops_take_fresh_slices_of_the_history():
    """Each timed naive loop embeds a different, full-size slice; the warm-up (pair −1) takes the last one."""
    texts = [f"t{i}" for i in range(1000)]
    slices = [naive_slice(texts, i) for i in range(-1, 3)]
    assert all(len(s) == ENCODE_NAIVE_SIZE for s in slices)
    assert slices[0] == texts[-ENCODE_NAIVE_SIZE:]
    assert len({s[0] for s in slices}) == len(slices)
    assert naive_slice(texts[:30], 5) == texts[:30]  # shorter histories: the whole of it


def test_generation_ratios_use_enough_pairs_even_when_quick():
    assert BenchConfig(quick=True, repeats=3).generation_pairs == GENERATION_PAIRS_MIN
    assert BenchConfig(repeats=GENERATION_PAIRS_MIN + 2).generation_pairs == GENERATION_PAIRS_MIN + 2


def test_targets_and_table():
    assert _meets(1.0, "<=", 1.05) and not _meets(1.2, "<=", 1.05) and _meets(6, ">=", 5)
    results = {
        "targets": {
            name: {"target": f"{op} {v}", "value": v, "met": True} for name, (op, v) in TARGETS.items()
        },
        "pplug_vs_rag": {
            "latency_ratio": 0.8,
            "prompt_tokens_ratio": 0.5,
            "pplug_prompt_tokens": 60.0,
            "bm25_k4_prompt_tokens": 120.0,
        },
        "persona_update": {"ms_by_history_size": {"10": 12.0, "10000": 70.0}},
        "side_by_side": {"ratio": 1.16, "both_s": 0.911, "one_s": 0.777},
        "encode_throughput": {
            "batched_texts_per_s": 300.0,
            "naive_texts_per_s": 40.0,
            "texts": 1000,
            "encoder_dtype": "bfloat16",
        },
        "projection": {"100": {"pca_s": 0.001, "umap_warm_s": 0.5}},
        "train_step": {"examples_per_s": 3.0},
        "cold_start": {"warm_s": 9.5, "peak_rss_mb": 900.0},
        "environment": {
            "llm": "x",
            "threads": 2,
            "torch": "2.13.0",
            "cpu": {
                "model": "AMD EPYC",
                "cores": 2,
                "flags": ["avx2", "avx512f", "avx512_bf16"],
                "onednn_max_cpu_isa": "AVX2",
                "kernel_caps": {"ONEDNN_MAX_CPU_ISA": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"},
                "onednn_isa": "no native bf16",
            },
        },
        "chat_reply": {
            "ratio": 2.3,
            "before_s": 4.6,
            "now_s": 2.0,
            "now_form": "float32; generation reads bf16 weight copies for prompts and fp16 ones for decoding",
            "new_tokens": 64,
        },
    }
    text = table(results)
    assert "| plug_overhead ratio | 1.050 | <= 1.05 | yes |" in text
    assert "| side_by_side seconds | both 0.91 s, one 0.78 s | report | |" in text
    assert "| persona_update @ 10000 items | 70.0 ms | ≤ 50 ms | NO |" in text
    assert "| encode batched / naive (1000 texts, bfloat16) | 300 / 40 texts/s | | |" in text
    assert (
        "| chat_reply (64 tokens, both columns, guided) | before (float32 plain, reference pass) 4.60 s, now (float32; "
        "generation reads bf16 weight copies for prompts and fp16 ones for decoding) 2.00 s | report | |"
    ) in text
    assert (
        "| CPU | AMD EPYC, 2 cores, avx512_bf16, ISA cap AVX2 (fbgemm too); oneDNN ISA: no native bf16 | | |"
        in text
    )


def test_a_bench_of_some_figures_has_only_their_targets_and_table_rows():
    """`bench --only side_by_side`: no KeyError for the figures it skipped."""
    results = {
        "side_by_side": {"ratio": 1.1},
        "targets": {"side_by_side": {"target": "<= 1.15", "value": 1.1, "met": True}},
        "environment": {
            "llm": "x",
            "threads": 2,
            "torch": "2.13.0",
            "cpu": {"model": "m", "cores": 2, "flags": [], "onednn_isa": "unknown"},
        },
    }
    text = table(results)
    assert "| side_by_side ratio | 1.100 | <= 1.15 | yes |" in text
    assert "persona_update" not in text and "cold_start" not in text


def test_table_reports_train_scaling():
    results = {
        "targets": {},
        "persona_update": {"ms_by_history_size": {}},
        "encode_throughput": {
            "batched_texts_per_s": 1.0,
            "naive_texts_per_s": 1.0,
            "texts": 1,
            "encoder_dtype": "float32",
        },
        "projection": {},
        "train_step": {"examples_per_s": 3.0},
        "train_scaling": {
            "1": {"examples_per_s": 2.0, "global_batch": 8},
            "2": {"examples_per_s": 2.5, "global_batch": 8, "comm_share": 0.1},
            "speedup": 1.25,
        },
        "cold_start": {},
        "environment": {
            "llm": "x",
            "threads": 2,
            "torch": "2.13.0",
            "cpu": {"model": "m", "cores": 2, "flags": [], "onednn_isa": "unknown"},
        },
    }
    assert (
        "| train_scaling (global batch 8) | 1 process 2.00, 2 processes 2.50 examples/s (×1.25); "
        "communication 10% of a 2-process step | report | |"
    ) in table(results)


def test_encode_history_is_1000_distinct_texts_without_data():
    """--quick has no LaMP folder: the synthetic personas' histories overlap, so it must top up to 1,000."""
    texts = encode_history_texts(BenchConfig(quick=True), 1064)
    assert len(texts) == 1064
    assert len(set(texts)) == 1064
