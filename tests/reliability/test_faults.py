"""Faults: SIGKILL the app while 8 users write and imports run; restart on the same database. A generation
that runs out of memory gives that user a message and the others keep being served."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import torch

from persona_demo.data.store import PersonaStore
from persona_demo.reliability.server import start_studio

WRITERS = 8
IMPORT_PERSONAS, IMPORT_ITEMS = 25, 4


class Ledger:
    """What the clients saw acknowledged, nothing more."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.texts: dict[str, list[str]] = {}  # persona name -> acknowledged texts
        self.imports: list[int] = []  # acknowledged import batches
        self.attempted_imports: list[int] = []

    def count(self) -> int:
        with self.lock:
            return sum(map(len, self.texts.values())) + len(self.imports)


def writer(url: str, n: int, ledger: Ledger, stop: threading.Event) -> None:
    from gradio_client import Client

    try:
        client = Client(url, verbose=False)
        name = f"writer {n}"
        pid = client.predict(name, "", api_name="/create_persona")["value"]
        client.predict(pid, api_name="/select_persona")
        with ledger.lock:
            ledger.texts[name] = []
        i = 0
        while not stop.is_set():
            text = f"writer {n} wrote line {i}."
            client.predict(text, "", api_name="/add_text")
            with ledger.lock:
                ledger.texts[name].append(text)
            i += 1
    except Exception:  # noqa: BLE001 - the app was killed under us: expected, stop writing
        return


def importer(url: str, folder: Path, ledger: Ledger, stop: threading.Event) -> None:
    from gradio_client import Client, handle_file

    try:
        client = Client(url, verbose=False)
        batch = 0
        while not stop.is_set():
            path = folder / f"batch{batch}.jsonl"
            lines = [
                {"name": f"imp{batch}-p{p}", "posts": [f"batch {batch} persona {p} post {j}" for j in range(IMPORT_ITEMS)]}
                for p in range(IMPORT_PERSONAS)
            ]  # fmt: skip
            path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
            with ledger.lock:
                ledger.attempted_imports.append(batch)
            client.predict(handle_file(str(path)), "", api_name="/import_personas")
            with ledger.lock:
                ledger.imports.append(batch)
            batch += 1
    except Exception:  # noqa: BLE001 - killed under us
        return


def test_sigkill_while_8_users_write_loses_no_acknowledged_write(tmp_path):
    db = tmp_path / "studio.db"
    studio = start_studio(db, tmp_path / "studio.log")
    ledger, stop = Ledger(), threading.Event()
    threads = [threading.Thread(target=writer, args=(studio.url, n, ledger, stop)) for n in range(WRITERS)]
    threads.append(threading.Thread(target=importer, args=(studio.url, tmp_path, ledger, stop)))
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 120
        while ledger.count() < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert studio.alive(), studio.log_path.read_text()[-2000:]
        studio.kill()  # mid-write: requests are in flight right now
    finally:
        stop.set()
        studio.kill()
        for t in threads:
            t.join(60)
    assert ledger.count() >= 60 and ledger.imports, "the load never got going"

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    started = time.monotonic()
    restarted = start_studio(db, tmp_path / "studio.log")  # same database, a fresh process
    restart_s = time.monotonic() - started
    try:
        from gradio_client import Client

        client = Client(restarted.url, verbose=False)
        with PersonaStore(db) as store:
            assert store._db().conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            for name, texts in ledger.texts.items():
                pid = store.find_persona(name)
                stored = [item.text for item in store.list_items(pid)]
                assert stored[: len(texts)] == texts  # every acknowledged write, in order (+ maybe one more)
                assert len(stored) <= len(texts) + 1
            for batch in ledger.attempted_imports:
                present = [store.find_persona(f"imp{batch}-p{p}") for p in range(IMPORT_PERSONAS)]
                if batch in ledger.imports:
                    assert all(present), f"acknowledged import {batch} is missing personas"
                assert all(present) or not any(present), f"import {batch} is half there"
                for pid in filter(None, present):
                    assert len(store.list_items(pid)) == IMPORT_ITEMS
            some = store.find_persona("writer 0")
        _, _, name, _ = client.predict(some, api_name="/select_persona")  # the restarted app serves
        assert name == "writer 0"
        writes = sum(map(len, ledger.texts.values()))
        print(
            f"\nkill: SIGKILL after {writes} acknowledged add_text by {WRITERS} users and {len(ledger.imports)} "
            f"acknowledged imports ({len(ledger.attempted_imports)} started); restart {restart_s:.1f} s; "
            "integrity_check ok; all acknowledged present; no half import"
        )
    finally:
        restarted.stop()


def test_out_of_memory_in_one_generation_is_a_message_and_others_are_served(serve, engine, monkeypatch):
    """The OOM is simulated (mocked): no GPU here. The model call raises torch.OutOfMemoryError for
    requests asking 13 new tokens (plus the page's room to end a sentence); everything else is the real app
    and model."""
    from gradio_client import Client

    from persona_demo.app.args import REPLY_SENTENCE_ROOM

    model = engine.llm.model
    real_generate = model.generate

    def generate(*args, **kwargs):
        if kwargs.get("max_new_tokens") == 13 + REPLY_SENTENCE_ROOM:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate)
    url = serve()
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    for client in (alice, bob):
        client.predict(1, api_name="/select_persona")  # a seeded persona with history
    doomed = alice.submit("free", "Write about the sea.", 13, 1.0, False, 0.7, api_name="/compare")
    fine = bob.submit("free", "Write about the hills.", 8, 1.0, False, 0.7, api_name="/compare")
    with pytest.raises(Exception, match="ran out of memory"):
        doomed.result(timeout=120)
    without, with_plug, _ = fine.result(timeout=120)
    assert without and with_plug
    with pytest.raises(Exception, match="ran out of memory"):
        alice.predict("Hi", [], [], 13, 1.0, False, 0.7, api_name="/chat")
    _, persona_chat, *_ = alice.predict("Hi", [], [], 8, 1.0, False, 0.7, api_name="/chat")  # alice recovers
    assert persona_chat[-1]["role"] == "assistant"
