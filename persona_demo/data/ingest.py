"""Turn an uploaded file (or typed text) into history items, without touching the database.

Parsing is kept pure so that a bad upload can never half-change the store: either `parse_upload` returns a
complete `ParsedUpload`, or it raises `PersonaDemoError` with a message naming the file (and line, where
there is one) and nothing has been written anywhere.

Formats (chosen by extension, sniffed when the extension is unknown):

- ``.txt`` / ``.md``: one item per blank-line-separated block.
- ``.csv`` / ``.tsv``: the first row is the header; the text column is detected (a column called
  ``text``/``content``/... or else the column with the longest prose) or chosen by the caller.
- ``.json``: a list of strings, a list of objects with a text field, a LaMP ``*_questions.json`` file
  (one persona per ``user_id``, or per question where there is none) or a persona exported by the store.
- ``.jsonl``: one string or object per line; objects with a ``profile``/``posts`` list are personas.
- ``.gz``: any of the above, gzip-compressed (decompressed size capped like an upload).

Encoding: UTF-8 (with or without BOM) and UTF-16/32 with a BOM are read as such. Other non-UTF-8 text is
decoded as Windows-1252 (a superset of Latin-1 for printable characters) *with a notice*, because that is
what almost every legacy Western text file is; a mostly-UTF-8 file with a few broken bytes keeps UTF-8 and
gets U+FFFD for the broken bytes, also with a notice. Files that look binary (NUL bytes, known magic numbers
such as PDF/ZIP/PNG, or mostly control characters) are refused with an error.

Limits (`IngestLimits`): 20 MB per upload, 10,000 distinct items per persona, 5,000 characters per item
and 10,000 personas per file. A longer item is never cut: `split_text` makes it several items, in order, at
paragraph, line, sentence or word boundaries, and a notice says so (nothing a person wrote is dropped).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import unicodedata
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persona_demo.engine.cache import text_hash
from persona_demo.errors import PersonaDemoError

EXPORT_FORMAT = "persona-demo.persona"
EXPORT_VERSION = 1

TEXT_KEYS = ("text", "content", "body", "post", "review", "reviewtext", "message", "comment", "tweet")
SECONDARY_TEXT_KEYS = ("abstract", "description", "summary")
LAMP_TEXT_KEYS = ("text", "abstract", "description")
TITLE_KEYS = ("title", "headline", "subject")
SCORE_KEYS = ("score", "rating", "stars", "overall")
DATE_KEYS = ("date", "time", "timestamp", "created", "created_at")
PERSONA_ITEM_KEYS = ("profile", "posts", "items", "history", "texts")
PERSONA_NAME_KEYS = ("name", "user_id", "user", "author", "id")

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".text"}
CSV_SUFFIXES = {".csv", ".tsv", ".tab"}
JSON_SUFFIXES = {".json"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}

_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or a Word/Excel/OpenDocument file)"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x7fELF", "a program"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_BLOCK_SPLIT = re.compile(r"\n[ \t\f\v]*\n")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def _cp1252_latin1(error: UnicodeDecodeError) -> tuple[str, int]:
    """Map the five bytes Windows-1252 leaves undefined to their Latin-1 code points instead of failing."""
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("persona_demo_cp1252_latin1", _cp1252_latin1)


@dataclass(frozen=True)
class IngestLimits:
    """Caps that keep one upload from exhausting memory, the database or the encoder's patience."""

    max_bytes: int = 20 * 1024 * 1024
    max_items: int = 10_000
    max_chars: int = 5_000
    max_personas: int = 10_000


@dataclass(frozen=True)
class HistoryItem:
    """One piece of a persona's history; `fields` keeps every extra field of the source verbatim."""

    text: str
    title: str | None = None
    score: Any = None
    date: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    persona_id: int | None = None
    position: int | None = None

    @property
    def text_hash(self) -> str:
        return text_hash(self.text)


@dataclass
class ParsedPersona:
    """A persona described by a file (LaMP user, exported persona, blog author)."""

    name: str
    items: list[HistoryItem]
    source: str = "upload"
    meta: dict[str, Any] = field(default_factory=dict)
    created: str | None = None
    updated: str | None = None


@dataclass
class ParsedUpload:
    """What a file contained: loose `items` for the chosen persona, or whole `personas`, plus notices."""

    filename: str
    kind: str
    items: list[HistoryItem] = field(default_factory=list)
    personas: list[ParsedPersona] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    text_column: str | None = None
    truncated: int = 0

    @property
    def item_count(self) -> int:
        return len(self.items) + sum(len(p.items) for p in self.personas)


