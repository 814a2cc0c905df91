"""The persona store: one SQLite file (through sqlite-utils) that never loses or half-writes a persona.

Why it looks the way it does:

- Every change runs in one ``BEGIN IMMEDIATE`` transaction, so a crash (even SIGKILL) in the middle of a
  bulk import leaves all of it or none of it, and writers queue on the busy timeout instead of failing
  half-way; a busy database is retried with backoff and only then reported as a `PersonaDemoError`.
- WAL mode lets the UI read while an import writes; each thread has its own connection (sqlite3
  connections must not be shared across threads mid-transaction). ``synchronous=NORMAL`` is safe in WAL
  mode: a killed process loses nothing committed; only a power cut may drop the last commits, never
  corrupting the file.
- Texts and names are stored verbatim with parameterized SQL only; uniqueness of names uses a normalized
  key (case, width and spacing folded) so "Alice" and "alice " cannot both exist.
- Cached persona vectors carry the history revision they were computed from; any history change bumps
  the revision and drops them, so a stale vector is never served.
- The store is also the persistent `EmbeddingCache` (``get_many``/``put_many``, float32 blobs).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
import sqlite_utils

from persona_demo.data.ingest import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    HistoryItem,
    IngestLimits,
    ParsedPersona,
    ParsedUpload,
    check_storable,
    display_label,
    parse_upload,
    persona_from_export,
    truncate_text,
)
from persona_demo.engine.cache import text_hash
from persona_demo.errors import PersonaDemoError

__all__ = [
    "DB_ENV",
    "AddResult",
    "Generation",
    "HistoryItem",
    "ImportResult",
    "Persona",
    "PersonaStore",
    "PersonaSummary",
    "default_db_path",
    "name_key",
]

log = logging.getLogger(__name__)

DB_ENV = "PERSONA_DEMO_DB"
MAX_NAME_CHARS = 200
SQL_CHUNK = 500
T = TypeVar("T")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: personas, their ordered history, the embedding cache, app settings
        """CREATE TABLE personas (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL DEFAULT 'user',
            meta TEXT NOT NULL DEFAULT '{}',
            revision INTEGER NOT NULL DEFAULT 0,
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        )""",
        """CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            persona_id INTEGER NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            text TEXT NOT NULL,
            text_hash TEXT NOT NULL,
            title TEXT,
            score,
            date TEXT,
            fields TEXT NOT NULL DEFAULT '{}',
            UNIQUE (persona_id, text_hash)
        )""",
        "CREATE INDEX items_by_position ON items (persona_id, position)",
        """CREATE TABLE embeddings (
            encoder_id TEXT NOT NULL,
            text_hash TEXT NOT NULL,
            shape TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (encoder_id, text_hash)
        ) WITHOUT ROWID""",
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT)",
    ),
    (  # 2: cached query-independent persona vectors and the generation log
        """CREATE TABLE persona_vectors (
            persona_id INTEGER NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
            plug_id TEXT NOT NULL,
            revision INTEGER NOT NULL,
            shape TEXT NOT NULL,
            vector BLOB NOT NULL,
            created TEXT NOT NULL,
            PRIMARY KEY (persona_id, plug_id)
        )""",
        """CREATE TABLE generations (
            id INTEGER PRIMARY KEY,
            persona_id INTEGER REFERENCES personas(id) ON DELETE CASCADE,
            persona_name TEXT,
            task TEXT NOT NULL,
            prompt TEXT NOT NULL,
            output_base TEXT NOT NULL,
            output_personal TEXT NOT NULL,
            settings TEXT NOT NULL DEFAULT '{}',
            created TEXT NOT NULL
        )""",
        "CREATE INDEX generations_by_persona ON generations (persona_id, id)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


# ------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class PersonaSummary:
    id: int
    name: str
    source: str
    item_count: int
    created: str
    updated: str


@dataclass(frozen=True)
class Persona(PersonaSummary):
    revision: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class AddResult:
    """What an `add_items` call did; `messages` are ready to show to a person."""

    added: int = 0
    skipped_duplicates: int = 0
    skipped_empty: int = 0
    truncated: int = 0
    messages: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    """Totals of an import of one or more personas, with notices from parsing and storing."""

    personas_added: int = 0
    personas_updated: int = 0
    items_added: int = 0
    duplicates_skipped: int = 0
    empty_skipped: int = 0
    truncated: int = 0
    persona_ids: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"imported {self.personas_added:,} persona{'s' if self.personas_added != 1 else ''}, "
            f"{self.items_added:,} item{'s' if self.items_added != 1 else ''} "
            f"({self.duplicates_skipped:,} duplicate{'s' if self.duplicates_skipped != 1 else ''} skipped)"
        )
        if self.personas_updated:
            text += f"; {self.personas_updated:,} existing persona(s) got new items"
        return text


@dataclass(frozen=True)
class Generation:
    id: int
    persona_id: int | None
    persona_name: str | None
    task: str
    prompt: str
    output_base: str
    output_personal: str
    settings: dict[str, Any]
    created: str


# ---------------------------------------------------------------------------------------------- helpers


def default_db_path() -> Path:
    """$PERSONA_DEMO_DB, else $XDG_DATA_HOME/persona-demo/personas.db, else ~/.local/share/persona-demo/."""
    env = os.environ.get(DB_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "persona-demo" / "personas.db"


def name_key(name: str) -> str:
    """The uniqueness key of a name: NFKC, case-folded, surrounding and repeated whitespace removed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(folded.split())


