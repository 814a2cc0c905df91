"""Parsing uploads into history items: formats, encodings, limits and the messages for bad files."""

from __future__ import annotations

import codecs
import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from persona_demo.data.ingest import (
    EXPORT_FORMAT,
    IngestLimits,
    NoTextColumnError,
    decode_bytes,
    display_label,
    parse_text,
    parse_upload,
    split_text,
    truncate_text,
)
from persona_demo.errors import PersonaDemoError
from tests.support import shared_data


def texts(parsed) -> list[str]:
    return [item.text for item in parsed.items]


# ------------------------------------------------------------------------------------------ plain text


def test_text_blocks_split_on_blank_lines_and_keep_inner_newlines() -> None:
    data = b"First post,\nstill first.\r\n\r\n  Second post.  \n \t \nThird\n\n\n\n"
    parsed = parse_upload(data, "notes.txt")
    assert parsed.kind == "text"
    assert texts(parsed) == ["First post,\nstill first.", "Second post.", "Third"]
    assert parsed.notices == []


def test_markdown_is_read_like_text(tmp_path: Path) -> None:
    path = tmp_path / "journal.md"
    path.write_text("# Monday\n\nWent **sailing**.\n\n- a list\n- of things\n", encoding="utf-8")
    assert texts(parse_upload(path)) == ["# Monday", "Went **sailing**.", "- a list\n- of things"]


def test_typed_text_uses_the_same_rules() -> None:
    assert texts(parse_text("one\n\ntwo")) == ["one", "two"]
    with pytest.raises(PersonaDemoError, match="contains no text"):
        parse_text(" \n\n\t ")


def test_unknown_extension_is_sniffed_with_a_notice() -> None:
    parsed = parse_upload(b'["a", "b"]', "data.dat")
    assert texts(parsed) == ["a", "b"]
    assert any("read as JSON" in n for n in parsed.notices)
    parsed = parse_upload(b"hello\n\nworld", "README")
    assert texts(parsed) == ["hello", "world"]
    assert any("plain text" in n for n in parsed.notices)


# ------------------------------------------------------------------------------------------------- csv


def test_csv_with_a_text_column_keeps_other_columns_as_fields() -> None:
    data = (
        b"id,title,text,rating,date\n"
        b'1,Hello,"A first, quoted\nmultiline post",5,2024-01-02\n'
        b"2,Bye,second post,3,\n"
    )
    parsed = parse_upload(data, "posts.csv")
    assert parsed.text_column == "text"
    assert parsed.columns == ["id", "title", "text", "rating", "date"]
    first, second = parsed.items
    assert first.text == "A first, quoted\nmultiline post"
    assert (first.title, first.score, first.date) == ("Hello", "5", "2024-01-02")
    assert first.fields == {"id": "1", "title": "Hello", "rating": "5", "date": "2024-01-02"}
    assert second.text == "second post"


def test_csv_detects_the_prose_column_when_no_column_is_called_text() -> None:
    rows = ["user,stars,when,my thoughts"]
    rows += [
        f"u{i},{i % 5},2024-0{i % 9 + 1}-01,I really liked item number {i} because it was sturdy"
        for i in range(8)
    ]
    parsed = parse_upload("\n".join(rows).encode(), "reviews.csv")
    assert parsed.text_column == "my thoughts"
    assert len(parsed.items) == 8


def test_csv_text_column_chosen_by_the_user_and_semicolons() -> None:
    data = b"a;b\nshort;other words here that are long enough\nx;y y\n"
    parsed = parse_upload(data, "t.csv", text_column="A")
    assert texts(parsed) == ["short", "x"]
    with pytest.raises(NoTextColumnError, match="no column 'zzz'") as info:
        parse_upload(data, "t.csv", text_column="zzz")
    assert info.value.columns == ["a", "b"]


def test_tsv_and_empty_cells_are_skipped_with_a_notice() -> None:
    parsed = parse_upload(b"text\tother\nhello there\t1\n\t2\n", "x.tsv")
    assert texts(parsed) == ["hello there"]
    assert any("empty" in n for n in parsed.notices)


def test_csv_without_a_text_like_column_lists_the_columns() -> None:
    data = b"id,score,year\n1,5,2020\n2,4,2021\n"
    with pytest.raises(
        NoTextColumnError, match=r"No column in nums\.csv looks like text .*'id', 'score', 'year'"
    ) as e:
        parse_upload(data, "nums.csv")
    assert e.value.columns == ["id", "score", "year"]