class NoTextColumnError(PersonaDemoError):
    """A table without an obvious text column; `columns` lets the UI ask the user which one to use."""

    def __init__(self, message: str, columns: list[str]) -> None:
        super().__init__(message)
        self.columns = columns


def display_label(text: str, max_chars: int = 60) -> str:
    """Short, single-line, control-character-free rendering of a user string for messages (not HTML)."""
    shown = _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}", str(text).replace("\n", " ").replace("\r", " ")
    )
    return shown if len(shown) <= max_chars else shown[: max_chars - 1] + "…"


def _short_filename(name: str, max_chars: int = 120) -> str:
    """A file name fit for messages that keeps its end, because the extension decides the format."""
    shown = display_label(unicodedata.normalize("NFC", name), len(name) + 1)
    if len(shown) <= max_chars:
        return shown
    half = (max_chars - 1) // 2
    return shown[:half] + "…" + shown[-half:]


_SPLIT_LEVELS = (
    re.compile(r"\n[ \t\f\v]*\n"),  # paragraphs
    re.compile(r"\n"),  # lines
    re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"'”’»)\]])\s+|(?<=[。！？])"),  # sentences (CJK: no space)
    re.compile(r"\s+"),  # words
)
"""Where a long text may be split, coarsest first; only a word longer than an item is cut inside."""


def split_text(text: str, max_chars: int) -> list[str]:
    """A text as items of at most `max_chars` characters, in order, losing nothing but whitespace.

    The item limit keeps one text from dominating the encoder and the prompt; it must not throw away what a
    person wrote. So a long text is split at the coarsest boundary that fits (blank lines, then line breaks,
    sentence ends, spaces; a single unbroken word is cut), and neighbouring parts are packed together up to
    the limit, so 50,000 characters make about ten items. A text within the limit comes back unchanged;
    the parts of a longer one are stripped (whitespace at the split points is the only thing dropped).
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    if len(text) <= max_chars:
        return [text]
    return [text[start:end] for start, end in _split_spans(text, 0, len(text), max_chars, 0)]


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _split_spans(text: str, start: int, end: int, max_chars: int, level: int) -> list[tuple[int, int]]:
    """(start, end) offsets of `text[start:end]`'s parts, split at `_SPLIT_LEVELS[level]` or finer."""
    start, end = _strip_span(text, start, end)
    if end - start <= max_chars:
        return [(start, end)] if end > start else []
    if level == len(_SPLIT_LEVELS):
        return _hard_cuts(text, start, end, max_chars)
    segments, position = [], start
    for match in _SPLIT_LEVELS[level].finditer(text, start, end):
        segments.append(_strip_span(text, position, match.start()))
        position = max(position, match.end())
    segments.append(_strip_span(text, position, end))
    segments = [(s, e) for s, e in segments if e > s]
    if len(segments) < 2:
        return _split_spans(text, start, end, max_chars, level + 1)
    spans: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for seg_start, seg_end in segments:
        if current is not None and seg_end - current[0] <= max_chars:
            current = (current[0], seg_end)  # pack neighbours (and what separates them) into one part
            continue
        if current is not None:
            spans.append(current)
            current = None
        if seg_end - seg_start <= max_chars:
            current = (seg_start, seg_end)
        else:
            spans.extend(_split_spans(text, seg_start, seg_end, max_chars, level + 1))
    if current is not None:
        spans.append(current)
    return spans


def _hard_cuts(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """A word longer than an item: cut it every `max_chars`, but never between a letter and its accent."""
    spans = []
    while end - start > max_chars:
        cut = start + max_chars
        while cut > start + 1 and unicodedata.combining(text[cut]):
            cut -= 1
        spans.append((start, cut))
        start = cut
    spans.append((start, end))
    return spans


def split_note(pieces: int, what: str = "That text") -> str:
    """The message shown when a long text became several items."""
    return (
        f"{what} was long: added as {pieces:,} items (split at paragraph or sentence boundaries, in order)."
    )


def truncate_text(text: str, max_chars: int) -> str:
    """Cut a long text at a word boundary near `max_chars`, ending in an ellipsis, never exceeding it."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ", int(max_chars * 0.8))
    if space > 0:
        cut = cut[:space]
    return cut.rstrip() + "…"


def check_storable(text: str, what: str) -> None:
    """Refuse lone surrogates (they cannot be written as UTF-8), with a message instead of a crash."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PersonaDemoError(
            f"The {what} contains an invalid character at position {exc.start + 1} (a lone UTF-16 surrogate);"
            " remove it and try again."
        ) from None