def validate_name(name: Any) -> str:
    """Return the name unchanged if it is usable, else raise a `PersonaDemoError` saying why."""
    if not isinstance(name, str):
        raise PersonaDemoError("A persona name must be text.")
    check_storable(name, "persona name")
    if not name.strip():
        raise PersonaDemoError("A persona needs a name.")
    if len(name) > MAX_NAME_CHARS:
        raise PersonaDemoError(
            f"Persona names can be at most {MAX_NAME_CHARS} characters (this one has {len(name):,})."
        )
    if not any(unicodedata.category(ch)[0] not in "CZ" for ch in name):
        raise PersonaDemoError("A persona name needs at least one visible character.")
    return name


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json(value: Any) -> str:
    return json.dumps(value if value is not None else {}, ensure_ascii=False, sort_keys=True, default=str)


def _vector_blob(vector: Any) -> tuple[str, bytes]:
    array = np.asarray(vector, dtype=np.dtype("<f4"))
    return ",".join(str(n) for n in array.shape), np.ascontiguousarray(array).tobytes()


def _vector_from_blob(shape: str, blob: bytes) -> np.ndarray:
    dims = tuple(int(n) for n in shape.split(",") if n)
    return np.frombuffer(blob, dtype=np.dtype("<f4")).astype(np.float32).reshape(dims)


def _is_busy(exc: sqlite3.Error) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _user_error(exc: sqlite3.Error, path: Path) -> PersonaDemoError:
    """Translate what SQLite says about the file into something a person can act on."""
    message = str(exc).lower()
    if _is_busy(exc):
        text = (
            f"The persona database {path} is busy (another program is writing to it); try again in a moment."
        )
    elif "readonly" in message or "read-only" in message:
        text = f"Cannot write to the persona database {path}: it is read-only."
    elif "full" in message:
        text = f"The disk holding the persona database {path} is full."
    elif "not a database" in message or "malformed" in message or "corrupt" in message:
        text = f"{path} is not a persona database or is damaged ({exc}). Move it away to start a fresh one."
    elif "unable to open" in message:
        text = f"Cannot open the persona database {path} (check the folder exists and is writable)."
    else:
        text = f"Database error in {path}: {exc}."
    return PersonaDemoError(text)


def _no_persona(persona_id: int) -> PersonaDemoError:
    return PersonaDemoError(f"There is no persona with id {persona_id} (it may have been deleted).")


def _no_item(item_id: int) -> PersonaDemoError:
    return PersonaDemoError(f"There is no history item with id {item_id} (it may have been deleted).")