@pytest.mark.parametrize(
    ("data", "line", "hint"),
    [
        (b'text,n\nok,1\n"never closed,2\nmore,3\n', 3, "never closed"),
        (b"text,n\nok,1\ntoo,many,fields\n", 3, "3 fields but the header has 2"),
        (b'text,n\nok,1\n"bad"quote,2\n', 3, ""),
    ],
)
def test_malformed_csv_reports_file_and_line(data: bytes, line: int, hint: str) -> None:
    with pytest.raises(PersonaDemoError, match=f"Malformed table in broken.csv at line {line}") as info:
        parse_upload(data, "broken.csv")
    assert hint in str(info.value)


# ------------------------------------------------------------------------------------------------ json


def test_json_list_of_strings_and_objects() -> None:
    assert texts(parse_upload(json.dumps(["a", "b", "", None, 3]).encode(), "x.json")) == ["a", "b", "3"]
    data = [{"title": "T", "body": "the body", "score": 4.5, "extra": [1, 2]}, {"abstract": "an abstract"}]
    first, second = parse_upload(json.dumps(data).encode(), "x.json").items
    assert (first.text, first.title, first.score) == ("the body", "T", 4.5)
    assert first.fields == {"title": "T", "score": 4.5, "extra": [1, 2]}
    assert second.text == "an abstract"


def test_json_object_with_a_list_of_items() -> None:
    parsed = parse_upload(json.dumps({"items": ["one", {"text": "two"}]}).encode(), "x.json")
    assert texts(parsed) == ["one", "two"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b'["a", "b",\n  "c"\n  "d"]',
            r"Malformed JSON in bad\.json at line 3, column 3: Expecting ',' delimiter",
        ),
        (b"[1, 2", r"Malformed JSON in bad\.json at line 1"),
        (b'{"a": 1}', "holds a JSON object"),
        (b'"just a string"', "single JSON value"),
        (b"[]", "empty list"),
        (b'[{"id": 1, "rating": 5}]', "Element 1 of bad.json is an object without a text field"),
        (b'["ok", [1, 2]]', "Element 2 of bad.json is not a text or an object"),
        (b"[" * 100_000 + b"]" * 100_000, "Malformed JSON in bad.json"),
    ],
)
def test_bad_json_messages(data: bytes, message: str) -> None:
    with pytest.raises(PersonaDemoError, match=message):
        parse_upload(data, "bad.json")


def test_jsonl_lines_and_errors_name_the_line() -> None:
    parsed = parse_upload(b'"a"\n\n{"text": "b", "date": "2020"}\n', "x.jsonl")
    assert texts(parsed) == ["a", "b"]
    assert parsed.items[1].date == "2020"
    with pytest.raises(PersonaDemoError, match=r"x\.jsonl \(line 3\) at line 1, column 1"):
        parse_upload(b'"a"\n"b"\nnot json\n', "x.jsonl")


def test_jsonl_of_persona_objects_like_the_blog_corpus() -> None:
    lines = [
        {"user": "blog1", "age": 30, "posts": [{"date": "2004-05-01", "text": "p1"}, {"text": "p2"}]},
        {"user": "blog2", "posts": [{"text": "q1"}]},
    ]
    parsed = parse_upload("\n".join(json.dumps(x) for x in lines).encode(), "blogs.jsonl")
    assert [p.name for p in parsed.personas] == ["blog1", "blog2"]
    assert [i.text for i in parsed.personas[0].items] == ["p1", "p2"]
    assert parsed.personas[0].meta == {"user": "blog1", "age": 30}


def test_gzip_files_are_decompressed_with_the_size_cap() -> None:
    data = gzip.compress(b'"a"\n"b"\n')
    assert texts(parse_upload(data, "x.jsonl.gz")) == ["a", "b"]
    bomb = gzip.compress(b" " * 5_000)
    with pytest.raises(PersonaDemoError, match="expands to more than"):
        parse_upload(bomb, "x.txt.gz", limits=IngestLimits(max_bytes=1_000))
    with pytest.raises(PersonaDemoError, match="not a valid gzip file"):
        parse_upload(data[:10], "x.txt.gz")


# ------------------------------------------------------------------------------------------------ LaMP


