"""bench `train_scaling`: the real training step on 1 and on 2 processes, and what communication costs.

Why a separate entry point: process count is fixed at launch, so the bench starts this module under
`accelerate launch` once per process count (`python -m persona_demo.bench.scaling` is the worker) and
reads the JSON line the main process prints. Each worker times, interleaved, the same global batch
  - synced: the training step as `PlugTrainer.fit` runs it (token-count all-reduce, DDP gradient all-reduce);
  - local: the same step without any collective (DDP `no_sync`, local token count);
so `comm_share = (synced − local) / synced` is the share of a step spent communicating or waiting for the
other process. It also times one all-reduce of a plug-sized gradient on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def launch_args(processes: int, port: int) -> list[str]:
    """`accelerate launch` options for N CPU processes on this machine (2+: the torchrun-based config)."""
    base = [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(port)]
    if processes == 1:
        return [*base, "--cpu", "--num_processes", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    config = CONFIGS / "cpu-2-processes.yaml"
    return [*base, "--config_file", str(config), "--num_processes", str(processes)]


def run_scaling(
    processes: int, batch_size: int, repeats: int, data_dir: Path | None, timeout: float = 900
) -> dict:
    """Launch the worker on `processes` processes; its measurements (JSON) or an `error`."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [*launch_args(processes, port), "-m", "persona_demo.bench.scaling"]
    cmd += ["--batch-size", str(batch_size), "--repeats", str(repeats)]
    if data_dir is not None:
        cmd += ["--data", str(data_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr[-500:]}"}
    return json.loads(lines[-1])


def worker(batch_size: int, repeats: int, data_dir: Path | None) -> dict | None:
    """Time the step on this launch's processes; the main process returns the figures, the others None."""
    from ..config import Settings
    from ..engine import distributed
    from ..engine.engine import PersonaEngine
    from ..training.train import Example, PlugTrainer, TrainConfig
    from .inputs import load_examples

    dist = distributed.current(1, batch_size)
    engine = PersonaEngine.from_settings(distributed.settings_for(Settings.from_env(), dist, training=True))
    examples = load_examples(data_dir, batch_size)
    batch = [Example(p, p, h, "A short headline about the news") for p, h, _ in examples]
    trainer = PlugTrainer(engine, TrainConfig(batch_size=batch_size), dist)
    optimizer = torch.optim.AdamW(engine.plug.parameters(), lr=1e-4)
    trainer.forward_plug, optimizer = dist.prepare(engine.plug, optimizer)
    mine = dist.shard(batch)
    engine.encoder.encode([t for e in batch for t in e.history])  # a training run has its cache warm

    def step(synced: bool) -> None:
        optimizer.zero_grad()
        quiet = contextlib.nullcontext()
        if not synced and dist.num_processes > 1:
            quiet = dist.accelerator.no_sync(trainer.forward_plug)
        with quiet:
            nll, count = trainer.batch_nll(mine, [e.history for e in mine])
            total = dist.sum(count) if synced else count * dist.num_processes
            dist.backward(nll * dist.num_processes / total, 1)
        optimizer.step()

    times: dict[bool, list[float]] = {True: [], False: []}
    step(True), step(False)  # warm-up
    for _ in range(repeats):
        for synced in (True, False):
            dist.wait()  # both processes start each timed step together
            started = time.perf_counter()
            step(synced)
            times[synced].append(time.perf_counter() - started)
    grad = torch.zeros(sum(p.numel() for p in engine.plug.parameters()))
    allreduce = []
    for _ in range(repeats):
        started = time.perf_counter()
        dist.sum(grad)
        allreduce.append(time.perf_counter() - started)
    dist.wait()
    if not dist.is_main:
        return None
    synced_s, local_s = statistics.median(times[True]), statistics.median(times[False])
    return {
        "processes": dist.num_processes,
        "threads_per_process": torch.get_num_threads(),
        "global_batch": batch_size,
        "examples_per_s": batch_size / synced_s,
        "step_s": synced_s,
        "step_without_communication_s": local_s,
        "comm_share": max(0.0, (synced_s - local_s) / synced_s),
        "grad_allreduce_ms": 1000 * statistics.median(allreduce),
        "grad_mb": grad.numel() * 4 / 2**20,
        "mixed_precision": str(getattr(getattr(dist, "accelerator", None), "mixed_precision", "none")),
    }


def bench_train_scaling(batch_size: int, repeats: int, data_dir: Path | None) -> dict:
    """examples/s on 1 and 2 processes (same global batch) and the 2-process communication share."""
    one = run_scaling(1, batch_size, repeats, data_dir)
    two = run_scaling(2, batch_size, repeats, data_dir)
    out = {"1": one, "2": two}
    if "examples_per_s" in one and "examples_per_s" in two:
        out["speedup"] = two["examples_per_s"] / one["examples_per_s"]
        out["comm_share_2"] = two["comm_share"]
    return out


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args(argv)
    result = worker(args.batch_size, args.repeats, args.data)
    if result is not None:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
