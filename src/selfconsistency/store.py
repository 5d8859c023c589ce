"""The sample store: one SQLite file per run directory; the only module that touches sqlite.

Every path is committed the moment it exists (WAL journal, one transaction per path, or per record for
the paths of one multi-path record, `add_paths`), keyed by
(question id, temperature, path index), so a run killed at any instant loses at most the path being
generated and a rerun skips what is stored. The run's generation settings are kept with the data: a
rerun whose settings would produce different paths is refused instead of mixed in.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import stat
import tempfile
import time
from collections import namedtuple
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .runlock import RunDirError, run_lock
from .safe_files import UnsafeRunFile

STORE_FILENAME = "samples.sqlite"

# Append-only: each entry upgrades a store from the previous version.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE questions (
        id TEXT PRIMARY KEY, position INTEGER NOT NULL, question TEXT NOT NULL, gold TEXT NOT NULL
    );
    CREATE TABLE paths (
        question_id TEXT NOT NULL REFERENCES questions(id),
        temperature REAL NOT NULL,
        path_index INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        text TEXT NOT NULL,
        answer TEXT,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        finish_reason TEXT NOT NULL,
        logprob_sum REAL,
        backend TEXT NOT NULL,
        model TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (question_id, temperature, path_index)
    );
    """,
    """
    CREATE TABLE stops (
        question_id TEXT NOT NULL REFERENCES questions(id),
        temperature REAL NOT NULL,
        rule TEXT NOT NULL,
        paths_used INTEGER NOT NULL,
        paths_generated INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (question_id, temperature, rule)
    );
    """,
    """
    CREATE TABLE jobs (
        job_key TEXT PRIMARY KEY,
        backend TEXT NOT NULL,
        model TEXT NOT NULL,
        status TEXT NOT NULL,
        arn TEXT,
        input_uri TEXT NOT NULL,
        output_uri TEXT NOT NULL,
        records TEXT NOT NULL,
        manifest TEXT,
        message TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        submitted_at REAL,
        ended_at REAL
    );
    """,
    """
    CREATE TABLE record_errors (
        backend TEXT NOT NULL,
        record_id TEXT NOT NULL,
        job_key TEXT NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        retryable INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (backend, record_id, job_key)
    );
    CREATE TABLE spend (
        backend TEXT NOT NULL,
        call_group TEXT NOT NULL,
        record_id TEXT NOT NULL,
        paths INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        path_keys TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    ALTER TABLE jobs ADD COLUMN collected_paths INTEGER;
    """,
    # The provider's job id (a Bedrock job ARN, an OpenAI batch id) under a name that fits both.
    """
    ALTER TABLE jobs RENAME COLUMN arn TO job_id;
    """,
    # Gold becomes optional (a question without one is answered, not scored): SQLite cannot drop NOT NULL,
    # so the table is rebuilt. Selections: the Universal Self-Consistency pick among a question's paths.
    """
    CREATE TABLE questions_nullable_gold (
        id TEXT PRIMARY KEY, position INTEGER NOT NULL, question TEXT NOT NULL, gold TEXT
    );
    INSERT INTO questions_nullable_gold SELECT id, position, question, gold FROM questions;
    DROP TABLE questions;
    ALTER TABLE questions_nullable_gold RENAME TO questions;
    CREATE TABLE selections (
        question_id TEXT NOT NULL,
        temperature REAL NOT NULL,
        paths_used INTEGER NOT NULL,
        chosen INTEGER,
        parsed INTEGER NOT NULL,
        text TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (question_id, temperature, paths_used)
    );
    """,
    # Answers that can be written many ways (math): which rule read each path's answer, its thinking
    # (tokens; whether the path ended inside its thinking block), the question's record fields results are
    # grouped by, each question's answer classes (written form -> class key, the gold's too) and the
    # comparisons that made them (gold side, answer side, verdict; a form's own check has answer '').
    """
    ALTER TABLE paths ADD COLUMN answer_rule TEXT;
    ALTER TABLE paths ADD COLUMN thinking_tokens INTEGER;
    ALTER TABLE paths ADD COLUMN ended_thinking INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE questions ADD COLUMN groups TEXT;
    CREATE TABLE answer_classes (
        question_id TEXT NOT NULL,
        written TEXT NOT NULL,
        class TEXT NOT NULL,
        PRIMARY KEY (question_id, written)
    );
    CREATE TABLE equivalence_checks (
        gold TEXT NOT NULL,
        answer TEXT NOT NULL,
        verdict TEXT NOT NULL,
        PRIMARY KEY (gold, answer)
    );
    """,
    # A batch job's create request as planned (the provider's options beside its records: role, timeout,
    # tags...), so that a job left 'creating' by a killed process is told apart from one made with other options.
    """
    ALTER TABLE jobs ADD COLUMN request TEXT;
    """,
    # Runs imported from another tool (`selfconsistency import`): beside each path's raw text (`text`) and the
    # answer the task's extractor reads from it, the tool's own extracted answer for that path where the tool
    # records one; and each question's results as the tool gave them (JSON: lm-eval's filters, inspect_ai's
    # per-epoch scores).
    """
    ALTER TABLE paths ADD COLUMN source_answer TEXT;
    ALTER TABLE questions ADD COLUMN source TEXT;
    """,
    # The durable spend ledger of requests sent one by one (`SpendLedger`): each paid request's worst case is
    # booked before it is sent ('open'), its usage written when it returns ('answered') and the booking
    # closed in the transaction that stores its last path. A booking a killed process left is marked
    # 'killed' by the next run and counted, frozen, as spent: its worst case, or what its answer used
    # beyond the paths stored (the provider may have billed it; nothing can fetch its answer again).
    """
    CREATE TABLE bookings (
        id INTEGER PRIMARY KEY,
        backend TEXT NOT NULL,
        status TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        used_prompt INTEGER,
        used_output INTEGER,
        stored_prompt INTEGER NOT NULL DEFAULT 0,
        stored_output INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE booking_paths (
        question_id TEXT NOT NULL,
        temperature REAL NOT NULL,
        path_index INTEGER NOT NULL,
        booking_id INTEGER NOT NULL,
        PRIMARY KEY (question_id, temperature, path_index, booking_id)
    );
    """,
)


