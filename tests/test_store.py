"""The persona store on real SQLite files: operations, round trips, caches, schema and the import CLI."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from persona_demo.cli.import_personas import add_import_command
from persona_demo.data.ingest import HistoryItem, IngestLimits
from persona_demo.data.seed import SEED_PERSONAS, ensure_seed_personas
from persona_demo.data.store import (
    DB_ENV,
    MIGRATIONS,
    SCHEMA_VERSION,
    PersonaStore,
    default_db_path,
    name_key,
)
from persona_demo.engine.cache import text_hash
from persona_demo.errors import PersonaDemoError


@pytest.fixture
def store(tmp_path: Path) -> PersonaStore:
    with PersonaStore(tmp_path / "personas.db") as s:
        yield s


def texts(store: PersonaStore, persona_id: int) -> list[str]:
    return [item.text for item in store.list_items(persona_id)]


# -------------------------------------------------------------------------------------------- personas


def test_create_list_get_rename_delete(store: PersonaStore) -> None:
    ann = store.create_persona("Ann")
    bob = store.create_persona("bob", source="upload", meta={"about": "x"})
    store.add_items(ann, ["one", "two"])
    summaries = store.list_personas()
    assert [(p.name, p.source, p.item_count) for p in summaries] == [("Ann", "user", 2), ("bob", "upload", 0)]
    assert [p.name for p in store.list_personas("AN")] == ["Ann"]
    assert store.list_personas("%") == [] and store.list_personas("_") == []
    persona = store.get_persona(bob)
    assert persona.meta == {"about": "x"} and persona.item_count == 0 and persona.created <= persona.updated
    store.rename_persona(ann, "Annie")
    assert store.get_persona(ann).name == "Annie"
    store.rename_persona(ann, "ANNIE")  # same key, own name: allowed
    store.delete_persona(ann)
    assert [p.name for p in store.list_personas()] == ["bob"]
    assert store.stats()["items"] == 0
    with pytest.raises(PersonaDemoError, match=f"no persona with id {ann}"):
        store.get_persona(ann)
    with pytest.raises(PersonaDemoError, match="no persona with id"):
        store.delete_persona(ann)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "needs a name"),
        ("   \t", "needs a name"),
        ("\u200b\u200d", "at least one visible character"),
        ("x" * 201, "at most 200 characters"),
        ("bad \ud800 surrogate", "invalid character"),
        (42, "must be text"),
    ],
)
def test_invalid_names_are_refused(store: PersonaStore, name: object, message: str) -> None:
    with pytest.raises(PersonaDemoError, match=message):
        store.create_persona(name)  # type: ignore[arg-type]
    assert store.list_personas() == []


def test_names_are_unique_ignoring_case_width_and_spacing(store: PersonaStore) -> None:
    pid = store.create_persona("Zoë  Smith")
    for clash in ("zoë smith", " ZOË SMITH ", "Zoe\u0308 Smith", "Ｚｏë Smith"):
        with pytest.raises(PersonaDemoError, match="A persona named “Zoë  Smith” already exists"):
            store.create_persona(clash)
    other = store.create_persona("Other")
    with pytest.raises(PersonaDemoError, match="already exists"):
        store.rename_persona(other, "zoë smith")
    assert store.get_persona(pid).name == "Zoë  Smith"  # stored verbatim, double space included
    assert store.find_persona("ZOË SMITH") == pid and store.find_persona("nobody") is None
    assert name_key("  A\tB  ") == "a b"


def test_duplicate_copies_history_and_picks_free_names(store: PersonaStore) -> None:
    pid = store.create_persona("Ann", meta={"k": [1]})
    store.add_items(pid, [HistoryItem("one", title="T", score=4, date="2020", fields={"x": 1}), "two"])
    copy1 = store.duplicate_persona(pid)
    copy2 = store.duplicate_persona(pid)
    named = store.duplicate_persona(pid, "Clone")
    assert [store.get_persona(i).name for i in (copy1, copy2, named)] == [
        "Ann (copy)",
        "Ann (copy 2)",
        "Clone",
    ]
    original = [(i.text, i.title, i.score, i.date, i.fields) for i in store.list_items(pid)]
    assert [(i.text, i.title, i.score, i.date, i.fields) for i in store.list_items(copy1)] == original
    assert store.get_persona(copy1).meta == {"k": [1]}
    store.add_items(copy1, ["three"])
    assert texts(store, pid) == ["one", "two"]  # independent copies
    with pytest.raises(PersonaDemoError, match="already exists"):
        store.duplicate_persona(pid, "clone")


# ----------------------------------------------------------------------------------------------- items


def test_add_items_keeps_order_and_counts_duplicates_empties_and_truncation(tmp_path: Path) -> None:
    with PersonaStore(tmp_path / "p.db", limits=IngestLimits(max_chars=20)) as store:
        pid = store.create_persona("Ann")
        result = store.add_items(pid, ["b", "a", "b", "  ", "c", "x " * 30])
        assert (result.added, result.skipped_duplicates, result.skipped_empty, result.truncated) == (
            4,
            1,
            1,
            1,
        )
        assert result.messages == [
            "Added 4 items.",
            "Skipped 1 duplicate (already in the history).",
            "Skipped 1 empty item.",
            (
                "Shortened 1 item to the first 20 characters (the rest was not kept: split a long text into "
                "several items to keep all of it)."
            ),
        ]
        again = store.add_items(pid, ["a", "d"])
        assert (again.added, again.skipped_duplicates) == (1, 1)
        items = store.list_items(pid)
        assert [i.text for i in items][:3] == ["b", "a", "c"] and items[-1].text == "d"
        assert len(items[3].text) <= 20 and items[3].text.endswith("…")
        assert [i.position for i in items] == [0, 1, 2, 3, 4]
        assert all(i.persona_id == pid and i.id is not None for i in items)


def test_item_cap_per_persona(tmp_path: Path) -> None:
    with PersonaStore(tmp_path / "p.db", limits=IngestLimits(max_items=3)) as store:
        pid = store.create_persona("Ann")
        store.add_items(pid, ["a", "b"])
        with pytest.raises(PersonaDemoError, match="at most 3 items; this would make 4"):
            store.add_items(pid, ["c", "d", "a"])
        assert texts(store, pid) == ["a", "b"]


def test_update_and_delete_items(store: PersonaStore) -> None:
    pid = store.create_persona("Ann")
    store.add_items(pid, ["a", "b", "c"])
    a, b, c = store.list_items(pid)
    updated = store.update_item(b.id, "B!")
    assert updated.text == "B!" and updated.position == b.position
    assert store.update_item(b.id, "B!").text == "B!"  # no-op
    with pytest.raises(PersonaDemoError, match="already contains that text"):
        store.update_item(c.id, "a")
    with pytest.raises(PersonaDemoError, match="cannot be empty"):
        store.update_item(c.id, "  ")
    store.delete_item(a.id)
    assert texts(store, pid) == ["B!", "c"]
    for call in (
        lambda: store.delete_item(a.id),
        lambda: store.update_item(a.id, "z"),
        lambda: store.get_item(a.id),
    ):
        with pytest.raises(PersonaDemoError, match=f"no history item with id {a.id}"):
            call()
    with pytest.raises(PersonaDemoError, match="no persona"):
        store.add_items(9999, ["x"])
    with pytest.raises(PersonaDemoError, match="no persona"):
        store.list_items(9999)


# ------------------------------------------------------------------------------------ import / export


def test_export_then_import_gives_an_identical_persona(store: PersonaStore, tmp_path: Path) -> None:
    pid = store.create_persona("Zoë <b>", source="lamp", meta={"user_id": "u1", "questions": [{"id": 1}]})
    store.add_items(
        pid,
        [
            HistoryItem(
                "first\nline", title="T", score="5", date="2020-01-01", fields={"id": "p1", "n": 1.5}
            ),
            HistoryItem("second \x00 😀", score=3),
            "third",
        ],
    )
    exported = store.export_persona(pid)
    on_disk = json.loads(json.dumps(exported))  # what a saved file gives back
    other = PersonaStore(tmp_path / "other.db")
    new_id = other.import_persona(on_disk)
    assert other.export_persona(new_id) == exported
    with pytest.raises(PersonaDemoError, match="already exists"):
        other.import_persona(on_disk)
    renamed = other.import_persona(on_disk, rename_if_exists=True)
    assert other.get_persona(renamed).name == "Zoë <b> (imported)"
    assert {**other.export_persona(renamed), "name": "Zoë <b>"} == exported
    assert other.get_persona(other.import_persona(on_disk, name="Fresh")).item_count == 3
    other.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "items": []}, "not an exported persona"),
        ({"format": "persona-demo.persona", "version": 1, "items": []}, "without a 'name'"),
        ({"format": "persona-demo.persona", "version": 1, "name": "x", "items": [{"title": "t"}]}, "Item 1"),
        ({"format": "persona-demo.persona", "version": 1, "name": " ", "items": []}, "needs a name"),
    ],
)
def test_import_of_bad_exports_changes_nothing(store: PersonaStore, data: dict, message: str) -> None:
    with pytest.raises(PersonaDemoError, match=message):
        store.import_persona(data)
    assert store.stats()["personas"] == 0


def test_ingest_upload_creates_or_extends_personas(store: PersonaStore, tmp_path: Path) -> None:
    path = tmp_path / "my notes.txt"
    path.write_text("one\n\ntwo\n\none", encoding="utf-8")
    result = store.ingest_upload(path)
    assert (result.personas_added, result.items_added, result.duplicates_skipped) == (1, 2, 1)
    pid = result.persona_ids[0]
    assert store.get_persona(pid).name == "my notes" and store.get_persona(pid).source == "upload"
    assert result.messages == ["Imported 1 persona, 2 items (1 duplicate skipped)."]
    more = store.ingest_upload(b"three\n\none", "x.txt", persona_id=pid)
    assert (more.items_added, more.duplicates_skipped) == (1, 1)
    with pytest.raises(PersonaDemoError, match="already exists"):
        store.ingest_upload(path)
    assert texts(store, pid) == ["one", "two", "three"]


def test_lamp_import_merges_into_existing_personas(store: PersonaStore) -> None:
    questions = [
        {
            "id": "q1",
            "user_id": "u1",
            "input": "i",
            "profile": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}],
        },
        {"id": "q2", "user_id": "u2", "input": "i", "profile": [{"id": "c", "text": "z"}]},
    ]
    data = json.dumps(questions).encode()
    first = store.ingest_upload(data, "train_questions.json")
    assert (first.personas_added, first.items_added, first.duplicates_skipped) == (2, 3, 0)
    second = store.ingest_upload(data, "train_questions.json")
    assert (second.personas_added, second.personas_updated, second.items_added) == (0, 0, 0)
    assert second.duplicates_skipped == 3
    u1 = store.find_persona("u1")
    assert store.list_items(u1)[0].fields == {"id": "a", "text": "x"}
    assert store.get_persona(u1).meta["questions"] == [{"id": "q1", "input": "i"}]


# ---------------------------------------------------------------------------------------------- caches


def test_embedding_cache_is_float32_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    first = PersonaStore(path)
    vectors = {
        text_hash("a"): np.arange(4, dtype=np.float64),
        text_hash("b"): np.ones((2, 3), dtype=np.float32),
    }
    first.embedding_cache.put_many("enc-1", vectors)
    first.put_many("enc-1", {})
    first.close()
    del first

    second = PersonaStore(path)
    found = second.get_many("enc-1", [text_hash("a"), text_hash("b"), text_hash("missing"), text_hash("a")])
    assert set(found) == {text_hash("a"), text_hash("b")}
    assert found[text_hash("a")].dtype == np.float32 and found[text_hash("a")].tolist() == [0, 1, 2, 3]
    assert found[text_hash("b")].shape == (2, 3)
    found[text_hash("a")][0] = 99  # returned arrays are writable copies
    assert second.get_many("enc-2", [text_hash("a")]) == {}
    assert second.get_many("enc-1", []) == {}
    second.put_many("enc-1", {text_hash("a"): np.zeros(4)})  # overwrite
    assert second.get_many("enc-1", [text_hash("a")])[text_hash("a")].tolist() == [0, 0, 0, 0]
    many = {text_hash(str(i)): np.full(2, i) for i in range(1_200)}  # more than one SQL chunk
    second.put_many("enc-3", many)
    assert len(second.get_many("enc-3", list(many))) == 1_200
    second.close()


def test_persona_vectors_are_invalidated_when_the_history_changes(store: PersonaStore) -> None:
    pid = store.create_persona("Ann")
    store.add_items(pid, ["a", "b"])
    revision = store.get_persona(pid).revision
    assert store.get_persona_vector(pid, "plug-1") is None
    assert store.put_persona_vector(pid, "plug-1", np.ones(3), revision=revision)
    assert store.get_persona_vector(pid, "plug-1").tolist() == [1, 1, 1]
    assert store.get_persona_vector(pid, "plug-2") is None  # another plug: miss

    for change in (
        lambda: store.add_items(pid, ["c"]),
        lambda: store.update_item(store.list_items(pid)[0].id, "A"),
        lambda: store.delete_item(store.list_items(pid)[0].id),
    ):
        store.put_persona_vector(pid, "plug-1", np.ones(3))
        change()
        assert store.get_persona_vector(pid, "plug-1") is None
    assert not store.put_persona_vector(
        pid, "plug-1", np.ones(3), revision=revision
    )  # computed from old history
    assert store.get_persona_vector(pid, "plug-1") is None
    store.add_items(pid, ["c"])  # duplicate only: nothing changed, vector stays valid
    store.put_persona_vector(pid, "plug-1", np.ones(3))
    store.add_items(pid, ["c"])
    assert store.get_persona_vector(pid, "plug-1") is not None
    store.rename_persona(pid, "Annie")  # a rename does not change the history
    assert store.get_persona_vector(pid, "plug-1") is not None
    assert store.invalidate_persona_vectors("plug-1") == 1
    assert not store.put_persona_vector(9999, "plug-1", np.ones(3))


def test_generation_log(store: PersonaStore) -> None:
    pid = store.create_persona("Ann")
    first = store.log_generation(
        persona_id=pid, task="headline", prompt="p", output_base="b", output_personal="q", settings={"t": 0.7}
    )
    store.log_generation(persona_id=None, task="free", prompt="p2", output_base="b2", output_personal="q2")
    store.rename_persona(pid, "Annie")
    logged = store.list_generations(pid)
    assert [g.id for g in logged] == [first]
    assert (logged[0].persona_name, logged[0].settings, logged[0].output_personal) == ("Ann", {"t": 0.7}, "q")
    assert [g.task for g in store.list_generations()] == ["free", "headline"]
    store.delete_persona(pid)
    assert [g.task for g in store.list_generations()] == ["free"]
    with pytest.raises(PersonaDemoError, match="no persona"):
        store.log_generation(persona_id=pid, task="t", prompt="p", output_base="b", output_personal="q")


# ---------------------------------------------------------------------------------------------- schema


def test_file_settings_wal_foreign_keys_and_schema_version(store: PersonaStore) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == store.schema_version()
    conn.close()
    assert store._db().conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_migration_from_an_older_schema_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO personas (name, name_key, created, updated) VALUES ('Old', 'old', '2020', '2020')"
    )
    conn.commit()
    conn.close()
    with PersonaStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        pid = store.find_persona("Old")
        assert store.put_persona_vector(pid, "p", np.ones(2))  # table from migration 2 exists


def test_newer_foreign_and_broken_files_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(PersonaDemoError, match="newer version of persona-demo"):
        PersonaStore(newer)
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(PersonaDemoError, match="another program"):
        PersonaStore(foreign)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(PersonaDemoError, match="not a persona database or is damaged"):
        PersonaStore(junk)
    with pytest.raises(PersonaDemoError, match="Cannot create the folder"):
        PersonaStore(junk / "sub" / "x.db")


def test_default_path_follows_env_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DB_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "persona-demo" / "personas.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_db_path() == Path.home() / ".local" / "share" / "persona-demo" / "personas.db"
    monkeypatch.setenv(DB_ENV, str(tmp_path / "env.db"))
    assert default_db_path() == tmp_path / "env.db"
    with PersonaStore() as store:
        assert store.path == tmp_path / "env.db" and store.path.exists()


# ----------------------------------------------------------------------------------------------- seeds


def test_seed_personas_are_created_once_on_first_start(store: PersonaStore) -> None:
    assert 5 <= len(SEED_PERSONAS) <= 6
    assert len({name_key(p.name) for p in SEED_PERSONAS}) == len(SEED_PERSONAS)
    assert all(8 <= len(p.items) <= 12 and all(i.title and i.date for i in p.items) for p in SEED_PERSONAS)
    assert ensure_seed_personas(store) == len(SEED_PERSONAS)
    assert ensure_seed_personas(store) == 0
    summaries = store.list_personas()
    assert sorted((p.name, p.item_count) for p in summaries) == sorted(
        (p.name, len(p.items)) for p in SEED_PERSONAS
    )
    assert {p.source for p in summaries} == {"seed"}
    for persona in summaries:
        store.delete_persona(persona.id)
    assert ensure_seed_personas(store) == 0  # deleted examples stay deleted


def test_no_seeds_when_the_user_already_has_personas(store: PersonaStore) -> None:
    store.create_persona("Mine")
    assert ensure_seed_personas(store) == 0
    assert [p.name for p in store.list_personas()] == ["Mine"]


# -------------------------------------------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="persona_demo")
    add_import_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_import_cli_prints_a_summary_and_is_repeatable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = [
        {
            "id": f"q{i}",
            "user_id": f"user {i % 3}",
            "input": "x",
            "profile": [{"text": f"t{i}"}, {"text": "same"}],
        }
        for i in range(6)
    ]
    source = tmp_path / "train_questions.json"
    source.write_text(json.dumps(questions), encoding="utf-8")
    db = tmp_path / "cli.db"
    assert run_cli(["import", str(source), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"imported 3 personas, 9 items (3 duplicates skipped) into {db}"
    assert run_cli(["import", str(source), "--db", str(db)]) == 0
    assert (
        capsys.readouterr().out.strip() == f"imported 0 personas, 0 items (12 duplicates skipped) into {db}"
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n\nworld", encoding="utf-8")
    assert run_cli(["import", str(notes), "--db", str(db), "--name", "user 0"]) == 0
    assert "imported 0 personas, 2 items" in capsys.readouterr().out
    with PersonaStore(db) as store:
        assert store.get_persona(store.find_persona("user 0")).item_count == 5


def test_import_cli_errors_are_persona_demo_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2", encoding="utf-8")
    db = tmp_path / "cli.db"
    with pytest.raises(PersonaDemoError, match="Malformed JSON in bad.json at line 1"):
        run_cli(["import", str(bad), "--db", str(db)])
    assert not db.exists()  # parsing failed before the database was even opened
    with pytest.raises(PersonaDemoError, match="--max-mb"):
        run_cli(["import", str(bad), "--db", str(db), "--max-mb", "0"])
