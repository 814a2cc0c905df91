"""The soak: N simulated users drive the real studio (child process) through `gradio_client` for M minutes.

Each user owns one persona and cycles through what a person does: add texts, upload a file, edit an item,
generate side by side (with its attention plot), chat, reselect. Every write the app acknowledged is written
down here, from the client's side only; afterwards the database must hold exactly those texts. Every response
must show only the user's own persona (sessions are separate `gr.State`s): anything else is a leak.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import Sample, percentile, summarize
from .server import StudioProcess, start_studio

OPS = ("add_text", "upload_history", "compare", "add_text", "edit_item", "chat", "select_persona")
TASKS = ("huffpost_headline", "free")
REQUEST_TIMEOUT_S = 300


@dataclass
class SoakConfig:
    """How hard and how long; `max_requests` bounds each user's count as `minutes` bounds the time."""

    users: int = 20
    minutes: float = 5.0
    max_new_tokens: int = 8
    max_requests: int | None = None
    warmup_max_fraction: float = 0.5
    """Warm-up ends when every user has done each action once (models, caches, numba all warm), or at this
    fraction of the run, whichever comes first; RSS growth is measured from there."""
    seed: int = 0
    workdir: Path | None = None


@dataclass
class UserLedger:
    """What one user saw acknowledged: persona id and {item id: text}."""

    tag: str
    name: str
    persona_id: int | None = None
    items: dict[int, str] = field(default_factory=dict)
    acknowledged_writes: int = 0