SIDE_FILES = tuple(f"{STORE_FILENAME}-{end}" for end in ("wal", "shm", "journal"))  # SQLite's, beside the store


def _writable(path: Path) -> bool:
    """Whether a store at `path` can be opened for writing (its directory too: WAL files live there)."""
    directory = path.parent
    return os.access(directory, os.W_OK | os.X_OK) and (not path.exists() or os.access(path, os.W_OK))


class NotRunDirectory(RunDirError, ValueError):
    """A reading command's run directory is a file, or has a file in its path."""


def check_existing_run_dir(run_dir: Path) -> None:
    """`run_dir` is a directory holding a sample store, or one line says what it is instead: a file
    (NotRunDirectory), nothing at all, or a directory without a store (FileNotFoundError). Checked before
    anything is opened or locked there, so that a reading command (or upgrade) makes nothing."""
    run_dir = Path(run_dir)
    try:
        mode = os.stat(run_dir).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{run_dir} is not a run directory (it does not exist)") from None
    except NotADirectoryError:
        raise NotRunDirectory(f"{run_dir} is not a run directory (a file is in its path)") from None
    if not stat.S_ISDIR(mode):
        raise NotRunDirectory(f"{run_dir} is not a run directory (a file)")
    if not os.path.lexists(run_dir / STORE_FILENAME):
        raise FileNotFoundError(f"{run_dir} is not a run directory (it holds no sample store, {STORE_FILENAME})")
    store, wal = run_dir / STORE_FILENAME, run_dir / f"{STORE_FILENAME}-wal"
    if store.is_file() and not store.is_symlink() and store.stat().st_size == 0 and not (
            wal.is_file() and wal.stat().st_size > 0):  # SQLite would read it as a new store of no version
        raise NotRunDirectory(f"{run_dir} is not a run directory ({STORE_FILENAME} is an empty file, not a sample "
                              "store)")


def _check_files(path: Path, must_exist: bool) -> None:
    """The store and its side files are regular files or absent, never links: SQLite would follow a link
    (a shared run directory's `samples.sqlite` could point at any database), and block on a FIFO."""
    for candidate in (path, *(path.with_name(name) for name in SIDE_FILES)):
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            if candidate == path and must_exist:
                raise FileNotFoundError(f"no sample store at {path}") from None
            continue
        if stat.S_ISLNK(mode):
            raise UnsafeRunFile(f"{candidate} is a symlink; the tool does not follow links in a run directory "
                                "(remove it)")
        if not stat.S_ISREG(mode):
            raise UnsafeRunFile(f"{candidate} is not a regular file (remove it)")


class StoreMismatch(Exception):
    """The run directory holds a store made with other settings."""


class StoreWriteError(OSError):
    """The file system refused a write to the store (a full disk, a file-size limit): what was committed
    before is kept."""


class StoreVersionError(ValueError):
    """The store's schema is not this version's: an older one to upgrade, or something else entirely."""


class OlderStore(StoreVersionError):
    """A store an older version wrote: `selfconsistency upgrade` migrates it; readers refuse it as it is."""


@dataclass(frozen=True)
class StoredPath:
    question_id: str
    temperature: float
    path_index: int
    seed: int
    text: str
    answer: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str
    logprob_sum: float | None
    backend: str
    model: str
    answer_rule: str | None = None  # which extraction rule read the answer (math: boxed, final_answer, answer_is)
    thinking_tokens: int | None = None  # of completion_tokens, those inside thinking blocks (None: none or unknown)
    ended_thinking: bool = False  # the path ended inside its thinking block (cut short while thinking)
    # Read back, `answer` is the answer's class (the vote's key: its most frequent written form, for types
    # with equivalence classes) and `written` the answer as the path wrote it; written, `answer` is that.
    written: str | None = field(default=None, compare=False)
    source_answer: str | None = None  # an imported path: the source tool's own extracted answer (None: none)


PathFields = namedtuple("PathFields", [f.name for f in fields(StoredPath)])  # StoredPath as a tuple


@dataclass(frozen=True)
class StoredQuestion:
    id: str
    position: int
    question: str
    gold: str | None  # None: unlabelled. Read back: the gold's answer class (see StoredPath.answer)
    groups: dict[str, str] | None = None  # record fields results are grouped by (subject, level, ...)
    written_gold: str | None = field(default=None, compare=False)  # read back: the gold as given
    source: dict[str, Any] | None = field(default=None, compare=False)  # imported: the tool's own results


