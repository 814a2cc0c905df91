"""Faults: killed imports, concurrent writers, busy files and bad uploads never lose or half-write data."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from persona_demo.data.ingest import IngestLimits
from persona_demo.data.store import PersonaStore
from persona_demo.engine.cache import text_hash
from persona_demo.errors import PersonaDemoError

ROOT = Path(__file__).resolve().parents[1]


def snapshot(path: Path) -> list[str]:
    """Every row of every table, as SQL: equal snapshots mean the store is exactly as it was."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def python(script: str, *args: str, **kwargs: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- killed import

IMPORT_SCRIPT = r"""
import sys
from persona_demo.data.ingest import HistoryItem, ParsedPersona
from persona_demo.data.store import PersonaStore

path, total, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "pause"
personas = [
    ParsedPersona(name=f"user {i}", items=[HistoryItem(f"post {j} of user {i} " * 5) for j in range(12)])
    for i in range(total)
]

def progress(done, total):
    if pause and done == total // 2:
        print("HALF", flush=True)
        sys.stdin.readline()  # wait here, inside the open transaction, until the test kills us

store = PersonaStore(path)
result = store.import_personas(personas, progress=progress)
print("DONE", result.personas_added, result.items_added, flush=True)
"""


def test_sigkill_in_the_middle_of_a_large_import_leaves_none_of_it(tmp_path: Path) -> None:
    path = tmp_path / "kill.db"
    with PersonaStore(path) as store:
        keep = store.create_persona("Existing")
        store.add_items(keep, ["stays"])
    before = snapshot(path)
    total = 1_500
    child = python(
        IMPORT_SCRIPT, str(path), str(total), "pause", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"HALF"  # 750 personas written, not committed
    assert (tmp_path / "kill.db-wal").stat().st_size > 0
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    child.stdin.close()  # type: ignore[union-attr]
    assert child.returncode == -signal.SIGKILL

    assert snapshot(path) == before  # none of it
    with PersonaStore(path) as store:
        assert store._db().conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [p.name for p in store.list_personas()] == ["Existing"]

    done = python(IMPORT_SCRIPT, str(path), str(total), "run", stdout=subprocess.PIPE)
    out, _ = done.communicate()
    assert done.returncode == 0 and out.split() == [b"DONE", str(total).encode(), str(total * 12).encode()]
    with PersonaStore(path) as store:  # all of it
        assert store.stats()["personas"] == total + 1 and store.stats()["items"] == total * 12 + 1


# --------------------------------------------------------------------------------------- concurrency

WORKER_SCRIPT = r"""
import sys
import numpy as np
from persona_demo.data.store import PersonaStore

path, tag, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = PersonaStore(path)
persona = store.create_persona(f"worker {tag}")
shared = store.find_persona("shared")
print("READY", flush=True)
sys.stdin.readline()  # start together with the test's threads
for i in range(rounds):
    store.add_items(persona, [f"{tag} item {i}"])
    store.add_items(shared, [f"shared item {i}"])
    store.put_many("enc", {f"{tag}-{i}": np.full(4, i, dtype=np.float32)})
    assert any(p.name == f"worker {tag}" for p in store.list_personas())
    assert len(store.list_items(persona)) == i + 1
print("OK", flush=True)
"""


def worker(store: PersonaStore, tag: str, rounds: int, start: threading.Barrier) -> None:
    try:
        persona = store.create_persona(f"worker {tag}")
        shared = store.find_persona("shared")
        start.wait()
    except BaseException:
        start.abort()  # never leave the others waiting
        raise
    for i in range(rounds):
        store.add_items(persona, [f"{tag} item {i}"])
        store.add_items(shared, [f"shared item {i}"])
        store.put_many("enc", {f"{tag}-{i}": np.full(4, i, dtype=np.float32)})
        assert any(p.name == f"worker {tag}" for p in store.list_personas())
        assert len(store.list_items(persona)) == i + 1


def test_threads_and_processes_write_at_once_without_losing_anything(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    rounds = 30
    store = PersonaStore(path)
    store.create_persona("shared")
    processes = [
        python(WORKER_SCRIPT, str(path), f"p{n}", str(rounds), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for n in range(2)
    ]
    start = threading.Barrier(9)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(worker, store, f"t{n}", rounds, start) for n in range(8)]
        assert [p.stdout.readline() for p in processes] == [b"READY\n", b"READY\n"]  # type: ignore[union-attr]
        start.wait()  # release the threads ...
        for process in processes:  # ... and the processes at the same moment
            process.stdin.write(b"go\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
        for future in futures:
            future.result()  # re-raises whatever a thread raised
    outputs = [p.communicate()[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0] and outputs == [b"OK\n", b"OK\n"]

    tags = [f"t{n}" for n in range(8)] + [f"p{n}" for n in range(2)]
    for tag in tags:
        items = store.list_items(store.find_persona(f"worker {tag}"))
        assert [i.text for i in items] == [f"{tag} item {i}" for i in range(rounds)]
    shared = store.list_items(store.find_persona("shared"))
    assert sorted(i.text for i in shared) == sorted(f"shared item {i}" for i in range(rounds))
    assert len(store.get_many("enc", [f"{tag}-{i}" for tag in tags for i in range(rounds)])) == 10 * rounds
    store.close()


def test_a_long_write_lock_becomes_a_busy_message_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = PersonaStore(path, busy_timeout_s=0.01, retries=2)
    pid = store.create_persona("Ann")
    before = snapshot(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        with pytest.raises(PersonaDemoError, match="is busy"):
            store.add_items(pid, ["x"])
        assert [p.name for p in store.list_personas()] == ["Ann"]  # reads still work under WAL
        store.put_many("enc", {"h": np.ones(2)})  # the cache gives up quietly instead of failing a generation
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert snapshot(path) == before
    store.add_items(pid, ["x"])
    assert store.list_items(pid)[0].text == "x"
    store.close()


def test_a_read_only_database_gives_a_message(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    PersonaStore(path).close()
    store = PersonaStore(path)
    store._db().conn.execute("PRAGMA query_only = ON")  # what a read-only file looks like to SQLite
    with pytest.raises(PersonaDemoError, match="read-only|Database error"):
        store.create_persona("Ann")
    store.close()


# ------------------------------------------------------------------------------------------ bad inputs

MB = 1024 * 1024


def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.txt"
    with path.open("wb") as handle:
        handle.truncate(50 * MB)
    return path


BAD_UPLOADS = [
    ("empty.txt", lambda tmp: b"", "empty.txt is empty"),
    ("blank.md", lambda tmp: b"\n \n\t\n", "blank.md is empty"),
    (
        "photo.txt",
        lambda tmp: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)),
        "looks like a JPEG image",
    ),
    ("data.csv", lambda tmp: b"a,b\x00,c\n1,2,3\n", "looks like a binary file"),
    ("big.txt", big_file, r"big\.txt is too large \(50\.0 MB\)"),
    ("bad.json", lambda tmp: b'[\n  "ok",\n  "missing quote\n]', r"Malformed JSON in bad\.json at line 3"),
    ("bad.jsonl", lambda tmp: b'"a"\n{"text": }\n', r"bad\.jsonl \(line 2\)"),
    ("nums.csv", lambda tmp: b"id,year\n1,2020\n2,2021\n", "No column in nums.csv looks like text"),
    ("ragged.csv", lambda tmp: b'text\nok\n"open,\n', "Malformed table in ragged.csv at line 3"),
    (
        "dev_questions.json",
        lambda tmp: json.dumps([{"id": "1", "user_id": "u", "input": "x"}]).encode(),
        "none of its 1 questions has a 'profile' list",
    ),
    (
        "export.json",
        lambda tmp: json.dumps(
            {"format": "persona-demo.persona", "version": 1, "name": "", "items": []}
        ).encode(),
        "needs a name",
    ),
]


@pytest.mark.parametrize(("filename", "make", "message"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_give_a_message_and_leave_the_store_unchanged(
    tmp_path: Path, filename: str, make, message: str
) -> None:
    path = tmp_path / "store.db"
    with PersonaStore(path) as store:
        pid = store.create_persona("Ann")
        store.add_items(pid, ["kept"])
        before = snapshot(path)
        content = make(tmp_path)
        for target in ({"persona_id": pid}, {}):
            with pytest.raises(PersonaDemoError, match=message):
                store.ingest_upload(content, filename, **target)
        assert snapshot(path) == before


def test_an_error_late_in_a_multi_persona_import_rolls_back_the_early_ones(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with PersonaStore(path, limits=IngestLimits(max_items=2)) as store:
        store.create_persona("u2")
        store.add_items(store.find_persona("u2"), ["a", "b"])
        before = snapshot(path)
        questions = [
            {"id": "1", "user_id": "u1", "input": "x", "profile": [{"text": "fine"}]},
            {"id": "2", "user_id": "u2", "input": "x", "profile": [{"text": "c"}]},  # would make 3 items
        ]
        with pytest.raises(PersonaDemoError, match="at most 2 items"):
            store.ingest_upload(json.dumps(questions).encode(), "train_questions.json")
        assert snapshot(path) == before
        with pytest.raises(PersonaDemoError, match="no persona with id 999"):
            store.ingest_upload(b"text", "x.txt", persona_id=999)
        assert snapshot(path) == before


HOSTILE = [
    "'); DROP TABLE personas;--",
    "<script>alert(1)</script>",
    'Robert"); DELETE FROM items; --',
    "tab\tnew\nline\r\x00nul\x07bell\x1b[31mred",
    "emoji 😀👩‍👩‍👧 flags 🇫🇷 and RTL \u202eevil",
    "%_\\ like wildcards",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_strings_are_stored_verbatim(tmp_path: Path, hostile: str) -> None:
    path = tmp_path / "store.db"
    with PersonaStore(path) as store:
        other = store.create_persona("Other")
        store.add_items(other, ["untouched"])
        pid = store.create_persona(hostile)
        store.add_items(pid, [hostile, hostile + " again"])
        store.log_generation(
            persona_id=pid, task=hostile, prompt=hostile, output_base=hostile, output_personal=hostile,
            settings={hostile: hostile},
        )  # fmt: skip
        assert store.get_persona(pid).name == hostile
        assert [i.text for i in store.list_items(pid)] == [hostile, hostile + " again"]
        assert [p.id for p in store.list_personas(hostile)] == [pid]
        assert store.list_generations(pid)[0].settings == {hostile: hostile}
        assert [i.text for i in store.list_items(other)] == ["untouched"]
        assert store.stats()["personas"] == 2
        exported = store.export_persona(pid)
        copy = store.import_persona(json.loads(json.dumps(exported)), name="copy")
        assert [i.text for i in store.list_items(copy)] == [hostile, hostile + " again"]


def test_hostile_upload_and_a_100k_character_item(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with PersonaStore(path) as store:
        items = [*HOSTILE, "word " * 20_000]
        result = store.ingest_upload(json.dumps(items).encode(), "hostile.json", persona_name=HOSTILE[0])
        pid = result.persona_ids[0]
        assert store.get_persona(pid).name == HOSTILE[0]
        stored = [i.text for i in store.list_items(pid)]
        # the long item is split, never cut: its 20 identical pieces are one item (the others are duplicates)
        assert stored[: len(HOSTILE)] == HOSTILE and all(len(t) <= 5_000 for t in stored)
        assert stored[len(HOSTILE) :] == [("word " * 1000).strip()]
        assert result.truncated == 0 and result.duplicates_skipped == 19
        assert any("added as 20 items" in m for m in result.messages)
        tables = {
            r[0] for r in store._db().conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert {"personas", "items", "embeddings", "persona_vectors", "generations"} <= tables


def test_lone_surrogates_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with PersonaStore(path) as store:
        pid = store.create_persona("Ann")
        before = snapshot(path)
        with pytest.raises(PersonaDemoError, match="invalid character at position 3"):
            store.add_items(pid, ["fine", "ab\udc80"])
        with pytest.raises(PersonaDemoError, match="invalid character"):
            store.ingest_upload(b'["ok", "\\ud800"]', "x.json", persona_id=pid)
        assert snapshot(path) == before
        assert text_hash("ab\udc80")  # hashing itself must not crash either