# ---------------------------------------------------------------------------------------------- decoding


def _read_source(source: str | Path | bytes, filename: str, limits: IngestLimits) -> bytes:
    """Read at most `max_bytes` (+1 to detect overflow) so a 50 MB upload is refused without loading it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > limits.max_bytes:
                raise PersonaDemoError(_too_big(filename, size, limits))
            with path.open("rb") as handle:
                data = handle.read(limits.max_bytes + 1)
        except PersonaDemoError:
            raise
        except IsADirectoryError:
            raise PersonaDemoError(f"{filename} is a folder, not a file.") from None
        except FileNotFoundError:
            raise PersonaDemoError(f"{filename} does not exist.") from None
        except OSError as exc:
            raise PersonaDemoError(f"Could not read {filename}: {exc.strerror or exc}.") from None
    if len(data) > limits.max_bytes:
        raise PersonaDemoError(_too_big(filename, len(data), limits))
    return data


def _too_big(filename: str, size: int, limits: IngestLimits) -> str:
    return (
        f"{filename} is too large ({size / 1_048_576:.1f} MB); the limit is "
        f"{limits.max_bytes / 1_048_576:.0f} MB per upload. Split it into smaller files."
    )


def _gunzip(data: bytes, filename: str, limits: IngestLimits) -> bytes:
    """Decompress with the same size cap as an upload, so a zip bomb is refused rather than expanded."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
            out = handle.read(limits.max_bytes + 1)
    except (OSError, EOFError, zlib.error):
        raise PersonaDemoError(
            f"{filename} is not a valid gzip file (it may be truncated or corrupted)."
        ) from None
    if len(out) > limits.max_bytes:
        raise PersonaDemoError(
            f"{filename} expands to more than {limits.max_bytes / 1_048_576:.0f} MB; the limit is "
            f"{limits.max_bytes / 1_048_576:.0f} MB per upload. Split it into smaller files."
        )
    return out


def decode_bytes(data: bytes, filename: str) -> tuple[str, list[str]]:
    """Bytes to text: BOM, then UTF-8, then Windows-1252 with a notice; binary files are an error."""
    if not data.strip():
        raise PersonaDemoError(f"{filename} is empty.")
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise PersonaDemoError(f"{filename} looks like {what}, not text. {_SAVE_AS_TEXT}")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _check_not_binary(data[len(bom) :].decode(encoding), filename), []
            except UnicodeDecodeError:
                raise PersonaDemoError(
                    f"{filename} starts with a {encoding.upper()} marker but is not valid {encoding.upper()}."
                ) from None
    if b"\x00" in data:
        raise PersonaDemoError(f"{filename} looks like a binary file, not text. {_SAVE_AS_TEXT}")
    try:
        return _check_not_binary(data.decode("utf-8"), filename), []
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
    damaged = data.decode("utf-8", errors="replace")
    bad = damaged.count("\ufffd")
    if sum(1 for ch in damaged if ord(ch) > 127) - bad >= bad:
        # Mostly well-formed UTF-8 (more valid non-ASCII characters than broken bytes): a damaged UTF-8
        # file, not a legacy one; reading it as Windows-1252 would garble every accented letter.
        notice = (
            f"{filename} is UTF-8 with {bad:,} unreadable byte(s) (first on line {line}); they were replaced "
            "by \ufffd."
        )
        return _check_not_binary(damaged, filename), [notice]
    text = _check_not_binary(data.decode("cp1252", errors="persona_demo_cp1252_latin1"), filename)
    notice = (
        f"{filename} is not UTF-8 (first unreadable byte on line {line}); it was read as Windows-1252 "
        "(Western European). If accented letters look wrong, save the file as UTF-8 and upload it again."
    )
    return text, [notice]


_SAVE_AS_TEXT = "Upload plain text instead: .txt, .md, .csv, .tsv, .json or .jsonl."


def _check_not_binary(text: str, filename: str) -> str:
    """Mostly control characters means a binary format that happened to decode; refuse it."""
    sample = text[:65_536]
    controls = len(_CONTROL.findall(sample))
    if controls > 8 and controls > len(sample) * 0.1:
        raise PersonaDemoError(f"{filename} looks like a binary file, not text. {_SAVE_AS_TEXT}")
    if not text.strip():
        raise PersonaDemoError(f"{filename} is empty (it contains only whitespace).")
    return text