@dataclass(frozen=True)
class StoredSelection:
    """A Universal Self-Consistency pick: which of the first `paths_used` paths the model chose (`chosen`,
    a path index; None when its reply named none usable), and the reply with its tokens."""

    question_id: str
    temperature: float
    paths_used: int
    chosen: int | None
    parsed: bool  # False: the reply named no candidate; `chosen` is the documented fallback
    text: str
    prompt_tokens: int
    completion_tokens: int


def counts_by_setting(groups: Iterable[tuple[str, float, int]]) -> dict[float, dict[str, int]]:
    """`SampleStore.path_groups()` as stored paths per setting (temperature) and question."""
    out: dict[float, dict[str, int]] = {}
    # grouped in the key's order, which its index gives without a sort (10x faster on 680,000 paths);
    # each setting's questions still arrive in id order
    for qid, temperature, count in groups:
        out.setdefault(temperature, {})[qid] = count
    return dict(sorted(out.items()))


def _path_fields(columns: Iterable[str]) -> list[str]:
    """`columns` as a list, each one of StoredPath's fields: they go into SQL as names, never as data."""
    columns = list(columns)
    if not set(columns) <= set(PathFields._fields):
        raise ValueError(f"not a path field: {sorted(set(columns) - set(PathFields._fields))}")
    return columns


# A path's answer as every reader gets it: its class where the question's answers have classes.
_CLASS_OF = ("COALESCE((SELECT class FROM answer_classes c WHERE c.question_id = paths.question_id "
             "AND c.written = paths.answer), paths.answer)")
_GOLD_CLASS = ("COALESCE((SELECT class FROM answer_classes c WHERE c.question_id = questions.id "
               "AND c.written = questions.gold), questions.gold)")