def lamp_question(qid: str, user: str | None, profile: list[dict]) -> dict:
    question = {"id": qid, "input": f"Generate a title for: {qid}", "profile": profile}
    if user is not None:
        question["user_id"] = user
    return question


def test_lamp_one_persona_per_user_with_all_fields_kept() -> None:
    data = [
        lamp_question("q1", "u1", [{"id": "p1", "title": "T1", "abstract": "A1", "date": "2019"}]),
        lamp_question("q2", "u2", [{"id": "p2", "text": "R2", "score": "5", "date": "2013-01-01"}]),
        lamp_question(
            "q3", "u1", [{"id": "p1", "title": "T1", "abstract": "A1"}, {"id": "p3", "abstract": "A3"}]
        ),
    ]
    parsed = parse_upload(json.dumps(data).encode(), "train_questions.json")
    assert parsed.kind == "lamp"
    assert [p.name for p in parsed.personas] == ["u1", "u2"]
    u1, u2 = parsed.personas
    assert [i.text for i in u1.items] == ["A1", "A1", "A3"]  # the store skips and counts the duplicate
    assert u1.items[0].fields == {"id": "p1", "title": "T1", "abstract": "A1", "date": "2019"}
    assert (u1.items[0].title, u1.items[0].date) == ("T1", "2019")
    assert (u2.items[0].text, u2.items[0].score) == ("R2", "5")
    assert u1.meta["questions"] == [
        {"id": "q1", "input": "Generate a title for: q1"},
        {"id": "q3", "input": "Generate a title for: q3"},
    ]
    assert u1.source == "lamp"


def test_lamp_without_user_id_makes_one_persona_per_question() -> None:
    data = [lamp_question("q1", None, [{"text": "a"}]), lamp_question("q2", None, [{"text": "b"}])]
    parsed = parse_upload(json.dumps(data).encode(), "dev_questions.json")
    assert [p.name for p in parsed.personas] == ["LaMP question q1", "LaMP question q2"]


@pytest.mark.parametrize(
    "data",
    [
        [{"id": "q1", "input": "x", "user_id": "u"}],
        [{"id": "q1", "input": "x", "profile": []}],
    ],
)
def test_lamp_file_without_profiles_is_an_error(data: list) -> None:
    with pytest.raises(PersonaDemoError, match="none of its 1 questions has a 'profile' list"):
        parse_upload(json.dumps(data).encode(), "test_questions.json")


def test_real_lamp_file_from_shared_data() -> None:
    path = shared_data("amazon_mi_review_title", "dev_questions.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    parsed = parse_upload(path)
    users = Counter(q["user_id"] for q in raw)
    assert len(parsed.personas) == len(users)
    assert sum(len(p.items) for p in parsed.personas) == sum(len(q["profile"]) for q in raw)
    first = parsed.personas[0]
    profile_item = raw[0]["profile"][0]
    assert first.name == raw[0]["user_id"]
    assert first.items[0].text == profile_item["text"]
    assert first.items[0].title == profile_item["title"]
    assert first.items[0].fields == profile_item  # every field kept (id, category, ...)
    assert parsed.truncated == 0


# ------------------------------------------------------------------------------------- export format


def test_exported_persona_file_is_recognized() -> None:
    data = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "name": "Ann",
        "source": "user",
        "meta": {"k": 1},
        "items": [{"text": "hi", "title": None, "score": None, "date": None, "fields": {}}],
    }
    parsed = parse_upload(json.dumps(data).encode(), "ann.json")
    assert parsed.kind == "export"
    assert parsed.personas[0].name == "Ann"
    assert [i.text for i in parsed.personas[0].items] == ["hi"]
    data["version"] = 99
    with pytest.raises(PersonaDemoError, match="newer version"):
        parse_upload(json.dumps(data).encode(), "ann.json")


# -------------------------------------------------------------------------------------------- encodings


def test_utf8_bom_and_utf16_are_read() -> None:
    assert texts(parse_upload(codecs.BOM_UTF8 + "Grüße".encode(), "a.txt")) == ["Grüße"]
    assert texts(parse_upload("Grüße\n\nçava".encode("utf-16"), "a.txt")) == ["Grüße", "çava"]


def test_non_utf8_text_is_read_as_windows_1252_with_a_notice() -> None:
    parsed = parse_upload("Café crème\n\nna\u00efve \u201cquoted\u201d".encode("cp1252"), "old.txt")
    assert texts(parsed) == ["Café crème", "naïve “quoted”"]
    assert len(parsed.notices) == 1
    assert "not UTF-8 (first unreadable byte on line 1)" in parsed.notices[0]
    assert "Windows-1252" in parsed.notices[0]