class Recorder:
    """Thread-safe collection of samples, failures and leaks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: list[Sample] = []
        self.failures: list[str] = []
        self.leaks: list[str] = []

    def sample(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what[:300])

    def leak(self, what: str) -> None:
        with self.lock:
            self.leaks.append(what[:300])


def _queue_wait(job: Any, submitted: float, submitted_wall: float) -> float | None:
    """Seconds from submit until the server said `process_starts` (gradio_client's status updates)."""
    from gradio_client.utils import Status

    updates = job.communicator.updates if job.communicator else None
    while updates is not None and not updates.empty():
        update = updates.get_nowait()
        if getattr(update, "code", None) == Status.PROCESSING and update.time is not None:
            return max(0.0, update.time.timestamp() - submitted_wall)
    return None


class SimulatedUser:
    """One person with one browser session."""

    def __init__(self, index: int, url: str, config: SoakConfig, recorder: Recorder, run_id: str) -> None:
        self.index, self.url, self.config, self.recorder = index, url, config, recorder
        self.ledger = UserLedger(tag=f"u{index}-{run_id}", name=f"soak user {index} {run_id}")
        self.rng = random.Random(config.seed * 1000 + index)
        self.counter = 0
        self.chat_thread: list[dict[str, Any]] = []
        self.client: Any = None
        self.actions = 0
        self.finished = False

    # ------------------------------------------------------------------------------------------ calls
    def call(self, endpoint: str, *args: Any) -> Any:
        submitted, submitted_wall = time.perf_counter(), time.time()
        job = self.client.submit(*args, api_name=f"/{endpoint}")
        try:
            result = job.result(timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:
            latency = time.perf_counter() - submitted
            self.recorder.sample(
                Sample(endpoint, latency, _queue_wait(job, submitted, submitted_wall), False)
            )
            self.recorder.fail(f"{self.ledger.tag} {endpoint}: {type(exc).__name__}: {exc}")
            raise
        latency = time.perf_counter() - submitted
        self.recorder.sample(Sample(endpoint, latency, _queue_wait(job, submitted, submitted_wall), True))
        return result

    def text(self, kind: str) -> str:
        self.counter += 1
        words = self.rng.sample(["sail", "lake", "code", "bike", "bread", "rain", "jazz", "chess", "tea"], 4)
        return f"[{self.ledger.tag}] {kind} {self.counter}: I like {', '.join(words)}."

    # ------------------------------------------------------------------------------------- checks
    def check_history(self, endpoint: str, rows: Any, choices: Any, expect_new: list[str]) -> None:
        """The response's history must be exactly this user's acknowledged items (+ the new texts)."""
        texts = [str(r[1]) for r in (rows or {}).get("data", [])]
        ids = [c[1] for c in (choices or {}).get("choices", [])]
        foreign = [t for t in texts if not t.startswith(f"[{self.ledger.tag}]")]
        if foreign:
            self.recorder.leak(f"{self.ledger.tag} {endpoint} saw {foreign[0][:60]!r}")
            return
        for item_id, text in zip(ids, texts, strict=False):
            if text in expect_new:
                self.ledger.items[int(item_id)] = text
        if sorted(texts) != sorted(self.ledger.items.values()):
            self.recorder.fail(f"{self.ledger.tag} {endpoint}: history differs from what was acknowledged")

    def check_persona(self, endpoint: str, dropdown: Any) -> None:
        value = (dropdown or {}).get("value")
        if value != self.ledger.persona_id:
            self.recorder.leak(
                f"{self.ledger.tag} {endpoint} showed persona {value}, not {self.ledger.persona_id}"
            )

    # ---------------------------------------------------------------------------------------- actions
    def start(self) -> None:
        from gradio_client import Client

        self.client = Client(self.url, verbose=False)
        created = self.call("create_persona", self.ledger.name, "")
        self.ledger.persona_id = int(created["value"])
        self.select_persona()

    def select_persona(self) -> None:
        rows, items, name, _status = self.call("select_persona", self.ledger.persona_id)
        if name != self.ledger.name:
            self.recorder.leak(f"{self.ledger.tag} select_persona showed {name!r}")
        self.check_history("select_persona", rows, items, [])

    def add_text(self) -> None:
        text = self.text("note")
        rows, items, _status, persona, _box = self.call("add_text", text, "")
        self.ledger.acknowledged_writes += 1
        self.check_persona("add_text", persona)
        self.check_history("add_text", rows, items, [text])

    def upload_history(self) -> None:
        from gradio_client import handle_file

        texts = [self.text("upload"), self.text("upload")]
        path = self.config.workdir / f"{self.ledger.tag}-{self.counter}.txt"  # type: ignore[operator]
        path.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
        rows, items, _status, persona, _file = self.call("upload_history", handle_file(str(path)), "")
        self.ledger.acknowledged_writes += len(texts)
        self.check_persona("upload_history", persona)
        self.check_history("upload_history", rows, items, texts)

    def edit_item(self) -> None:
        if not self.ledger.items:
            return self.add_text()
        item_id = self.rng.choice(sorted(self.ledger.items))
        text = self.text("edit")
        rows, items, _status, persona, _box = self.call("edit_item", item_id, text, "")
        self.ledger.items[item_id] = text
        self.ledger.acknowledged_writes += 1
        self.check_persona("edit_item", persona)
        self.check_history("edit_item", rows, items, [])

    def compare(self) -> None:
        if not self.ledger.items:
            return self.add_text()
        task = TASKS[self.counter % len(TASKS)]
        _without, _with_plug, plot = self.call(
            "compare", task, self.text("input"), self.config.max_new_tokens, 1.0, False, 0.7
        )
        if plot is None:
            self.recorder.fail(f"{self.ledger.tag} compare: no attention plot")

    def chat(self) -> None:
        if not self.ledger.items:
            return self.add_text()
        _, persona_chat, *_ = self.call(
            "chat", "What did you do today?", self.chat_thread[-4:], [], self.config.max_new_tokens,
            1.0, False, 0.7,
        )  # fmt: skip
        self.chat_thread = list(persona_chat)[-4:]

    def run(self, deadline: float) -> None:
        try:
            self.start()
            done = 0
            step = self.index
            while time.monotonic() < deadline:
                if self.config.max_requests is not None and done >= self.config.max_requests:
                    break
                getattr(self, OPS[step % len(OPS)])()
                step += 1
                done += 1
                self.actions = done
        except Exception:  # noqa: BLE001 - already recorded by `call`; this user stops
            return
        finally:
            self.finished = True


def verify_store(db: Path, users: list[SimulatedUser]) -> dict[str, Any]:
    """Every acknowledged write is in the database, nothing else is in the users' personas."""
    from ..data.store import PersonaStore

    acknowledged = lost = 0
    with PersonaStore(db) as store:
        integrity = store._db().conn.execute("PRAGMA integrity_check").fetchone()[0]
        for user in users:
            acknowledged += user.ledger.acknowledged_writes
            if user.ledger.persona_id is None:
                continue
            stored = {item.id: item.text for item in store.list_items(user.ledger.persona_id)}
            lost += sum(1 for i, t in user.ledger.items.items() if stored.get(i) != t)
            lost += len(set(stored) - set(user.ledger.items))  # an item nobody saw acknowledged
    return {"integrity_check": integrity, "acknowledged_writes": acknowledged, "lost_writes": lost}


def run_soak(config: SoakConfig) -> dict[str, Any]:
    """Start the app, run the users, verify the store; returns the report (see `format_report`)."""
    with tempfile.TemporaryDirectory(prefix="persona-soak-") as tmp:
        workdir = config.workdir = Path(config.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / "soak.db"
        started = time.perf_counter()
        studio = start_studio(db, workdir / "studio.log")
        startup_s = time.perf_counter() - started
        try:
            report = _drive(studio, config)
        finally:
            alive = studio.alive()
            studio.stop()
        report.update(startup_s=round(startup_s, 1), app_alive_at_end=alive)
        report["store"] = verify_store(db, report.pop("_users"))
        report["errors"] = (
            report["request_failures"]
            + len(report["leaks"])
            + report["store"]["lost_writes"]
            + (report["store"]["integrity_check"] != "ok")
            + (not alive)
        )
        return report


def _drive(studio: StudioProcess, config: SoakConfig) -> dict[str, Any]:
    recorder = Recorder()
    run_id = f"{random.Random(config.seed).randrange(16**6):06x}"
    users = [SimulatedUser(i, studio.url, config, recorder, run_id) for i in range(config.users)]
    rss_start = studio.rss_mb()
    began = time.monotonic()
    duration = config.minutes * 60
    deadline = began + duration
    threads = [threading.Thread(target=u.run, args=(deadline,), daemon=True) for u in users]
    for t in threads:
        t.start()
    warm_by = began + duration * config.warmup_max_fraction
    while time.monotonic() < warm_by and not all(u.finished or u.actions >= len(OPS) for u in users):
        time.sleep(0.25)
    rss_warm, warmup_s = studio.rss_mb(), time.monotonic() - began
    for t in threads:
        t.join(max(1.0, deadline + REQUEST_TIMEOUT_S - time.monotonic()))
    for user, thread in zip(users, threads, strict=True):
        if thread.is_alive():
            recorder.fail(f"{user.ledger.tag} still running {REQUEST_TIMEOUT_S} s after the end")
    elapsed = time.monotonic() - began
    rss_end = studio.rss_mb()
    samples = recorder.samples
    growth = (rss_end - rss_warm) / rss_warm * 100 if rss_warm else 0.0
    return {
        "users": config.users,
        "minutes": config.minutes,
        "max_new_tokens": config.max_new_tokens,
        "elapsed_s": round(elapsed, 1),
        "requests": len(samples),
        "requests_per_s": round(len(samples) / elapsed, 2) if elapsed else 0.0,
        "request_failures": len(recorder.failures),
        "failures": recorder.failures[:20],
        "leaks": recorder.leaks[:20],
        "endpoints": summarize(samples),
        "queue_wait_p50_s": round(percentile([s.queue_wait_s for s in samples if s.queue_wait_s], 0.5), 3),
        "queue_wait_p95_s": round(percentile([s.queue_wait_s for s in samples if s.queue_wait_s], 0.95), 3),
        "latency_mean_s": round(statistics.fmean([s.latency_s for s in samples]), 3) if samples else 0.0,
        "rss_mb": {"start": round(rss_start), "after_warmup": round(rss_warm), "end": round(rss_end)},
        "rss_growth_after_warmup_pct": round(growth, 1),
        "warmup_s": round(warmup_s, 1),
        "_users": users,
    }