def _only(questions: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause keeping the paths of `questions` (None: every path), and its parameter."""
    if questions is None:
        return "", ()
    return " WHERE question_id IN (SELECT value FROM json_each(?))", (json.dumps(list(questions)),)


class SampleStore:
    """A run's store. Every open checks its files (`_check_files`) and its schema version. One writer at a
    time, under the run directory's lock: `writer(run_dir)`, used by the run itself and by the few library
    functions that change a run's state (USC selections, job commands, `upgrade`). Everything else reads
    through `open_readonly`, which never writes: a store of an older schema is refused, naming the command
    that upgrades it. (`SampleStore(run_dir)` opens for writing without the lock: tests build stores so.)"""

    def __init__(self, run_dir: Path, create: bool = True, read_only: bool = False):
        self.path = Path(run_dir) / STORE_FILENAME
        if not create:
            check_existing_run_dir(run_dir)
        _check_files(self.path, must_exist=not create)
        self._snapshot: tempfile.TemporaryDirectory | None = None
        self._ledgers: list[SpendLedger] = []
        self._live_bookings = True  # whether a stored path may close a booking (add_paths looks)
        self.read_only = read_only or (not create and not _writable(self.path))
        if self.read_only:
            self._db = self._connect_read_only()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves, one per write.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._check_version(writable=True)  # before anything is written to what may not be ours
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
            self._migrate()
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def open_readonly(cls, run_dir: Path) -> SampleStore:
        """An existing store, for reading only (reports, exports, job status): nothing is written."""
        return cls(run_dir, create=False, read_only=True)

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    def _check_version(self, writable: bool) -> None:
        """This version's schema, or an older one where the store will be upgraded (`writable`); another
        program's database, a newer version's store or (read-only) an older one are refused."""
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            foreign = version == 0 and self._db.execute(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0] > 0
        except sqlite3.OperationalError as exc:  # the file system's refusal (disk I/O, full), not the data's
            raise StoreWriteError(f"cannot open {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreVersionError(f"{self.path} is not a sample store: {exc}") from None
        if foreign:
            raise StoreVersionError(f"{self.path} is an SQLite database of some other program, not a sample store")
        if version > len(_MIGRATIONS):
            raise StoreVersionError(f"{self.path} was written by a newer version of selfconsistency; upgrade the "
                                    "package to read it")
        if version < len(_MIGRATIONS) and not writable:
            raise OlderStore(f"{self.path} was written by an older version; `selfconsistency upgrade "
                             f"{self.path.parent}` brings it to this version (reading never writes)")

    def _connect_read_only(self) -> sqlite3.Connection:
        """A store the user may not write (archived, shared, read-only mount): read as it is.

        SQLite reads a WAL database only if it can use the -shm file beside it. In a writable directory
        `mode=ro` does that; in a read-only one, a store closed cleanly has no WAL content and opens as
        `immutable`, while one left with WAL content (a killed run) is read from a private copy, so that
        no stored path is missed."""
        wal = self.path.with_name(self.path.name + "-wal")
        source = self.path
        options = "mode=ro"
        if not os.access(self.path.parent, os.W_OK):
            if wal.exists() and wal.stat().st_size > 0:
                self._snapshot = tempfile.TemporaryDirectory(prefix="selfconsistency-store-")
                source = Path(self._snapshot.name) / self.path.name
                shutil.copyfile(self.path, source)
                shutil.copyfile(wal, source.with_name(source.name + "-wal"))
            else:
                options = "immutable=1"
        self._db = sqlite3.connect(f"{source.resolve().as_uri()}?{options}", uri=True, isolation_level=None)
        try:
            self._check_version(writable=False)
        except BaseException:
            self.close()
            raise
        return self._db

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            self._db.execute("BEGIN IMMEDIATE")
            for statement in filter(str.strip, script.split(";")):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {number}")
            self._db.execute("COMMIT")

    def close(self) -> None:
        for ledger in self._ledgers:
            ledger.close()
        self._db.close()
        if self._snapshot is not None:
            self._snapshot.cleanup()

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- run settings ----------------------------------------------------------------------------

    def bind_config(self, identity: dict[str, Any], config: dict[str, Any]) -> None:
        """Record the run's settings, or check them against those already recorded.

        `identity` holds what determines a path's text; a mismatch there is refused. `config` is the
        latest full configuration (paths, temperatures, limits may grow between invocations).
        """
        stored = self.get_meta("identity")
        if stored is not None and stored != identity and self._holds_nothing_generated():
            # Settings recorded by a run that generated nothing (a typo stopped it): nothing to mix up.
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM stops")
            self._db.execute("DELETE FROM questions")
            self._db.execute("COMMIT")
            stored = None
        if stored is not None and stored != identity:
            raise self._mismatch(stored, identity)
        self._db.execute("BEGIN IMMEDIATE")
        self._put_meta("identity", identity)
        self._put_meta("config", config)
        if self.get_meta("run_nonce") is None:
            self._put_meta("run_nonce", secrets.token_hex(8))
        self._db.execute("COMMIT")

    def check_identity(self, identity: dict[str, Any]) -> None:
        """What `bind_config` would refuse, read only: StoreMismatch when the store holds paths generated
        under another `identity` (`run --dry-run` and the checks before a run's directory is touched)."""
        stored = self.get_meta("identity")
        if stored is not None and stored != identity and not self._holds_nothing_generated():
            raise self._mismatch(stored, identity)

    def _mismatch(self, stored: dict[str, Any], identity: dict[str, Any]) -> StoreMismatch:
        changed = sorted(k for k in identity.keys() | stored.keys() if identity.get(k) != stored.get(k))
        return StoreMismatch(f"{self.path.parent} holds a run made with different settings ({', '.join(changed)}); "
                             "use another --run-dir or the original settings")

    def record_import(self, source: dict[str, Any]) -> None:
        """Where an imported run's paths came from: the tool, file, what it ran and what the import assumed."""
        self._db.execute("BEGIN IMMEDIATE")
        self._put_meta("import", source)
        self._db.execute("COMMIT")

    def run_nonce(self) -> str:
        """Random, fixed for this store's life: what tells two run directories with the same settings apart
        (their batch jobs must never be one and the same)."""
        return self.get_meta("run_nonce") or ""

    def settings(self):
        """The run's settings as it recorded them (`settings.RunSettings`)."""
        from .settings import RunSettings

        stored = self.get_meta("config")
        if stored is None:
            raise ValueError(f"{self.path} holds no run")
        return RunSettings.from_stored(stored)

    def _holds_nothing_generated(self) -> bool:
        return not any(self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in ("paths", "jobs"))

    def _put_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                         (key, json.dumps(value, sort_keys=True)))

    def get_meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    # -- questions -------------------------------------------------------------------------------

    def add_questions(self, questions: Iterable[StoredQuestion]) -> None:
        """Insert new questions; a known id whose text or gold changed is refused."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for q in questions:
                row = self._db.execute("SELECT question, gold FROM questions WHERE id = ?", (q.id,)).fetchone()
                if row is None:
                    self._db.execute("INSERT INTO questions (id, position, question, gold, groups, source) VALUES "
                                     "(?, ?, ?, ?, ?, ?)", (q.id, q.position, q.question, q.gold,
                                                            json.dumps(q.groups, sort_keys=True) if q.groups else None,
                                                            json.dumps(q.source) if q.source is not None else None))
                elif tuple(row) != (q.question, q.gold):
                    raise StoreMismatch(f"question {q.id} in {self.path.parent} has other text or gold "
                                        "than the data given now; use another --run-dir")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def set_selection(self, question_ids: list[str], neutralised: dict[str, list[str]] | None = None) -> None:
        """The questions the latest invocation asked for (what the report covers), and which input records
        had prompt-forging text neutralised."""
        self._db.execute("BEGIN IMMEDIATE")
        self._put_meta("selection", question_ids)
        self._put_meta("neutralised", neutralised or {})
        self._db.execute("COMMIT")

    def questions(self) -> list[StoredQuestion]:
        """Every question, its gold read as its answer class (`written_gold`: as given)."""
        gold = _GOLD_CLASS if self.has_answer_classes() else "gold"
        rows = self._db.execute(f"SELECT id, position, question, {gold}, groups, gold, source FROM questions "
                                "ORDER BY position, id")
        return [StoredQuestion(qid, position, text, gold, json.loads(groups) if groups else None, written,
                               json.loads(source) if source else None)
                for qid, position, text, gold, groups, written, source in rows]

    # -- answer classes (answer types whose answers are written many ways) ------------------------

    def has_answer_classes(self) -> bool:
        """Whether the run's answers have classes (an answer type with equivalence, such as math)."""
        return self._db.execute("SELECT 1 FROM answer_classes LIMIT 1").fetchone() is not None

    def _columns_sql(self, columns: list[str]) -> str:
        """The SELECT list of `columns` (path fields): `answer` as its class, `written` as stored."""
        answer = _CLASS_OF if self.has_answer_classes() else "paths.answer"
        sql = {"answer": f"{answer} AS answer", "written": "paths.answer AS written"}
        return ", ".join(sql.get(column, f"paths.{column}") for column in columns)

    def written_answers(self, question_id: str) -> dict[str, int]:
        """A question's written answers (every temperature) and how many paths wrote each."""
        return dict(self._db.execute("SELECT answer, count(*) FROM paths WHERE question_id = ? AND answer IS NOT "
                                     "NULL GROUP BY answer", (question_id,)).fetchall())

    def set_answer_classes(self, question_id: str, classes: dict[str, str]) -> None:
        """A question's answer classes (written form -> class key), replacing those it had."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("DELETE FROM answer_classes WHERE question_id = ?", (question_id,))
        self._db.executemany("INSERT INTO answer_classes VALUES (?, ?, ?)",
                             [(question_id, written, key) for written, key in classes.items()])
        self._db.execute("COMMIT")

    def answer_classes(self) -> dict[str, dict[str, str]]:
        """question id -> {written form -> class key}."""
        out: dict[str, dict[str, str]] = {}
        for qid, written, key in self._db.execute("SELECT question_id, written, class FROM answer_classes"):
            out.setdefault(qid, {})[written] = key
        return out

    def equivalence_checks(self) -> dict[tuple[str, str], str]:
        """(gold side, answer side) -> verdict of every comparison made; a form's own check has answer ''."""
        return {(gold, answer): verdict for gold, answer, verdict in
                self._db.execute("SELECT gold, answer, verdict FROM equivalence_checks")}

    def add_equivalence_checks(self, checks: dict[tuple[str, str], str]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("INSERT OR IGNORE INTO equivalence_checks VALUES (?, ?, ?)",
                             [(gold, answer, verdict) for (gold, answer), verdict in checks.items()])
        self._db.execute("COMMIT")

    # -- paths -----------------------------------------------------------------------------------

    def add_path(self, path: StoredPath) -> bool:
        """Store one path in its own transaction (the booking of the request that bought it closed in it);
        False if that key was already stored."""
        if not self._db.in_transaction:
            return self.add_paths((path,)) == 1
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO paths (question_id, temperature, path_index, seed, text, answer, prompt_tokens, "
            "completion_tokens, latency_s, finish_reason, logprob_sum, backend, model, created_at, answer_rule, "
            "thinking_tokens, ended_thinking, source_answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?)",
            (path.question_id, path.temperature, path.path_index, path.seed, path.text, path.answer,
             path.prompt_tokens, path.completion_tokens, path.latency_s, path.finish_reason,
             path.logprob_sum, path.backend, path.model, time.time(), path.answer_rule, path.thinking_tokens,
             int(path.ended_thinking), path.source_answer))
        added = cursor.rowcount == 1
        if added and self._live_bookings:
            self._settle_bookings(path)
        return added

    def add_paths(self, paths: Iterable[StoredPath]) -> int:
        """Store paths in one transaction (a record's paths: all or none survive a kill), closing the
        bookings of the requests that bought them in the same transaction; how many were new."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._live_bookings = self._db.execute(
                "SELECT EXISTS (SELECT 1 FROM bookings WHERE status != 'killed')").fetchone()[0]
            added = sum(self.add_path(path) for path in paths)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return added

    def record_stop(self, question_id: str, temperature: float, rule: str, paths_used: int,
                    paths_generated: int, reason: str) -> None:
        """Why and when a question stopped getting paths under an adaptive rule."""
        self._db.execute("INSERT OR IGNORE INTO stops VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (question_id, temperature, rule, paths_used, paths_generated, reason, time.time()))

    def stops(self, rule: str) -> dict[tuple[str, float], tuple[int, int, str]]:
        """(question id, temperature) -> (paths used, paths generated, reason) under `rule`."""
        rows = self._db.execute("SELECT question_id, temperature, paths_used, paths_generated, reason "
                                "FROM stops WHERE rule = ?", (rule,))
        return {(qid, t): (used, generated, reason) for qid, t, used, generated, reason in rows}

    def budget_plan(self) -> dict[str, Any] | None:
        """The budget plan this run directory's budgeted runs replay (waves.py)."""
        return self.get_meta("budget_plan")

    def record_budget_plan(self, plan: dict[str, Any]) -> None:
        self._put_meta("budget_plan", plan)

    def budget_total(self, name: str) -> int | None:
        """The paths a --max-cost budget came to (per temperature), fixed once its first wave was measured."""
        return (self.get_meta("budget_totals") or {}).get(name)

    def record_budget_total(self, name: str, total: int) -> None:
        self._put_meta("budget_totals", {**(self.get_meta("budget_totals") or {}), name: total})

    def answers_in_order(self) -> dict[tuple[str, float], list[str | None]]:
        """(question id, temperature) -> answers of paths 0, 1, ... up to the first missing index."""
        out: dict[tuple[str, float], list[str | None]] = {}
        rows = self._db.execute(f"SELECT question_id, temperature, path_index, {self._columns_sql(['answer'])} "
                                "FROM paths ORDER BY question_id, temperature, path_index")
        for qid, temperature, index, answer in rows:
            answers = out.setdefault((qid, temperature), [])
            if index == len(answers):
                answers.append(answer)
        return out

    def record_selection(self, selection: StoredSelection) -> None:
        self._db.execute("INSERT OR REPLACE INTO selections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (selection.question_id, selection.temperature, selection.paths_used, selection.chosen,
                          int(selection.parsed), selection.text, selection.prompt_tokens,
                          selection.completion_tokens, time.time()))

    def selections(self) -> dict[tuple[str, float, int], StoredSelection]:
        """(question id, temperature, paths used) -> the USC pick made over those paths."""
        rows = self._db.execute("SELECT question_id, temperature, paths_used, chosen, parsed, text, prompt_tokens, "
                                "completion_tokens FROM selections")
        return {(row[0], row[1], row[2]): StoredSelection(*row[:4], bool(row[4]), *row[5:]) for row in rows}

    def tokens_used(self) -> tuple[int, int]:
        """(prompt, completion) tokens of every stored path and USC request, and of every request whose
        booking is unsettled (`unsettled`): what a budget has already spent."""
        prompt, completion = self._db.execute(
            "SELECT (SELECT COALESCE(SUM(prompt_tokens), 0) FROM paths) + "
            "(SELECT COALESCE(SUM(prompt_tokens), 0) FROM selections), "
            "(SELECT COALESCE(SUM(completion_tokens), 0) FROM paths) + "
            "(SELECT COALESCE(SUM(completion_tokens), 0) FROM selections)").fetchone()
        unsettled = self.unsettled()
        return int(prompt) + unsettled.prompt_tokens, int(completion) + unsettled.output_tokens

    # -- the durable spend ledger of requests sent one by one (bookings) -----------------------------

    def ledger(self, backend: str) -> SpendLedger:
        """Where `backend` books each paid request before sending it (`SpendLedger`, usable from any
        thread); closed with the store."""
        if self.read_only:
            raise ValueError(f"{self.path} is open for reading only: it takes no bookings")
        ledger = SpendLedger(self.path, backend)
        self._ledgers.append(ledger)
        return ledger

    def mark_killed_bookings(self) -> Unsettled:
        """Bookings no request will settle any more, marked 'killed' (their amount frozen): those a killed
        process left. Called by a run before its backend starts (the run directory's lock is held, so no
        other process is sending); what was newly marked."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            found = self.unsettled("status != 'killed'")
            self._db.execute("DELETE FROM booking_paths WHERE booking_id IN "
                             "(SELECT id FROM bookings WHERE status != 'killed')")
            self._db.execute("UPDATE bookings SET status = 'killed' WHERE status != 'killed'")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return found

    def unsettled(self, where: str = "1") -> Unsettled:
        """Requests booked and not settled by a stored path, and the tokens they count as spent: a request
        never answered at its worst case (booked prompt + every path at max_tokens), one answered at what it
        used beyond the tokens of its paths that were stored."""
        count, prompt, output = self._db.execute(
            "SELECT COUNT(*), "
            "COALESCE(SUM(CASE WHEN used_prompt IS NULL THEN prompt_tokens "
            "ELSE MAX(0, used_prompt - stored_prompt) END), 0), "
            "COALESCE(SUM(CASE WHEN used_output IS NULL THEN output_tokens "
            f"ELSE MAX(0, used_output - stored_output) END), 0) FROM bookings WHERE {where}").fetchone()
        unanswered = self._db.execute(f"SELECT COUNT(*) FROM bookings WHERE used_prompt IS NULL AND {where}"
                                      ).fetchone()[0]
        return Unsettled(int(count), int(unanswered), int(prompt), int(output))

    def _settle_bookings(self, path: StoredPath) -> None:
        """Inside the transaction storing `path`: its tokens counted against the live bookings of the request
        that bought it, and a booking whose every path is stored closed (its usage is the paths')."""
        key = (path.question_id, path.temperature, path.path_index)
        live = ("SELECT booking_id FROM booking_paths WHERE question_id = ? AND temperature = ? AND path_index = ? "
                "AND booking_id IN (SELECT id FROM bookings WHERE status != 'killed')")
        self._db.execute(f"UPDATE bookings SET stored_prompt = stored_prompt + ?, stored_output = stored_output + ? "
                         f"WHERE id IN ({live})", (path.prompt_tokens, path.completion_tokens, *key))
        self._db.execute(f"DELETE FROM booking_paths WHERE question_id = ? AND temperature = ? AND path_index = ? "
                         f"AND booking_id IN ({live})", (*key, *key))
        self._db.execute("DELETE FROM bookings WHERE status = 'answered' AND NOT EXISTS "
                         "(SELECT 1 FROM booking_paths WHERE booking_id = bookings.id)")

    def output_tokens_per_path(self) -> tuple[float, int] | None:
        """(mean completion tokens, paths) of the stored paths; None before any."""
        mean, count = self._db.execute("SELECT AVG(completion_tokens), COUNT(*) FROM paths").fetchone()
        return (float(mean), int(count)) if count else None

    def prompt_tokens_per_request(self) -> tuple[float, int] | None:
        """(mean prompt tokens, requests) of the stored paths: a request's prompt is counted on its first path."""
        mean, count = self._db.execute("SELECT AVG(prompt_tokens), COUNT(*) FROM paths WHERE prompt_tokens > 0"
                                       ).fetchone()
        return (float(mean), int(count)) if count else None

    # -- batch jobs (state saved before and after every API call) -------------------------------

    def put_job(self, job_key: str, backend: str, model: str, input_uri: str, output_uri: str,
                records: dict[str, list[list]], request: dict[str, Any] | None = None) -> None:
        now = time.time()
        self._db.execute("INSERT OR IGNORE INTO jobs (job_key, backend, model, status, input_uri, output_uri, "
                         "records, created_at, updated_at, request) VALUES (?, ?, ?, 'planned', ?, ?, ?, ?, ?, ?)",
                         (job_key, backend, model, input_uri, output_uri, json.dumps(records), now, now,
                          None if request is None else json.dumps(request, sort_keys=True)))

    def update_job(self, job_key: str, **fields: Any) -> None:
        allowed = {"status", "job_id", "manifest", "message", "submitted_at", "ended_at", "collected_paths", "request"}
        if not set(fields) <= allowed:
            raise ValueError(f"unknown job fields {set(fields) - allowed}")
        for name in ("manifest", "request"):
            if fields.get(name) is not None:
                fields[name] = json.dumps(fields[name], sort_keys=True)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(f"UPDATE jobs SET {assignments}, updated_at = ? WHERE job_key = ?",
                         (*fields.values(), time.time(), job_key))

    def jobs(self, backend: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM jobs" + (" WHERE backend = ?" if backend else "") + " ORDER BY created_at, job_key"
        cursor = self._db.execute(query, (backend,) if backend else ())
        names = [d[0] for d in cursor.description]
        out = []
        for row in cursor:
            job = dict(zip(names, row, strict=True))
            job["records"] = json.loads(job["records"])
            job["manifest"] = json.loads(job["manifest"]) if job["manifest"] else None
            job["request"] = json.loads(job["request"]) if job["request"] else None
            out.append(job)
        return out

    def uncollected_paths(self) -> set[tuple[str, float, int]]:
        """(question id, temperature, path index) of every path a batch job not yet collected stands for
        (sent, or perhaps sent, and not forgotten): answers the run may have paid for, to be stored whatever
        today's plan asks."""
        return {(qid, temperature, index) for (records,) in self._db.execute(
                    "SELECT records FROM jobs WHERE status NOT IN ('collected', 'planned') "
                    "AND (message IS NULL OR message NOT LIKE 'forgotten:%')")
                for paths in json.loads(records).values() for qid, temperature, index in paths}

    def priced_as(self) -> dict[str, str] | None:
        """What the run's calls were priced as ({"model": ..., "how": ...}), when its backend resolved a model
        the run's own model id does not name (an application inference profile)."""
        return self.get_meta("priced_as")

    def set_priced_as(self, model: str, how: str) -> None:
        self._put_meta("priced_as", {"model": model, "how": how})

    # -- per-record errors and the spend ledger of batch runs ---------------------------------------

    def add_record_errors(self, backend: str, job_key: str, errors: dict[str, tuple[str, str, bool]]) -> None:
        """record id -> (code, message, retryable), as a job reported them."""
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("INSERT OR REPLACE INTO record_errors VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(backend, rid, job_key, code, message, int(retryable), now)
                              for rid, (code, message, retryable) in errors.items()])
        self._db.execute("COMMIT")

    def record_errors(self, backend: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM record_errors" + (" WHERE backend = ?" if backend else "") + " ORDER BY created_at"
        cursor = self._db.execute(query, (backend,) if backend else ())
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def clear_record_errors(self, code: str) -> int:
        """Forget errors of one code (e.g. the records a stop left unwanted, when the user resubmits)."""
        return self._db.execute("DELETE FROM record_errors WHERE code = ?", (code,)).rowcount

    def add_spend(self, backend: str, call_group: str, record_id: str, path_keys: list[tuple[str, float, int]],
                  input_tokens: int, output_tokens: int) -> None:
        """What one on-demand call was billed (the provider's counts where it gave them), and for which paths."""
        self._db.execute("INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (backend, call_group, record_id, len(path_keys), input_tokens, output_tokens,
                          json.dumps(path_keys), time.time()))

    def on_demand_keys(self) -> set[tuple[str, float, int]]:
        """(question id, temperature, path index) of the paths a batch run made on demand."""
        return {tuple(key) for (keys,) in self._db.execute("SELECT path_keys FROM spend")
                for key in json.loads(keys)}

    def spend(self, backend: str | None = None) -> list[dict[str, Any]]:
        """On-demand spend per call group: records, paths and tokens."""
        where = " WHERE backend = ?" if backend else ""
        cursor = self._db.execute(
            "SELECT backend, call_group, count(*), sum(paths), sum(input_tokens), sum(output_tokens), "
            f"min(created_at) FROM spend{where} GROUP BY backend, call_group ORDER BY min(created_at)",
            (backend,) if backend else ())
        return [dict(zip(("backend", "group", "records", "paths", "input_tokens", "output_tokens", "started_at"),
                         row, strict=True)) for row in cursor]

    def stored_keys(self) -> set[tuple[str, float, int]]:
        return set(self._db.execute("SELECT question_id, temperature, path_index FROM paths"))

    def path_counts(self) -> dict[float, dict[str, int]]:
        """Stored paths per setting (temperature) and question; each setting's questions in id order, the
        order `path_columns` returns their rows in."""
        return counts_by_setting(self.path_groups())

    def path_columns(self, temperature: float, columns: Iterable[str]) -> tuple[tuple[Any, ...], ...]:
        """Some of StoredPath's fields for one setting's paths, one tuple per field, rows in (question id,
        path index) order: what an analysis of 680,000 paths needs, without a Python object per path."""
        columns = _path_fields(columns)
        rows = self._db.execute(f"SELECT {self._columns_sql(columns)} FROM paths WHERE temperature = ? "
                                "ORDER BY question_id, path_index", (temperature,)).fetchall()
        return tuple(zip(*rows, strict=True)) if rows else tuple(() for _ in columns)

    def path_rows(self, columns: Iterable[str], questions: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
        """Some of StoredPath's fields of every stored path (of `questions` only, if given), one tuple per
        path, in key order."""
        columns = _path_fields(columns)
        where, parameters = _only(questions)
        return self._db.execute(f"SELECT {self._columns_sql(columns)} FROM paths{where} "
                                "ORDER BY question_id, temperature, path_index", parameters).fetchall()

    def path_groups(self, questions: Sequence[str] | None = None) -> list[tuple[str, float, int]]:
        """(question id, temperature, stored paths) in key order (of `questions` only, if given): the runs
        of `path_rows` each group holds."""
        where, parameters = _only(questions)
        return self._db.execute(f"SELECT question_id, temperature, count(*) FROM paths{where} "
                                "GROUP BY question_id, temperature ORDER BY question_id, temperature",
                                parameters).fetchall()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """The reads inside see one state of the store, whatever a run commits meanwhile: a report's
        counts and the rows they index must describe the same paths."""
        if self._db.in_transaction:  # already inside one
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            try:
                self._db.execute("COMMIT")
            except sqlite3.ProgrammingError:  # closed first (Ctrl-C between the two): nothing left to end
                pass

    def paths(self, text: bool = True) -> Iterator[StoredPath]:
        """Every stored path in key order; `text=False` leaves the texts unread ("" each), which is most of
        the bytes of a large store and what the analyses do not need."""
        columns = self._columns_sql(list(PathFields._fields)).replace("paths.text", "paths.text" if text else "''")
        rows = self._db.execute(f"SELECT {columns} FROM paths ORDER BY question_id, temperature, path_index")
        # Without text, plain tuples with StoredPath's fields: building 680,000 frozen dataclasses is
        # most of a large report's reading time.
        return (_stored_path(row) for row in rows) if text else map(PathFields._make, rows)


@dataclass(frozen=True)
class Unsettled:
    """Requests booked and not settled by a stored path, and what they count as spent."""

    requests: int
    unanswered: int  # of them, never answered: counted at their worst case
    prompt_tokens: int
    output_tokens: int


class SpendLedger:
    """A run's bookings of paid requests, written by a backend's worker threads as they send: `book` before
    a request is sent, `answered` when it returns with its usage, `cancel` when it failed unbilled. Its own
    connection to the run's store (the run's writer holds the directory's lock), shared by the threads under
    a lock, each write its own transaction; the path's transaction closes the booking (`add_paths`)."""

    def __init__(self, path: Path, backend: str):
        import threading

        self.backend = backend
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()

    def _write(self, write: Any) -> Any:
        """`write(connection)` in one transaction of its own, under the ledger's lock; what it returns."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                out = write(self._db)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):  # closed under a straggling thread: nothing to undo
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                raise StoreWriteError(f"cannot write the spend ledger of the run's store: {exc}") from None
            return out

    def book(self, keys: Sequence[tuple[str, float, int]], prompt_tokens: int, output_tokens: int) -> int:
        """A request for the paths `keys`, booked at its worst case before it is sent; its booking id."""
        def write(db: sqlite3.Connection) -> int:
            booking = db.execute("INSERT INTO bookings (backend, status, prompt_tokens, output_tokens, created_at) "
                                 "VALUES (?, 'open', ?, ?, ?)",
                                 (self.backend, prompt_tokens, output_tokens, time.time())).lastrowid
            db.executemany("INSERT OR IGNORE INTO booking_paths VALUES (?, ?, ?, ?)",
                           [(*key, booking) for key in keys])
            return booking

        return self._write(write)

    def answered(self, booking: int, prompt_tokens: int, output_tokens: int) -> None:
        """The request returned, using so many tokens: counted so until its paths are stored."""
        self._write(lambda db: db.execute("UPDATE bookings SET status = 'answered', used_prompt = ?, used_output = ? "
                                          "WHERE id = ? AND status = 'open'", (prompt_tokens, output_tokens, booking)))

    def cancel(self, booking: int) -> None:
        """The request failed and was not billed: its booking goes."""
        def write(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM booking_paths WHERE booking_id = ?", (booking,))
            db.execute("DELETE FROM bookings WHERE id = ? AND status = 'open'", (booking,))

        self._write(write)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _stored_path(row: tuple[Any, ...]) -> StoredPath:
    *head, ended, written, source_answer = row  # SQLite keeps the flag as 0/1
    return StoredPath(*head, bool(ended), written, source_answer)


@contextmanager
def writer(run_dir: Path, create: bool = False) -> Iterator[SampleStore]:
    """The run directory's store opened for writing under its run lock: the one way the tool writes a
    store (`create`: a new run's; else it must exist). Another process holding the lock is refused."""
    if not create:  # before the lock: nothing is made where there is no store
        check_existing_run_dir(run_dir)
    with run_lock(run_dir), SampleStore(run_dir, create=create) as store:
        try:
            yield store
        except sqlite3.OperationalError as exc:  # SQLITE_FULL, SQLITE_IOERR: the disk, not the data
            raise StoreWriteError(f"cannot write {store.path}: {exc}") from None