# ----------------------------------------------------------------------------------------------- items


class _ItemBuilder:
    """Collects items, splitting long ones (`split_text`) and counting them for one notice."""

    def __init__(self, limits: IngestLimits) -> None:
        self.limits = limits
        self.truncated = 0
        """Always 0: long items are split, not shortened (kept for `ParsedUpload.truncated`'s readers)."""
        self.split = 0
        """Items longer than the limit."""
        self.parts = 0
        """The items those became."""

    def make(self, text: Any, **extra: Any) -> list[HistoryItem]:
        """The item(s) for one source text: none for an empty or non-text value, several for a long one;
        each part keeps the source's title, score, date and fields."""
        if text is None:
            return []
        if not isinstance(text, str):
            if isinstance(text, (dict, list)):
                return []
            text = str(text)
        if not text.strip():
            return []
        check_storable(text, "text")
        pieces = split_text(text, self.limits.max_chars)
        if len(pieces) > 1:
            self.split += 1
            self.parts += len(pieces)
        return [HistoryItem(text=piece, **extra) for piece in pieces]

    def notice(self, filename: str) -> list[str]:
        if not self.split:
            return []
        notice = (
            f"{self.split:,} item(s) in {filename} were longer than {self.limits.max_chars:,} characters: "
            f"added as {self.parts:,} items (split at paragraph or sentence boundaries, in order)."
        )
        return [notice]


def _check_item_count(items: list[HistoryItem], filename: str, limits: IngestLimits, who: str = "") -> None:
    distinct = len({item.text for item in items})
    if distinct > limits.max_items:
        raise PersonaDemoError(
            f"{filename} has {distinct:,} items{who}; the limit is {limits.max_items:,} per persona. "
            "Split the file or remove some items."
        )


def _scalar_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def _first_key(obj: dict[str, Any], keys: Iterable[str]) -> str | None:
    lowered = {str(k).lower(): k for k in obj}
    for key in keys:
        if key in lowered:
            return lowered[key]
    return None


def _item_from_object(
    obj: dict[str, Any], builder: _ItemBuilder, text_key: str | None, keep_all: bool = False
) -> list[HistoryItem]:
    """An object becomes an item (several if its text is long): its text field is the payload,
    title/score/date are lifted out as well.

    With `keep_all` (LaMP profiles) `fields` is the whole object; otherwise it is everything but the text.
    """
    key = text_key if text_key is not None else _text_key_of(obj)
    if key is None or key not in obj:
        return []
    title_key, score_key, date_key = (_first_key(obj, keys) for keys in (TITLE_KEYS, SCORE_KEYS, DATE_KEYS))
    fields = dict(obj) if keep_all else {k: v for k, v in obj.items() if k != key}
    score = obj.get(score_key) if score_key else None
    return builder.make(
        obj[key],
        title=_scalar_str(obj.get(title_key)) if title_key else None,
        score=score if score is None or isinstance(score, (str, int, float)) else _scalar_str(score),
        date=_scalar_str(obj.get(date_key)) if date_key else None,
        fields=fields,
    )


def _text_key_of(obj: dict[str, Any]) -> str | None:
    """The payload field: a common text key, then abstract/description, then a lone title."""
    key = _first_key(obj, TEXT_KEYS) or _first_key(obj, SECONDARY_TEXT_KEYS)
    if key is None:
        key = _first_key(obj, TITLE_KEYS)
    return key


# ------------------------------------------------------------------------------------------ plain text


def parse_text(
    text: str, filename: str = "typed text", *, limits: IngestLimits | None = None
) -> ParsedUpload:
    """Typed or .txt/.md text: one item per blank-line-separated block (single newlines stay inside)."""
    limits = limits or IngestLimits()
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    builder = _ItemBuilder(limits)
    items = [item for block in _BLOCK_SPLIT.split(normalized) for item in builder.make(block.strip())]
    if not items:
        raise PersonaDemoError(f"{filename} contains no text.")
    _check_item_count(items, filename, limits)
    return ParsedUpload(
        filename, "text", items=items, notices=builder.notice(filename), truncated=builder.truncated
    )


# ------------------------------------------------------------------------------------------------- csv