def _chunks(values: list[T], size: int = SQL_CHUNK) -> Iterator[list[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


# ------------------------------------------------------------------------------------------------ store


class PersonaStore:
    """Personas, their histories, caches and the generation log in one SQLite file; safe across threads.

    Use one instance per process; each thread gets its own connection on first use. Methods return plain
    dataclasses and raise `PersonaDemoError` for anything the user can fix (unknown ids, duplicate names,
    busy or broken database files).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        limits: IngestLimits | None = None,
        busy_timeout_s: float = 30.0,
        retries: int = 8,
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        if str(self.path) == ":memory:":
            raise ValueError("PersonaStore needs a file (threads use separate connections); use a temp path.")
        self.limits = limits or IngestLimits()
        self.busy_timeout_s = busy_timeout_s
        self.retries = retries
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PersonaDemoError(
                f"Cannot create the folder for the persona database {self.path}: {exc}."
            ) from None
        self._setup()

    # --------------------------------------------------------------------------------- connections

    @property
    def embedding_cache(self) -> PersonaStore:
        """The store itself implements the engine's `EmbeddingCache` protocol."""
        return self

    def _db(self) -> sqlite_utils.Database:
        if os.getpid() != self._pid:  # forked: the parent's connections must not be touched
            self._local, self._connections, self._pid = threading.local(), [], os.getpid()
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                conn = sqlite3.connect(
                    str(self.path), timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise _user_error(exc, self.path) from None
            db = sqlite_utils.Database(conn, execute_plugins=False)
            with self._lock:
                self._connections.append(conn)
            self._local.db = db
        return db

    def close(self) -> None:
        """Close every thread's connection (the store can still be used; connections reopen lazily)."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, fn: Callable[[sqlite_utils.Database], T], *, write: bool) -> T:
        """Run `fn` in one transaction (BEGIN IMMEDIATE for writes), retrying while the file is busy."""
        delay = 0.02
        for attempt in range(self.retries + 1):
            db = self._db()
            conn = db.conn
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = fn(db)
                    conn.execute("COMMIT")
                    return result
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if _is_busy(exc) and attempt < self.retries:
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 1.0)
                    continue
                raise _user_error(exc, self.path) from exc
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                raise _user_error(exc, self.path) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        return self._run(fn, write=True)

    def _read(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        return self._run(fn, write=False)

    # ------------------------------------------------------------------------------------------ schema

    def _setup(self) -> None:
        def enable_wal(db: sqlite_utils.Database) -> None:
            db.enable_wal()

        for attempt in range(self.retries + 1):
            try:
                enable_wal(self._db())
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == self.retries:
                    raise _user_error(exc, self.path) from None
                time.sleep(0.05 * (attempt + 1))
            except sqlite3.DatabaseError as exc:
                raise _user_error(exc, self.path) from None
        self._write(self._migrate)

    def _migrate(self, db: sqlite_utils.Database) -> None:
        """Bring the schema to `SCHEMA_VERSION`, one numbered migration at a time, in one transaction."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise PersonaDemoError(
                f"{self.path} was written by a newer version of persona-demo (schema {version}, this version "
                f"knows {SCHEMA_VERSION}); update the app or use another database file."
            )
        if version == 0 and db.table_names():
            raise PersonaDemoError(
                f"{self.path} is an SQLite file of another program, not a persona database."
            )
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number + 1}")

    def schema_version(self) -> int:
        return self._read(lambda db: db.execute("PRAGMA user_version").fetchone()[0])

    # ---------------------------------------------------------------------------------------- personas

    def _require_persona(self, db: sqlite_utils.Database, persona_id: int) -> dict[str, Any]:
        rows = list(db.query("SELECT * FROM personas WHERE id = ?", [persona_id]))
        if not rows:
            raise _no_persona(persona_id)
        return rows[0]

    def _check_unique(self, db: sqlite_utils.Database, name: str, exclude_id: int | None = None) -> None:
        row = db.execute("SELECT id, name FROM personas WHERE name_key = ?", [name_key(name)]).fetchone()
        if row is not None and row[0] != exclude_id:
            raise PersonaDemoError(
                f"A persona named “{display_label(row[1])}” already exists; choose another name."
            )

    def _insert_persona(
        self,
        db: sqlite_utils.Database,
        name: str,
        source: str,
        meta: dict[str, Any] | None = None,
        created: str | None = None,
        updated: str | None = None,
    ) -> int:
        validate_name(name)
        self._check_unique(db, name)
        now = _now()
        row = {
            "name": name,
            "name_key": name_key(name),
            "source": str(source),
            "meta": _json(meta),
            "revision": 0,
            "created": created or now,
            "updated": updated or created or now,
        }
        return int(db["personas"].insert(row).last_pk)

    def create_persona(self, name: str, source: str = "user", *, meta: dict[str, Any] | None = None) -> int:
        """Create an empty persona; names are unique (case- and spacing-insensitive) and stored verbatim."""
        validate_name(name)
        return self._write(lambda db: self._insert_persona(db, name, source, meta))

    def rename_persona(self, persona_id: int, name: str) -> None:
        validate_name(name)

        def run(db: sqlite_utils.Database) -> None:
            self._require_persona(db, persona_id)
            self._check_unique(db, name, exclude_id=persona_id)
            db.execute(
                "UPDATE personas SET name = ?, name_key = ?, updated = ? WHERE id = ?",
                [name, name_key(name), _now(), persona_id],
            )

        self._write(run)

    def delete_persona(self, persona_id: int) -> None:
        """Delete a persona with its history, cached vectors and generation log (foreign-key cascade)."""

        def run(db: sqlite_utils.Database) -> None:
            self._require_persona(db, persona_id)
            db.execute("DELETE FROM personas WHERE id = ?", [persona_id])

        self._write(run)

    def duplicate_persona(self, persona_id: int, new_name: str | None = None) -> int:
        """Copy a persona and its history (not its log); the default name is "<name> (copy)"."""
        if new_name is not None:
            validate_name(new_name)

        def run(db: sqlite_utils.Database) -> int:
            original = self._require_persona(db, persona_id)
            name = new_name if new_name is not None else self._free_name(db, original["name"], "copy")
            new_id = self._insert_persona(db, name, original["source"], json.loads(original["meta"]))
            db.execute(
                """INSERT INTO items (persona_id, position, text, text_hash, title, score, date, fields)
                   SELECT ?, position, text, text_hash, title, score, date, fields
                   FROM items WHERE persona_id = ? ORDER BY position, id""",
                [new_id, persona_id],
            )
            return new_id

        return self._write(run)

    def _free_name(self, db: sqlite_utils.Database, base: str, word: str) -> str:
        """The first free name of "<base> (copy)", "<base> (copy 2)", ... (cut to fit the length limit)."""
        for number in range(1, 10_000):
            suffix = f" ({word})" if number == 1 else f" ({word} {number})"
            candidate = base[: MAX_NAME_CHARS - len(suffix)] + suffix
            if not self._name_taken(db, candidate):
                return candidate
        raise PersonaDemoError(f"Could not find a free name for a copy of “{display_label(base)}”.")

    _SUMMARY_SQL = """
        SELECT p.id, p.name, p.source, p.created, p.updated, p.revision, p.meta,
               (SELECT COUNT(*) FROM items i WHERE i.persona_id = p.id) AS item_count
        FROM personas p
    """

    def list_personas(self, search: str = "") -> list[PersonaSummary]:
        """All personas (or those whose name contains `search`, ignoring case), by name, with item counts."""
        pattern = "%" + name_key(search).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql = self._SUMMARY_SQL + " WHERE p.name_key LIKE ? ESCAPE '\\' ORDER BY p.name_key, p.id"
        rows = self._read(lambda db: list(db.query(sql, [pattern])))
        return [
            PersonaSummary(r["id"], r["name"], r["source"], r["item_count"], r["created"], r["updated"])
            for r in rows
        ]

    def get_persona(self, persona_id: int) -> Persona:
        def run(db: sqlite_utils.Database) -> dict[str, Any]:
            rows = list(db.query(self._SUMMARY_SQL + " WHERE p.id = ?", [persona_id]))
            if not rows:
                raise _no_persona(persona_id)
            return rows[0]

        r = self._read(run)
        return Persona(
            r["id"],
            r["name"],
            r["source"],
            r["item_count"],
            r["created"],
            r["updated"],
            r["revision"],
            json.loads(r["meta"]),
        )

    def find_persona(self, name: str) -> int | None:
        """The id of the persona with this name (compared like uniqueness is), or None."""
        row = self._read(
            lambda db: db.execute("SELECT id FROM personas WHERE name_key = ?", [name_key(name)]).fetchone()
        )
        return None if row is None else int(row[0])

    # ------------------------------------------------------------------------------------------- items

    def _prepare(self, items: Iterable[HistoryItem | str], result: AddResult) -> list[HistoryItem]:
        """Validate and shorten items before any write, counting empties and truncations."""
        prepared = []
        for raw in items:
            item = HistoryItem(text=raw) if isinstance(raw, str) else raw
            if not isinstance(item, HistoryItem) or not isinstance(item.text, str):
                raise PersonaDemoError("History items must be texts.")
            check_storable(item.text, "text")
            if not item.text.strip():
                result.skipped_empty += 1
                continue
            if len(item.text) > self.limits.max_chars:
                result.truncated += 1
                item = replace(item, text=truncate_text(item.text, self.limits.max_chars))
            prepared.append(item)
        return prepared

    def _insert_items(
        self, db: sqlite_utils.Database, persona_id: int, items: list[HistoryItem], result: AddResult
    ) -> None:
        """Append items after the last position, skipping texts the persona already has."""
        # Look up only the incoming hashes (UNIQUE(persona_id, text_hash) is an index): adding one item
        # costs the same whatever the history size.
        digests = list(dict.fromkeys(text_hash(item.text) for item in items))
        seen: set[str] = set()
        for chunk in _chunks(digests):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT text_hash FROM items WHERE persona_id = ? AND text_hash IN ({marks})"
            seen.update(row[0] for row in db.execute(sql, [persona_id, *chunk]))
        existing = db.execute("SELECT COUNT(*) FROM items WHERE persona_id = ?", [persona_id]).fetchone()[0]
        start = db.execute(
            "SELECT COALESCE(MAX(position), -1) + 1 FROM items WHERE persona_id = ?", [persona_id]
        ).fetchone()[0]
        rows = []
        for item in items:
            digest = text_hash(item.text)
            if digest in seen:
                result.skipped_duplicates += 1
                continue
            seen.add(digest)
            rows.append(
                {
                    "persona_id": persona_id,
                    "position": start + len(rows),
                    "text": item.text,
                    "text_hash": digest,
                    "title": item.title,
                    "score": item.score,
                    "date": item.date,
                    "fields": _json(item.fields),
                }
            )
        if existing + len(rows) > self.limits.max_items:
            total = existing + len(rows)
            raise PersonaDemoError(
                f"A persona can hold at most {self.limits.max_items:,} items; this would make {total:,}."
            )
        if rows:
            db["items"].insert_all(rows, batch_size=200)
            self._touch_history(db, persona_id)
        result.added += len(rows)

    def _touch_history(self, db: sqlite_utils.Database, persona_id: int) -> None:
        """The history changed: bump the revision and drop cached persona vectors."""
        db.execute(
            "UPDATE personas SET revision = revision + 1, updated = ? WHERE id = ?", [_now(), persona_id]
        )
        db.execute("DELETE FROM persona_vectors WHERE persona_id = ?", [persona_id])

    def add_items(self, persona_id: int, items: Iterable[HistoryItem | str]) -> AddResult:
        """Append items in one transaction; duplicates (same text) are skipped and counted."""
        result = AddResult()
        prepared = self._prepare(list(items), result)

        def run(db: sqlite_utils.Database) -> AddResult:
            attempt = AddResult(skipped_empty=result.skipped_empty, truncated=result.truncated)
            self._require_persona(db, persona_id)
            self._insert_items(db, persona_id, prepared, attempt)
            return attempt

        done = self._write(run)
        done.messages = _add_messages(done, self.limits.max_chars)
        return done

    def list_items(self, persona_id: int) -> list[HistoryItem]:
        def run(db: sqlite_utils.Database) -> list[dict[str, Any]]:
            self._require_persona(db, persona_id)
            return list(
                db.query("SELECT * FROM items WHERE persona_id = ? ORDER BY position, id", [persona_id])
            )

        return [_item_from_row(row) for row in self._read(run)]

    def newest_items(self, persona_id: int, count: int) -> list[HistoryItem]:
        """The last `count` items in history order (cheap at any history size: an index range scan)."""

        def run(db: sqlite_utils.Database) -> list[dict[str, Any]]:
            self._require_persona(db, persona_id)
            sql = "SELECT * FROM items WHERE persona_id = ? ORDER BY position DESC, id DESC LIMIT ?"
            return list(db.query(sql, [persona_id, count]))

        return [_item_from_row(row) for row in reversed(self._read(run))]

    def get_item(self, item_id: int) -> HistoryItem:
        rows = self._read(lambda db: list(db.query("SELECT * FROM items WHERE id = ?", [item_id])))
        if not rows:
            raise _no_item(item_id)
        return _item_from_row(rows[0])

    def update_item(self, item_id: int, text: str) -> HistoryItem:
        """Replace an item's text in place (same position); returns the stored item (maybe shortened)."""
        result = AddResult()
        prepared = self._prepare([text], result)
        if not prepared:
            raise PersonaDemoError("A history item cannot be empty; delete it instead.")
        new_text = prepared[0].text
        digest = text_hash(new_text)

        def run(db: sqlite_utils.Database) -> None:
            row = db.execute(
                "SELECT persona_id, text_hash, text, fields FROM items WHERE id = ?", [item_id]
            ).fetchone()
            if row is None:
                raise _no_item(item_id)
            persona_id, old_digest, old_text, fields_json = row
            if old_digest == digest:
                return
            clash = db.execute(
                "SELECT 1 FROM items WHERE persona_id = ? AND text_hash = ? AND id != ?",
                [persona_id, digest, item_id],
            ).fetchone()
            if clash:
                raise PersonaDemoError("This persona's history already contains that text.")
            # LaMP items keep their whole profile entry in `fields`; the copy of the text follows the edit.
            fields = {k: new_text if v == old_text else v for k, v in json.loads(fields_json).items()}
            db.execute(
                "UPDATE items SET text = ?, text_hash = ?, fields = ? WHERE id = ?",
                [new_text, digest, _json(fields), item_id],
            )
            self._touch_history(db, persona_id)

        self._write(run)
        return self.get_item(item_id)

    def delete_item(self, item_id: int) -> None:
        def run(db: sqlite_utils.Database) -> None:
            row = db.execute("SELECT persona_id FROM items WHERE id = ?", [item_id]).fetchone()
            if row is None:
                raise _no_item(item_id)
            db.execute("DELETE FROM items WHERE id = ?", [item_id])
            self._touch_history(db, row[0])

        self._write(run)

    # -------------------------------------------------------------------------------- import / export

    def export_persona(self, persona_id: int) -> dict[str, Any]:
        """A JSON-ready dict that `import_persona` (or an upload of the saved file) turns back into it."""

        def run(db: sqlite_utils.Database) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            persona = self._require_persona(db, persona_id)
            rows = list(
                db.query("SELECT * FROM items WHERE persona_id = ? ORDER BY position, id", [persona_id])
            )
            return persona, rows

        persona, rows = self._read(run)
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "name": persona["name"],
            "source": persona["source"],
            "created": persona["created"],
            "updated": persona["updated"],
            "meta": json.loads(persona["meta"]),
            "items": [
                {
                    "text": row["text"],
                    "title": row["title"],
                    "score": row["score"],
                    "date": row["date"],
                    "fields": json.loads(row["fields"]),
                }
                for row in rows
            ],
        }

    def import_persona(
        self, data: dict[str, Any], *, name: str | None = None, rename_if_exists: bool = False
    ) -> int:
        """Create a persona from `export_persona` output; keeps name, times, meta and item order."""
        parsed = persona_from_export(data, limits=self.limits)
        if name is not None:
            parsed.name = name
        validate_name(parsed.name)
        result = AddResult()
        items = self._prepare(parsed.items, result)

        def run(db: sqlite_utils.Database) -> int:
            persona_name = parsed.name
            if rename_if_exists and self._name_taken(db, persona_name):
                persona_name = self._free_name(db, persona_name, "imported")
            new_id = self._insert_persona(
                db, persona_name, parsed.source, parsed.meta, parsed.created, parsed.updated
            )
            self._insert_items(db, new_id, items, AddResult())
            db.execute("UPDATE personas SET updated = ? WHERE id = ?", [parsed.updated or _now(), new_id])
            return new_id

        return self._write(run)

    def _name_taken(self, db: sqlite_utils.Database, name: str) -> bool:
        return (
            db.execute("SELECT 1 FROM personas WHERE name_key = ?", [name_key(name)]).fetchone() is not None
        )

    def import_personas(
        self,
        personas: list[ParsedPersona],
        *,
        merge: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportResult:
        """Import many personas in ONE transaction: after a crash either all of them exist or none.

        A persona whose name exists already gets the new items (duplicates skipped) when `merge`, otherwise
        the whole import is refused. `progress(done, total)` is called after each persona.
        """
        prepared: list[tuple[ParsedPersona, list[HistoryItem], AddResult]] = []
        for persona in personas:
            validate_name(persona.name)
            counts = AddResult()
            prepared.append((persona, self._prepare(persona.items, counts), counts))

        def run(db: sqlite_utils.Database) -> ImportResult:
            result = ImportResult()
            for done, (persona, items, counts) in enumerate(prepared, start=1):
                self._import_one(db, persona, items, counts, merge, result)
                if progress is not None:
                    progress(done, len(prepared))
            return result

        return self._write(run)

    def _import_one(
        self,
        db: sqlite_utils.Database,
        persona: ParsedPersona,
        items: list[HistoryItem],
        counts: AddResult,
        merge: bool,
        result: ImportResult,
    ) -> None:
        row = db.execute("SELECT id FROM personas WHERE name_key = ?", [name_key(persona.name)]).fetchone()
        added = AddResult()
        if row is None:
            persona_id = self._insert_persona(db, persona.name, persona.source, persona.meta, persona.created)
            result.personas_added += 1
        elif merge:
            persona_id = row[0]
        else:
            raise PersonaDemoError(
                f"A persona named “{display_label(persona.name)}” already exists; nothing was imported."
            )
        self._insert_items(db, persona_id, items, added)
        if row is None and persona.updated:
            db.execute("UPDATE personas SET updated = ? WHERE id = ?", [persona.updated, persona_id])
        if row is not None and added.added:
            result.personas_updated += 1
        result.persona_ids.append(persona_id)
        result.items_added += added.added
        result.duplicates_skipped += added.skipped_duplicates
        result.empty_skipped += counts.skipped_empty
        result.truncated += counts.truncated

    def ingest_upload(
        self,
        source: str | Path | bytes,
        filename: str | None = None,
        *,
        persona_id: int | None = None,
        persona_name: str | None = None,
        text_column: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportResult:
        """Parse an upload and store it in one transaction; a failure at any step changes nothing.

        Files that describe personas (LaMP, exports, blog-style JSONL) create or extend those personas;
        other files add their items to `persona_id`, or to a new persona called `persona_name` (default:
        the file's name without extension).
        """
        parsed = parse_upload(source, filename, text_column=text_column, limits=self.limits)
        return self.store_parsed(parsed, persona_id=persona_id, persona_name=persona_name, progress=progress)

    def store_parsed(
        self,
        parsed: ParsedUpload,
        *,
        persona_id: int | None = None,
        persona_name: str | None = None,
        merge: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportResult:
        """Store what `parse_upload` returned (see `ingest_upload`); `merge` lets plain items extend a
        persona that already has `persona_name` instead of refusing."""
        if parsed.personas:
            result = self.import_personas(parsed.personas, progress=progress)
        elif persona_id is not None:
            added = self.add_items(persona_id, parsed.items)
            result = ImportResult(
                items_added=added.added,
                duplicates_skipped=added.skipped_duplicates,
                empty_skipped=added.skipped_empty,
                truncated=added.truncated,
                persona_ids=[persona_id],
            )
        else:
            name = persona_name if persona_name is not None else Path(parsed.filename).name.split(".")[0]
            persona = ParsedPersona(name=name or "upload", items=parsed.items)
            result = self.import_personas([persona], merge=merge, progress=progress)
        result.truncated += parsed.truncated
        result.messages = parsed.notices + _import_messages(result)
        return result

    # ----------------------------------------------------------------------------------------- caches

    def get_many(self, encoder_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
        """Cached embeddings for those text hashes that have one (EmbeddingCache protocol)."""
        wanted = list(dict.fromkeys(hashes))

        def run(db: sqlite_utils.Database) -> dict[str, np.ndarray]:
            found = {}
            for chunk in _chunks(wanted):
                marks = ",".join("?" * len(chunk))
                sql = (
                    "SELECT text_hash, shape, vector FROM embeddings "
                    f"WHERE encoder_id = ? AND text_hash IN ({marks})"
                )
                for digest, shape, blob in db.execute(sql, [encoder_id, *chunk]):
                    found[digest] = _vector_from_blob(shape, blob)
            return found

        return self._read(run) if wanted else {}

    def put_many(self, encoder_id: str, vectors: dict[str, np.ndarray]) -> None:
        """Store float32 embeddings (EmbeddingCache protocol); a busy database only costs the cache entry."""
        rows = []
        for digest, vector in vectors.items():
            shape, blob = _vector_blob(vector)
            rows.append({"encoder_id": encoder_id, "text_hash": digest, "shape": shape, "vector": blob})
        if not rows:
            return

        def run(db: sqlite_utils.Database) -> None:
            db["embeddings"].insert_all(rows, replace=True, batch_size=200)

        try:
            self._write(run)
        except PersonaDemoError as exc:
            log.warning("embedding cache not updated: %s", exc)

    def get_persona_vector(self, persona_id: int, plug_id: str) -> np.ndarray | None:
        """The cached persona vector for this plug, or None when absent or computed from an older history."""
        sql = """SELECT v.shape, v.vector FROM persona_vectors v JOIN personas p ON p.id = v.persona_id
                 WHERE v.persona_id = ? AND v.plug_id = ? AND v.revision = p.revision"""
        row = self._read(lambda db: db.execute(sql, [persona_id, plug_id]).fetchone())
        return None if row is None else _vector_from_blob(row[0], row[1])

    def put_persona_vector(
        self, persona_id: int, plug_id: str, vector: np.ndarray, *, revision: int | None = None
    ) -> bool:
        """Cache a persona vector; pass the `revision` it was computed from so a stale one is dropped.

        Returns False (and stores nothing) when the persona is gone or its history changed meanwhile.
        """
        shape, blob = _vector_blob(vector)

        def run(db: sqlite_utils.Database) -> bool:
            row = db.execute("SELECT revision FROM personas WHERE id = ?", [persona_id]).fetchone()
            if row is None or (revision is not None and revision != row[0]):
                return False
            db.execute(
                "INSERT OR REPLACE INTO persona_vectors "
                "(persona_id, plug_id, revision, shape, vector, created) VALUES (?, ?, ?, ?, ?, ?)",
                [persona_id, plug_id, row[0], shape, blob, _now()],
            )
            return True

        return self._write(run)

    def invalidate_persona_vectors(self, plug_id: str | None = None) -> int:
        """Drop cached persona vectors (of one plug, or all); returns how many were dropped."""
        if plug_id is None:
            return self._write(lambda db: db.execute("DELETE FROM persona_vectors").rowcount)
        return self._write(
            lambda db: db.execute("DELETE FROM persona_vectors WHERE plug_id = ?", [plug_id]).rowcount
        )

    # --------------------------------------------------------------------------------- generation log

    def log_generation(
        self,
        *,
        persona_id: int | None,
        task: str,
        prompt: str,
        output_base: str,
        output_personal: str,
        settings: dict[str, Any] | None = None,
    ) -> int:
        """Record one side-by-side generation; the persona's name is kept as it was at that time."""
        for value, what in (
            (task, "task"),
            (prompt, "prompt"),
            (output_base, "output"),
            (output_personal, "output"),
        ):
            check_storable(str(value), what)

        def run(db: sqlite_utils.Database) -> int:
            name = None
            if persona_id is not None:
                name = self._require_persona(db, persona_id)["name"]
            row = {
                "persona_id": persona_id,
                "persona_name": name,
                "task": str(task),
                "prompt": str(prompt),
                "output_base": str(output_base),
                "output_personal": str(output_personal),
                "settings": _json(settings),
                "created": _now(),
            }
            return int(db["generations"].insert(row).last_pk)

        return self._write(run)

    def list_generations(self, persona_id: int | None = None, *, limit: int = 100) -> list[Generation]:
        """Newest first; all personas when `persona_id` is None."""
        if persona_id is None:
            sql, params = "SELECT * FROM generations ORDER BY id DESC LIMIT ?", [limit]
        else:
            sql, params = (
                "SELECT * FROM generations WHERE persona_id = ? ORDER BY id DESC LIMIT ?",
                [persona_id, limit],
            )
        rows = self._read(lambda db: list(db.query(sql, params)))
        return [
            Generation(
                r["id"],
                r["persona_id"],
                r["persona_name"],
                r["task"],
                r["prompt"],
                r["output_base"],
                r["output_personal"],
                json.loads(r["settings"]),
                r["created"],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------------------------ bookkeeping

    def get_setting(self, key: str) -> str | None:
        row = self._read(lambda db: db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone())
        return None if row is None else row[0]

    def set_setting(self, key: str, value: str) -> None:
        self._write(
            lambda db: db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", [key, value])
        )

    def seed_once(self, personas: list[ParsedPersona], flag: str = "seeded") -> int:
        """Create `personas` only on a first start (no personas and never seeded); returns how many."""
        prepared = [(p, self._prepare(p.items, AddResult())) for p in personas]

        def run(db: sqlite_utils.Database) -> int:
            already = db.execute("SELECT 1 FROM settings WHERE key = ?", [flag]).fetchone()
            has_personas = db.execute("SELECT 1 FROM personas LIMIT 1").fetchone()
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", [flag, _now()])
            if already or has_personas:
                return 0
            for persona, items in prepared:
                persona_id = self._insert_persona(db, persona.name, persona.source, persona.meta)
                self._insert_items(db, persona_id, items, AddResult())
            return len(prepared)

        return self._write(run)

    def stats(self) -> dict[str, int]:
        """Row counts per table (for the UI's status line and for tests)."""
        tables = ("personas", "items", "embeddings", "persona_vectors", "generations")
        return self._read(
            lambda db: {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
        )


def _item_from_row(row: dict[str, Any]) -> HistoryItem:
    return HistoryItem(
        text=row["text"],
        title=row["title"],
        score=row["score"],
        date=row["date"],
        fields=json.loads(row["fields"]),
        id=row["id"],
        persona_id=row["persona_id"],
        position=row["position"],
    )


def _add_messages(result: AddResult, max_chars: int) -> list[str]:
    messages = [f"Added {_plural(result.added, 'item')}."]
    if result.skipped_duplicates:
        messages.append(
            f"Skipped {_plural(result.skipped_duplicates, 'duplicate')} (already in the history)."
        )
    if result.skipped_empty:
        messages.append(f"Skipped {_plural(result.skipped_empty, 'empty item')}.")
    if result.truncated:
        messages.append(
            f"Shortened {_plural(result.truncated, 'item')} to the first {max_chars:,} characters (the rest "
            "was not kept: split a long text into several items to keep all of it)."
        )
    return messages


def _import_messages(result: ImportResult) -> list[str]:
    messages = [result.summary()[0].upper() + result.summary()[1:] + "."]
    if result.empty_skipped:
        messages.append(f"Skipped {_plural(result.empty_skipped, 'empty item')}.")
    return messages