def test_mostly_utf8_with_a_broken_byte_stays_utf8() -> None:
    text, notices = decode_bytes(
        "café crème brûlée\nline two \xff".encode().replace(b"\xc3\xbf", b"\xff"), "x.txt"
    )
    assert text == "café crème brûlée\nline two \ufffd"
    assert notices == [
        "x.txt is UTF-8 with 1 unreadable byte(s) (first on line 2); they were replaced by \ufffd."
    ]


def test_bytes_undefined_in_cp1252_fall_back_to_latin1() -> None:
    text, notices = decode_bytes(b"a\x81b\x9dc", "x.txt")
    assert text == "a\x81b\x9dc" and notices


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "x.txt is empty"),
        (b"  \n\t ", "x.txt is empty"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "looks like a PDF document"),
        (b"PK\x03\x04\x14\x00\x06\x00", "looks like a ZIP archive"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "looks like a PNG image"),
        (bytes(range(256)) * 4, "looks like a binary file"),
        (b"text\x00with\x00nul", "looks like a binary file"),
        (b"\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x11ab", "looks like a binary file"),
    ],
)
def test_empty_and_binary_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(PersonaDemoError, match=message):
        parse_upload(data, "x.txt")


# ----------------------------------------------------------------------------------------------- limits


def test_size_cap_is_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MB on paper, nothing written
    with pytest.raises(PersonaDemoError, match=r"huge\.txt is too large \(50\.0 MB\); the limit is 20 MB"):
        parse_upload(path)
    with pytest.raises(PersonaDemoError, match="too large"):
        parse_upload(b"x" * 2_000, "small.txt", limits=IngestLimits(max_bytes=1_000))


def test_missing_file_and_folder_give_messages(tmp_path: Path) -> None:
    with pytest.raises(PersonaDemoError, match="does not exist"):
        parse_upload(tmp_path / "nope.txt")
    with pytest.raises(PersonaDemoError, match="is a folder"):
        parse_upload(tmp_path, "folder.txt")


def test_item_cap_and_long_items_are_split_not_shortened() -> None:
    limits = IngestLimits(max_items=3, max_chars=50)
    with pytest.raises(PersonaDemoError, match="has 4 items; the limit is 3 per persona"):
        parse_upload(b"a\n\nb\n\nc\n\nd", "x.txt", limits=limits)
    long = "word " * 30  # 150 characters: three items of at most 50
    parsed = parse_upload(long.encode() + b"\n\nshort", "x.txt", limits=IngestLimits(max_chars=50))
    assert all(len(text) <= 50 for text in texts(parsed)) and texts(parsed)[-1] == "short"
    assert " ".join(texts(parsed)[:-1]).split() == long.split()
    assert parsed.truncated == 0
    assert any(
        "1 item(s) in x.txt were longer than 50 characters: added as 3 items" in n for n in parsed.notices
    )


def _assert_kept(text: str, pieces: list[str], max_chars: int) -> None:
    """Every character of `text` is in `pieces`, in order; only whitespace between them may be dropped."""
    assert pieces and all(0 < len(piece) <= max_chars for piece in pieces)
    position = 0
    for piece in pieces:
        found = text.find(piece, position)
        assert found >= 0, piece[:40]
        assert not text[position:found].strip(), f"dropped {text[position:found][:40]!r}"
        position = found + len(piece)
    assert not text[position:].strip()
    assert re.sub(r"\s", "", "".join(pieces)) == re.sub(r"\s", "", text)


def test_a_50000_character_text_is_split_at_paragraphs_keeping_every_character() -> None:
    rng = random.Random(0)
    words = ["harbour", "fog", "ferry", "rope", "tide", "gull", "anchor", "deck", "storm,", "calm"]
    paragraphs = []
    while sum(len(p) + 2 for p in paragraphs) < 50_000:
        sentences = [
            " ".join(rng.choice(words) for _ in range(rng.randint(4, 14))).capitalize() + rng.choice(".!?")
            for _ in range(rng.randint(1, 8))
        ]
        paragraphs.append(" ".join(sentences))
    text = "\n\n".join(paragraphs)
    pieces = split_text(text, 5_000)
    _assert_kept(text, pieces, 5_000)
    assert 10 <= len(pieces) <= 12  # packed up to the limit: about 50,000 / 5,000
    assert all(
        text.find(piece) == 0 or text[text.find(piece) - 2 : text.find(piece)] == "\n\n" for piece in pieces
    )