def _csv_rows(
    text: str, filename: str, delimiter: str, max_bytes: int
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, row) pairs; ragged rows and broken quotes are errors with a line number."""
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    last_line = 0
    try:
        for row in reader:
            start, last_line = last_line + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                continue
            if len(row) != len(header):
                raise PersonaDemoError(
                    f"Malformed table in {filename} at line {start}: the row has {len(row)} fields but the "
                    f"header has {len(header)}. Check for a missing or extra {_delimiter_name(delimiter)}."
                )
            rows.append((start, row))
    except csv.Error as exc:
        hint = " (a quote was opened and never closed)" if "end of data" in str(exc) else ""
        raise PersonaDemoError(
            f"Malformed table in {filename} at line {last_line + 1}: {exc}{hint}."
        ) from None
    if header is None:
        raise PersonaDemoError(f"{filename} contains no rows.")
    return header, rows


def _delimiter_name(delimiter: str) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab", "|": "bar"}.get(delimiter, repr(delimiter))


def _guess_delimiter(text: str, suffix: str) -> str:
    if suffix in {".tsv", ".tab"}:
        return "\t"
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _detect_text_column(header: list[str], rows: list[tuple[int, list[str]]]) -> int | None:
    """A column named like text wins; else the column with the longest prose (spaces, not numbers)."""
    lowered = [h.lower() for h in header]
    for keys in (TEXT_KEYS, SECONDARY_TEXT_KEYS):
        for key in keys:
            if key in lowered:
                return lowered.index(key)
    best, best_len = None, 0.0
    sample = [row for _, row in rows[:500]]
    for index in range(len(header)):
        values = [row[index].strip() for row in sample if row[index].strip()]
        if not values:
            continue
        prose = [v for v in values if " " in v and not _is_number(v)]
        mean_len = sum(len(v) for v in prose) / len(values)
        if len(prose) >= 0.5 * len(values) and mean_len >= 20 and mean_len > best_len:
            best, best_len = index, mean_len
    return best


def _is_number(value: str) -> bool:
    try:
        float(value.replace(",", ""))
    except ValueError:
        return False
    return True


def parse_csv(
    text: str, filename: str, *, text_column: str | None = None, limits: IngestLimits | None = None
) -> ParsedUpload:
    """A table with a header row; one item per row, other columns kept in `fields`."""
    limits = limits or IngestLimits()
    delimiter = _guess_delimiter(text, Path(filename).suffix.lower())
    header, rows = _csv_rows(text, filename, delimiter, limits.max_bytes)
    index = _choose_column(header, rows, filename, text_column)
    builder = _ItemBuilder(limits)
    items: list[HistoryItem] = []
    empty_rows = 0
    for _, row in rows:
        obj = {header[i] or f"column {i + 1}": row[i] for i in range(len(header))}
        row_items = _item_from_object(obj, builder, header[index] or f"column {index + 1}")
        empty_rows += not row_items
        items.extend(row_items)
    notices = builder.notice(filename)
    if empty_rows:
        notices.append(f"{empty_rows:,} row(s) with an empty '{header[index]}' were skipped.")
    if not items:
        raise PersonaDemoError(f"The column '{display_label(header[index])}' in {filename} is empty.")
    _check_item_count(items, filename, limits)
    return ParsedUpload(
        filename,
        "csv",
        items=items,
        notices=notices,
        columns=header,
        text_column=header[index],
        truncated=builder.truncated,
    )


def _choose_column(
    header: list[str], rows: list[tuple[int, list[str]]], filename: str, text_column: str | None
) -> int:
    names = ", ".join(f"'{display_label(h, 30)}'" for h in header)
    if text_column is not None:
        lowered = [h.lower() for h in header]
        if text_column.strip().lower() not in lowered:
            raise NoTextColumnError(
                f"{filename} has no column '{display_label(text_column)}' (columns: {names}).", header
            )
        return lowered.index(text_column.strip().lower())
    if not rows:
        raise PersonaDemoError(f"{filename} has a header but no rows.")
    index = _detect_text_column(header, rows)
    if index is None:
        raise NoTextColumnError(
            f"No column in {filename} looks like text (columns: {names}). "
            "Choose the column that holds the text.",
            header,
        )
    return index


# ------------------------------------------------------------------------------------------------ json


def _load_json(text: str, filename: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PersonaDemoError(
            f"Malformed JSON in {filename} at line {exc.lineno}, column {exc.colno}: {exc.msg}."
        ) from None
    except RecursionError:
        raise PersonaDemoError(f"Malformed JSON in {filename}: it is nested too deeply.") from None


def _is_lamp(data: list[Any], filename: str) -> bool:
    if filename.lower().removesuffix(".gz").endswith("_questions.json"):
        return True
    objects = [q for q in data[:50] if isinstance(q, dict)]
    return bool(objects) and all("input" in q and ("profile" in q or "user_id" in q) for q in objects)


def parse_json(
    text: str, filename: str, *, text_column: str | None = None, limits: IngestLimits | None = None
) -> ParsedUpload:
    """A list of texts/objects, a LaMP questions file, or a persona exported by the store."""
    limits = limits or IngestLimits()
    data = _load_json(text, filename)
    if isinstance(data, dict):
        if data.get("format") == EXPORT_FORMAT:
            return _parse_export(data, filename, limits)
        key = _first_key(data, PERSONA_ITEM_KEYS)
        if key is None or not isinstance(data[key], list):
            raise PersonaDemoError(
                f"{filename} holds a JSON object; expected a list of texts, a list of objects with a "
                "'text' field, a LaMP questions file or an exported persona."
            )
        data = data[key]
    if not isinstance(data, list):
        raise PersonaDemoError(f"{filename} holds a single JSON value; expected a list of texts.")
    if not data:
        raise PersonaDemoError(f"{filename} holds an empty list.")
    if _is_lamp(data, filename):
        return _parse_lamp(data, filename, limits)
    builder = _ItemBuilder(limits)
    items = _items_from_values(data, filename, builder, text_column, lambda i: f"element {i + 1}")
    _check_item_count(items, filename, limits)
    return ParsedUpload(
        filename, "json", items=items, notices=builder.notice(filename), truncated=builder.truncated
    )


def _items_from_values(
    values: list[Any], filename: str, builder: _ItemBuilder, text_key: str | None, where: Any
) -> list[HistoryItem]:
    """Strings and objects with a text field become items; anything else is an error naming its place."""
    items: list[HistoryItem] = []
    for index, value in enumerate(values):
        if isinstance(value, dict):
            if (text_key or _text_key_of(value)) not in value:
                raise PersonaDemoError(
                    f"{where(index).capitalize()} of {filename} is an object without a text field "
                    f"(expected one of: {', '.join(TEXT_KEYS[:4])}, abstract, title)."
                )
            items.extend(_item_from_object(value, builder, text_key))
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            items.extend(builder.make(value))
        elif value is not None:
            raise PersonaDemoError(f"{where(index).capitalize()} of {filename} is not a text or an object.")
    if not items:
        raise PersonaDemoError(f"{filename} contains no text.")
    return items


def parse_jsonl(
    text: str, filename: str, *, text_column: str | None = None, limits: IngestLimits | None = None
) -> ParsedUpload:
    """One JSON value per line; lines with a persona object (profile/posts list) make personas."""
    limits = limits or IngestLimits()
    values: list[Any] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            values.append(_load_json(line, f"{filename} (line {number})"))
            lines.append(number)
    if not values:
        raise PersonaDemoError(f"{filename} contains no text.")
    personas_like = [isinstance(v, dict) and _persona_items_key(v) is not None for v in values]
    if any(personas_like):
        if _is_lamp(values, filename):
            return _parse_lamp(values, filename, limits)
        return _parse_persona_lines(values, lines, filename, limits)
    builder = _ItemBuilder(limits)
    items = _items_from_values(values, filename, builder, text_column, lambda i: f"line {lines[i]}")
    _check_item_count(items, filename, limits)
    return ParsedUpload(
        filename, "jsonl", items=items, notices=builder.notice(filename), truncated=builder.truncated
    )


def _persona_items_key(obj: dict[str, Any]) -> str | None:
    key = _first_key(obj, PERSONA_ITEM_KEYS)
    return key if key is not None and isinstance(obj[key], list) else None


def _parse_persona_lines(
    values: list[Any], lines: list[int], filename: str, limits: IngestLimits
) -> ParsedUpload:
    """Lines like the blog corpus ({"user", "posts": [...]}): one persona per line."""
    builder = _ItemBuilder(limits)
    personas: list[ParsedPersona] = []
    for value, line in zip(values, lines):
        key = _persona_items_key(value) if isinstance(value, dict) else None
        if key is None:
            raise PersonaDemoError(
                f"Line {line} of {filename} is not a persona (an object with a 'posts' list)."
            )
        name_key = _first_key(value, PERSONA_NAME_KEYS)
        name = (
            str(value[name_key])
            if name_key and str(value[name_key]).strip()
            else f"{Path(filename).stem} {line}"
        )
        items = _items_from_values(
            value[key], filename, builder, None, lambda i, ln=line: f"item {i + 1} on line {ln}"
        )
        _check_item_count(items, filename, limits, f" for persona {display_label(name)}")
        meta = {k: v for k, v in value.items() if k != key}
        personas.append(ParsedPersona(name=name, items=items, source="import", meta=meta))
    _check_persona_count(personas, filename, limits)
    return ParsedUpload(
        filename, "personas", personas=personas, notices=builder.notice(filename), truncated=builder.truncated
    )


def _check_persona_count(personas: list[ParsedPersona], filename: str, limits: IngestLimits) -> None:
    if len(personas) > limits.max_personas:
        raise PersonaDemoError(
            f"{filename} describes {len(personas):,} personas; the limit is {limits.max_personas:,} per file."
        )


# ------------------------------------------------------------------------------------------------ LaMP


def _parse_lamp(questions: list[Any], filename: str, limits: IngestLimits) -> ParsedUpload:
    """One persona per `user_id` (questions of the same user are merged), or one per question without it."""
    builder = _ItemBuilder(limits)
    by_name: dict[str, ParsedPersona] = {}
    with_profile = 0
    for index, question in enumerate(questions):
        if not isinstance(question, dict):
            raise PersonaDemoError(f"Element {index + 1} of {filename} is not a LaMP question object.")
        profile = question.get("profile")
        if not isinstance(profile, list) or not profile:
            continue
        with_profile += 1
        name = _lamp_persona_name(question, index)
        persona = by_name.get(name)
        if persona is None:
            meta = {"user_id": question.get("user_id"), "file": filename, "questions": []}
            persona = by_name[name] = ParsedPersona(name=name, items=[], source="lamp", meta=meta)
        persona.meta["questions"].append({"id": question.get("id"), "input": question.get("input")})
        persona.items.extend(_lamp_profile_items(profile, index, filename, builder))
    if not with_profile:
        raise PersonaDemoError(
            f"{filename} looks like a LaMP questions file but none of its {len(questions):,} questions has a "
            "'profile' list, so there is no history to build personas from."
        )
    personas = [p for p in by_name.values() if p.items]
    for persona in personas:
        _check_item_count(persona.items, filename, limits, f" for persona {display_label(persona.name)}")
    _check_persona_count(personas, filename, limits)
    notices = builder.notice(filename)
    if with_profile < len(questions):
        notices.append(
            f"{len(questions) - with_profile:,} question(s) in {filename} had no profile and were skipped."
        )
    return ParsedUpload(filename, "lamp", personas=personas, notices=notices, truncated=builder.truncated)


def _lamp_persona_name(question: dict[str, Any], index: int) -> str:
    user = question.get("user_id")
    if user is not None and str(user).strip():
        return str(user)
    qid = question.get("id")
    return f"LaMP question {qid if qid is not None and str(qid).strip() else index + 1}"


def _lamp_profile_items(
    profile: list[Any], index: int, filename: str, builder: _ItemBuilder
) -> list[HistoryItem]:
    items = []
    for position, entry in enumerate(profile):
        if not isinstance(entry, dict):
            raise PersonaDemoError(
                f"Profile entry {position + 1} of question {index + 1} in {filename} is not an object."
            )
        key = _first_key(entry, LAMP_TEXT_KEYS) or _text_key_of(entry)
        if key:
            items.extend(_item_from_object(entry, builder, key, keep_all=True))
    return items


# ---------------------------------------------------------------------------------------------- export


def _parse_export(data: dict[str, Any], filename: str, limits: IngestLimits) -> ParsedUpload:
    persona = persona_from_export(data, limits=limits, where=filename)
    return ParsedUpload(filename, "export", personas=[persona])


def persona_from_export(
    data: Any, *, limits: IngestLimits | None = None, where: str = "the data"
) -> ParsedPersona:
    """Validate an exported persona dict strictly, so an edited or foreign file fails with a clear message."""
    limits = limits or IngestLimits()
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise PersonaDemoError(f'{where} is not an exported persona (no "format": "{EXPORT_FORMAT}").')
    if not isinstance(data.get("version"), int) or data["version"] > EXPORT_VERSION:
        raise PersonaDemoError(f"{where} was exported by a newer version of persona-demo; update the app.")
    name, items = data.get("name"), data.get("items")
    if not isinstance(name, str) or not isinstance(items, list):
        raise PersonaDemoError(f"{where} is an exported persona without a 'name' or an 'items' list.")
    parsed_items = [
        part for i, raw in enumerate(items) for part in _export_item(raw, i, where, limits.max_chars)
    ]
    if len(parsed_items) > limits.max_items:
        raise PersonaDemoError(f"{where} has {len(parsed_items):,} items; the limit is {limits.max_items:,}.")
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise PersonaDemoError(f"{where} has a 'meta' value that is not an object.")
    return ParsedPersona(
        name=name,
        items=parsed_items,
        source=str(data.get("source") or "import"),
        meta=meta,
        created=_opt_str(data.get("created")),
        updated=_opt_str(data.get("updated")),
    )


def _export_item(raw: Any, index: int, where: str, max_chars: int) -> list[HistoryItem]:
    """One exported item; a hand-edited one over the limit becomes several (`split_text`), like uploads."""
    if isinstance(raw, str):
        raw = {"text": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), str) or not raw["text"].strip():
        raise PersonaDemoError(f"Item {index + 1} in {where} has no text.")
    fields = raw.get("fields") or {}
    if not isinstance(fields, dict):
        raise PersonaDemoError(f"Item {index + 1} in {where} has 'fields' that are not an object.")
    check_storable(raw["text"], f"item {index + 1} in {where}")
    score = raw.get("score")
    if score is not None and not isinstance(score, (str, int, float)):
        score = _scalar_str(score)
    return [
        HistoryItem(
            text=part,
            title=_opt_str(raw.get("title")),
            score=score,
            date=_opt_str(raw.get("date")),
            fields=fields,
        )
        for part in split_text(raw["text"], max_chars)
    ]


def _opt_str(value: Any) -> str | None:
    return None if value is None else _scalar_str(value)


# ---------------------------------------------------------------------------------------------- entry


def parse_upload(
    source: str | Path | bytes,
    filename: str | None = None,
    *,
    text_column: str | None = None,
    limits: IngestLimits | None = None,
) -> ParsedUpload:
    """Parse one uploaded file (a path or its bytes; `filename` gives the name shown and the format)."""
    limits = limits or IngestLimits()
    if filename is None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            filename = "upload"
        else:
            filename = Path(source).name
    filename = _short_filename(filename)
    data = _read_source(source, filename, limits)
    inner = filename
    if filename.lower().endswith(".gz") or data.startswith(b"\x1f\x8b"):
        data = _gunzip(data, filename, limits)
        inner = filename[:-3] if filename.lower().endswith(".gz") else filename
    text, notices = decode_bytes(data, filename)
    parsed = _dispatch(text, inner, filename, text_column, limits)
    parsed.filename = filename
    parsed.notices[:0] = notices
    return parsed


def _dispatch(
    text: str, inner: str, filename: str, text_column: str | None, limits: IngestLimits
) -> ParsedUpload:
    suffix = Path(inner).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return parse_text(text, filename, limits=limits)
    if suffix in CSV_SUFFIXES:
        return parse_csv(text, filename, text_column=text_column, limits=limits)
    if suffix in JSON_SUFFIXES:
        return parse_json(text, filename, text_column=text_column, limits=limits)
    if suffix in JSONL_SUFFIXES:
        return parse_jsonl(text, filename, text_column=text_column, limits=limits)
    return _sniff(text, filename, text_column, limits)


def _sniff(text: str, filename: str, text_column: str | None, limits: IngestLimits) -> ParsedUpload:
    """Unknown extension: JSON if it parses as JSON, otherwise plain text, with a notice either way."""
    stripped = text.lstrip()
    if stripped[:1] in "[{":
        try:
            json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            parsed = _try_jsonl(text, filename, text_column, limits)
        else:
            parsed = parse_json(text, filename, text_column=text_column, limits=limits)
        if parsed is not None:
            parsed.notices.append(f"{filename} has no known extension; it was read as JSON.")
            return parsed
    parsed = parse_text(text, filename, limits=limits)
    parsed.notices.append(
        f"{filename} has no known extension; it was read as plain text (one item per paragraph)."
    )
    return parsed


def _try_jsonl(
    text: str, filename: str, text_column: str | None, limits: IngestLimits
) -> ParsedUpload | None:
    try:
        return parse_jsonl(text, filename, text_column=text_column, limits=limits)
    except PersonaDemoError:
        return None
