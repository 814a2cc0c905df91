"""Property-based tests: any name or text is stored verbatim or refused cleanly, and round trips are exact."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persona_demo.data.ingest import IngestLimits, parse_text, parse_upload, truncate_text
from persona_demo.data.store import PersonaStore, name_key, validate_name
from persona_demo.errors import PersonaDemoError

LIMITS = IngestLimits(max_chars=300, max_items=200)
# No example database: nothing is written into the checkout, and CI runs stay independent.
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# All of Unicode (surrogates excluded: Python strings from files never contain them; they are tested apart).
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=400)
names = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=220),
    st.sampled_from(["Ann", "ann", " ANN ", "'); DROP TABLE personas;--", "<b>x</b>", "😀", "\x00", ""]),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PersonaStore]:
    with PersonaStore(tmp_path_factory.mktemp("prop") / "p.db", limits=LIMITS) as s:
        yield s


def dump(store: PersonaStore) -> list[str]:
    conn = sqlite3.connect(store.path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@PROPERTY_SETTINGS
@given(name=names)
def test_any_name_is_stored_verbatim_or_refused_without_a_trace(store: PersonaStore, name: str) -> None:
    before = dump(store)
    taken = {name_key(p.name) for p in store.list_personas()}
    try:
        validate_name(name)
        expect_ok = name_key(name) not in taken
    except PersonaDemoError:
        expect_ok = False
    try:
        pid = store.create_persona(name)
    except PersonaDemoError as exc:
        assert not expect_ok, exc
        assert str(exc)  # a message, never an empty error
        assert dump(store) == before
        return
    assert expect_ok
    assert store.get_persona(pid).name == name
    assert pid in [p.id for p in store.list_personas(name)]
    assert store.find_persona(name) == pid


@PROPERTY_SETTINGS
@given(items=st.lists(any_text, max_size=25), name=st.uuids())
def test_any_texts_keep_order_dedupe_and_round_trip(
    store: PersonaStore, items: list[str], name: object
) -> None:
    pid = store.create_persona(f"texts {name}")
    result = store.add_items(pid, items)
    expected: list[str] = []
    for text in items:
        if not text.strip():
            continue
        text = truncate_text(text, LIMITS.max_chars)
        if text not in expected:
            expected.append(text)
    assert [i.text for i in store.list_items(pid)] == expected
    assert result.added == len(expected)
    assert result.added + result.skipped_duplicates + result.skipped_empty == len(items)

    exported = store.export_persona(pid)
    copy = store.import_persona(json.loads(json.dumps(exported)), name=f"copy {name}")
    assert {**store.export_persona(copy), "name": exported["name"]} == exported
    store.delete_persona(copy)
    store.delete_persona(pid)


@PROPERTY_SETTINGS
@given(items=st.lists(any_text, min_size=1, max_size=30))
def test_json_uploads_of_any_texts_parse_back_exactly(items: list[str]) -> None:
    data = json.dumps(items).encode("utf-8")
    kept = [truncate_text(t, LIMITS.max_chars) for t in items if t.strip()]
    if not kept:
        with pytest.raises(PersonaDemoError, match="contains no text"):
            parse_upload(data, "x.json", limits=LIMITS)
        return
    assert [i.text for i in parse_upload(data, "x.json", limits=LIMITS).items] == kept


@PROPERTY_SETTINGS
@given(text=any_text)
def test_typed_text_never_gives_empty_or_oversized_items(text: str) -> None:
    try:
        parsed = parse_text(text, limits=LIMITS)
    except PersonaDemoError as exc:
        assert "no text" in str(exc) or "limit" in str(exc)
        return
    assert parsed.items
    for item in parsed.items:
        assert item.text.strip() and item.text == item.text.strip()
        assert len(item.text) <= LIMITS.max_chars


@settings(max_examples=200, deadline=None, database=None)
@given(text=any_text, limit=st.integers(min_value=2, max_value=500))
def test_truncate_text_is_a_bounded_prefix(text: str, limit: int) -> None:
    cut = truncate_text(text, limit)
    assert len(cut) <= limit
    if len(text) <= limit:
        assert cut == text
    else:
        assert cut.endswith("…") and text.startswith(cut[:-1].rstrip())


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=2_000), suffix=st.sampled_from([".txt", ".csv", ".json", ".jsonl", ".md", ""]))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes, suffix: str) -> None:
    try:
        parsed = parse_upload(data, f"upload{suffix}", limits=LIMITS)
    except PersonaDemoError as exc:
        assert str(exc)
        return
    assert all(item.text.strip() and len(item.text) <= LIMITS.max_chars for item in parsed.items)