def test_split_falls_back_to_sentences_then_words_then_cuts() -> None:
    one_paragraph = "A sentence here. " * 400  # 6,800 characters, no line break
    pieces = split_text(one_paragraph, 5_000)
    _assert_kept(one_paragraph, pieces, 5_000)
    assert len(pieces) == 2 and all(piece.endswith(".") for piece in pieces)
    quoted = 'He said "stop." Then left! ' * 300
    pieces = split_text(quoted, 1_000)
    _assert_kept(quoted, pieces, 1_000)
    assert all(piece.endswith(('stop."', "left!")) for piece in pieces)
    no_sentences = "word " * 2_000
    _assert_kept(no_sentences, split_text(no_sentences, 5_000), 5_000)
    unbroken = "x" * 12_001
    assert split_text(unbroken, 5_000) == ["x" * 5_000, "x" * 5_000, "x" * 2_001]
    cjk = "天气很好。" * 2_000  # sentence ends without spaces
    pieces = split_text(cjk, 5_000)
    _assert_kept(cjk, pieces, 5_000)
    assert all(piece.endswith("。") for piece in pieces)
    accented = "e\u0301" * 3_000  # never separate a letter from its combining accent
    assert all(not piece.startswith("\u0301") for piece in split_text(accented, 1_001))


def test_split_keeps_short_texts_unchanged_and_is_exact_on_random_texts() -> None:
    assert split_text("  short, with spaces  ", 50) == ["  short, with spaces  "]
    with pytest.raises(ValueError, match="at least 1"):
        split_text("x", 0)
    rng = random.Random(1)
    alphabet = "ab .!?\n\t\u3002e\u0301"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        limit = rng.randint(2, 60)
        pieces = split_text(text, limit)
        if len(text) <= limit:
            assert pieces == [text]
        elif text.strip():
            _assert_kept(text, pieces, limit)
        else:
            assert pieces == []


def test_long_items_of_every_format_are_split_with_their_fields() -> None:
    limits = IngestLimits(max_chars=100)
    long = "One sentence of a long review. " * 10
    rows = json.dumps([{"text": long, "title": "T", "rating": 4}, "short"]).encode()
    parsed = parse_upload(rows, "r.json", limits=limits)
    assert [item.title for item in parsed.items] == ["T", "T", "T", "T", None]
    assert all(item.score == 4 for item in parsed.items[:-1])
    _assert_kept(long, texts(parsed)[:-1], 100)
    table = parse_upload(f'text,id\n"{long}",1\n,2\n'.encode(), "t.csv", limits=limits)
    _assert_kept(long, texts(table), 100)
    assert any("added as 4 items" in n for n in table.notices)
    assert any("1 row(s) with an empty 'text' were skipped" in n for n in table.notices)
    lines = parse_upload(
        json.dumps({"user": "u", "posts": [long]}).encode() + b"\n", "b.jsonl", limits=limits
    )
    _assert_kept(long, [item.text for item in lines.personas[0].items], 100)
    export = {"format": EXPORT_FORMAT, "version": 1, "name": "Ann", "items": [{"text": long, "title": "E"}]}
    persona = parse_upload(json.dumps(export).encode(), "ann.json", limits=limits).personas[0]
    _assert_kept(long, [item.text for item in persona.items], 100)
    assert {item.title for item in persona.items} == {"E"}


def test_truncate_text_cuts_at_a_word_boundary() -> None:
    assert truncate_text("short", 10) == "short"
    cut = truncate_text("alpha beta gamma delta epsilon", 20)
    assert cut == "alpha beta gamma…" and len(cut) <= 20
    assert len(truncate_text("x" * 100, 10)) == 10


def test_long_file_names_keep_their_extension_in_messages() -> None:
    parsed = parse_upload(b"id,score\n1,2\n", "n" * 300 + ".txt")
    assert parsed.kind == "text" and len(parsed.filename) <= 120 and parsed.filename.endswith("nnn.txt")


def test_display_label_makes_control_characters_visible() -> None:
    assert display_label("a\x00b\nc\x1b[31m") == "a\\x00b c\\x1b[31m"
    assert display_label("x" * 100, 10) == "x" * 9 + "…"
