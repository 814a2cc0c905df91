"""Training and evaluation under `accelerate launch` with 2 real CPU processes (gloo), against 1 process.

The launches are real subprocesses over the embedded models on a tiny LaMP-4 fixture (a few questions, 2-8
steps). Each process uses 1 torch thread, so 1- and 2-process runs do the same arithmetic per example.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
import torch
from safetensors.torch import load_file

from persona_demo.config import Settings
from persona_demo.engine.distributed import Accelerated, Single, launched_by_accelerate, settings_for
from tests.support import free_port, write_lamp4

ROOT = Path(__file__).resolve().parents[1]
TWO_CPU_PROCESSES = ROOT / "configs" / "cpu-2-processes.yaml"


def launch_command(processes: int, *args: str) -> list[str]:
    """`accelerate launch` of `python -m persona_demo ARGS` on 1 process, or 2 (configs/cpu-2-processes.yaml)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(free_port())]
    if processes == 2:
        launcher += ["--config_file", str(TWO_CPU_PROCESSES)]
    else:
        launcher += ["--cpu", "--num_processes", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*launcher, "-m", "persona_demo", *args]


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PERSONA_DEMO_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def run_launch(processes: int, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        launch_command(processes, *args),
        check=False,
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"accelerate: {processes} process(es)" in done.stderr
    return done


def train_only_fixture(folder: Path, n: int) -> Path:
    """A LaMP-4 folder without a dev split: the plug written at the end is the final one (no best-of)."""
    folder.mkdir()
    write_lamp4(folder, n)
    for name in ("dev_questions.json", "dev_outputs.json"):
        (folder / name).unlink()
    return folder


def flat(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([weights[k].flatten().float() for k in sorted(weights)])


# ------------------------------------------------------------------------------------ no subprocesses
def test_shards_cover_every_item_once():
    for processes in (1, 2, 3):
        parts = []
        for index in range(processes):
            dist = Accelerated.__new__(Accelerated)  # the sharding arithmetic, without a process group
            dist.num_processes, dist.process_index = processes, index
            parts.append((dist.shard(list(range(7))), dist.round_robin(list(range(7)))))
        assert [x for shard, _ in parts for x in shard] == list(range(7))  # contiguous, in order
        assert sorted(x for _, rr in parts for x in rr) == list(range(7))
    assert Single().shard([1, 2]) == [1, 2] and Single().gather([3]) == [3]


def test_launch_detection():
    assert launched_by_accelerate({"ACCELERATE_MIXED_PRECISION": "no"})
    assert launched_by_accelerate({"WORLD_SIZE": "2"})
    assert not launched_by_accelerate({"WORLD_SIZE": "1"}) and not launched_by_accelerate({})


def test_sharded_loss_gives_the_whole_batch_gradient(engine, tmp_path):
    """Σ over processes of ∇(nll_r · W / global tokens), averaged as DDP does, = ∇ of the 1-process loss."""
    from persona_demo.tasks.lamp import load_split
    from persona_demo.training.train import PlugTrainer, TrainConfig, to_examples

    write_lamp4(tmp_path)
    batch = to_examples(load_split(tmp_path, "train"))
    histories = [e.history for e in batch]
    trainer = PlugTrainer(engine, TrainConfig(batch_size=4, autocast_bf16=False))
    params = list(engine.plug.parameters())

    nll, count = trainer.batch_nll(batch, histories)
    whole = torch.autograd.grad(nll / count, params)
    shares = [(batch[:1], histories[:1]), (batch[1:], histories[1:])]  # uneven on purpose
    scored = [trainer.batch_nll(b, h) for b, h in shares]
    total = sum(count for _, count in scored)  # what the processes' all-reduce of token counts gives
    grads = [torch.autograd.grad(share_nll * 2 / total, params) for share_nll, _ in scored]
    for w, g0, g1 in zip(whole, *grads):
        assert ((g0 + g1) / 2 - w).norm() <= 1e-3 * w.norm()  # float noise only (padding widths differ)


# ------------------------------------------------------------------------------------ 2 real processes
def test_two_processes_train_the_same_plug_as_one(tmp_path):
    data = train_only_fixture(tmp_path / "data", 4)
    # global batch 4 per micro-step (2 per process), 2 micro-steps accumulated through Accelerate
    args = ["train", "--data", str(data), "--max-steps", "2", "--batch-size", "4", "--grad-accum", "2"]
    args += ["--lr", "1e-2", "--seed", "0"]
    run_launch(1, *args, "--out", str(tmp_path / "one.safetensors"))
    two = run_launch(2, *args, "--out", str(tmp_path / "two.safetensors"))
    assert two.stdout.count('"out"') == 1  # only the main process reports
    one_w, two_w = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")

    from persona_demo.engine.checkpoint import read_metadata, untrained_plug

    start = untrained_plug(read_metadata(tmp_path / "one.safetensors").config, seed=0).state_dict()
    moved = (flat(one_w) - flat(start)).norm()
    assert moved > 0
    assert (flat(one_w) - flat(two_w)).norm() / moved < 1e-2  # same path, to float tolerance
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data",
        "one.json",
        "one.safetensors",
        "two.json",
        "two.safetensors",
    ]


def test_two_processes_train_the_same_query_encoder_as_one(tmp_path):
    """--train-query-encoder under DDP: the encoder copy runs inside the plug's forward, so its gradients are
    averaged across processes like the projectors' (an unused weight, e.g. BERT's pooler, would break DDP)."""
    from persona_demo.config import Settings
    from persona_demo.engine.checkpoint import read_metadata, untrained_plug
    from persona_demo.engine.models import load_encoder

    data = train_only_fixture(tmp_path / "data", 4)
    args = ["train", "--data", str(data), "--max-steps", "2", "--batch-size", "4", "--lr", "1e-2"]
    args += ["--train-query-encoder", "--query-encoder-lr", "1e-3", "--seed", "0"]
    run_launch(1, *args, "--out", str(tmp_path / "one.safetensors"))
    run_launch(2, *args, "--out", str(tmp_path / "two.safetensors"))
    one_w, two_w = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")

    config = read_metadata(tmp_path / "one.safetensors").config
    assert config.query_encoder
    start = untrained_plug(dataclasses.replace(config, query_encoder=False), seed=0).state_dict()
    encoder = load_encoder(Settings(encoder_dtype="float32")).model.state_dict()
    start |= {f"query_encoder.{k}": v for k, v in encoder.items() if not k.startswith("pooler.")}
    assert set(one_w) == set(start) == set(two_w)
    encoder_keys = sorted(k for k in start if k.startswith("query_encoder."))
    moved = (flat({k: one_w[k] for k in encoder_keys}) - flat({k: start[k] for k in encoder_keys})).norm()
    assert moved > 0
    assert (flat(one_w) - flat(two_w)).norm() / (flat(one_w) - flat(start)).norm() < 1e-2


def test_two_processes_evaluate_each_question_once_in_order(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_lamp4(data, 5)  # batches of 2 → 3 batches: uneven over 2 processes
    args = ["evaluate", "--data", str(data), "--method", "none", "--batch-size", "2", "--max-new-tokens", "4"]
    run_launch(1, *args, "--out", str(tmp_path / "one"))
    run_launch(2, *args, "--out", str(tmp_path / "two"))
    one = json.loads((tmp_path / "one" / "predictions.json").read_text())
    two = json.loads((tmp_path / "two" / "predictions.json").read_text())
    assert [g["id"] for g in two["golds"]] == ["0", "1", "2", "3", "4"]
    assert two == one
    metrics = [json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two")]
    for m in metrics:
        m.pop("sec_per_example")
    assert metrics[0] == metrics[1] and metrics[1]["n"] == 5


def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_two_process_run(tmp_path):
    from persona_demo.training.train import state_path

    data = train_only_fixture(tmp_path / "data", 6)
    args = ["train", "--data", str(data), "--max-steps", "8", "--batch-size", "2", "--lr", "1e-2"]
    out = tmp_path / "resumed.safetensors"
    log = tmp_path / "interrupted.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            launch_command(2, *args, "--out", str(out)),
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
        )
        try:
            while " 1/8 " not in log.read_text() and proc.poll() is None:
                time.sleep(0.1)  # wait for the first finished step, then stop as a scheduler would
            os.kill(proc.pid, signal.SIGTERM)  # the launcher forwards it to every process
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "training stopped at step" in text, text[-3000:]
    state = torch.load(state_path(out), weights_only=False)
    assert 0 < state["step"] < 8
    run_launch(2, *args, "--out", str(out), "--resume")
    assert not state_path(out).exists()
    run_launch(2, *args, "--out", str(tmp_path / "straight.safetensors"))
    resumed, straight = load_file(out), load_file(tmp_path / "straight.safetensors")
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")))
def test_example_configs_parse(config):
    import yaml

    values = yaml.safe_load(config.read_text())
    assert values["distributed_type"] in {"MULTI_GPU", "DEEPSPEED"} and values["num_processes"] >= 1


def test_training_keeps_fp32_weights_on_a_cpu_where_inference_may_run_bf16():
    cpu = Settings(device="cpu")
    assert settings_for(cpu, Single(), training=True).dtype == "float32"
    assert settings_for(cpu, Single()).dtype == "auto"  # evaluation follows the inference choice
    assert settings_for(Settings(device="cpu", dtype="bfloat16"), Single(), training=True).dtype == "bfloat16"
