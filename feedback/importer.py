"""Import a feedback file into the store: all of it in one transaction, or none of it.

Data files (TRL preference, TRL unpaired, Anthropic HH; see `feedback.formats`) become
conversations owned by the importing user, with source "import" and the record's content
hash as external id, so importing a file again adds nothing. A preference becomes the
prompt as a chain of messages, the two answers as children of its last user message, and
a comparison of [chosen, rejected] decided "a"; an unpaired record becomes the prompt,
its answer and a thumb (+1 for a true label, -1 for a false one).

A flywheel log (`feedback.exporter`, format "log") is restored record by record: users
are matched by handle (created, without an API key, when missing), every id is remapped
to the store's own, so a log can be merged into a store that already has feedback.
Conversations the store already holds (same external id, or same owner and creation
time) are skipped with their messages and the votes on them. Restoring into an empty
store reproduces the original ids when the log's ids have no gaps.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from feedback.db import session_scope
from feedback.errors import InvalidFeedback
from feedback.formats import (
    FormatError,
    Preference,
    Progress,
    Record,
    iter_lines,
    parse_json,
    parse_record,
)
from feedback.logformat import MODELS, REFERENCES, from_log, is_log_header, utc
from feedback.models import Choice, Comparison, Conversation, Message, Rating
from feedback.queries.bulk import insert_rows
from feedback.queries.conversations import conversation_start_times, existing_external_ids
from feedback.queries.users import create_user, get_or_create_user, get_user_by_handle

BATCH = 500  # records per flush
MAX_EXAMPLES = 10  # invalid lines quoted in a report


class ImportFailed(InvalidFeedback):
    """An import that was rolled back; the message reads `FILE:LINE: reason`."""


@dataclass
class ImportReport:
    path: str
    lines: int = 0
    pairs: int = 0
    labels: int = 0
    skipped_duplicates: int = 0
    skipped_invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)  # the first few, FILE:LINE
    log: bool = False  # a flywheel log (restored) rather than a data file
    restored: dict[str, int] = field(default_factory=dict)  # a log's records, by type

    def summary(self) -> str:
        """What happened, in a line, then the first invalid lines skipped."""
        if self.log:
            done = ", ".join(_plural(n, kind) for kind, n in self.restored.items())
            head = f"restored {done or 'nothing new'}"
        else:
            head = f"imported {_plural(self.pairs, 'pair')} and {_plural(self.labels, 'label')}"
        lines = [f"{head} from {self.path} ({_plural(self.lines, 'line')}); skipped "
                 f"{_plural(self.skipped_duplicates, 'duplicate')} and "
                 f"{_plural(self.skipped_invalid, 'invalid line')}"]
        more = self.skipped_invalid - len(self.invalid_examples)
        return "\n".join(lines + self.invalid_examples + ([f"… and {more} more"] if more else []))


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def import_file(engine: Engine, path: str | Path, *, user_handle: str = "import",
                skip_invalid: bool = False, on_progress: Progress | None = None) -> ImportReport:
    """Import a data file or a flywheel log in one transaction. A bad line aborts it with
    `ImportFailed` (`FILE:LINE: reason`) unless `skip_invalid`, which skips and counts it.
    `on_progress(bytes read, file size)`."""
    path = Path(path)
    report = ImportReport(path=str(path))
    try:
        with session_scope(engine) as session:
            lines = _json_lines(path, iter_lines(path, on_progress=on_progress), report,
                                skip_invalid)
            first = next(lines, None)
            if first is not None and _is_header(path, *first):
                report.log = True
                _restore_log(session, path, lines, report, skip_invalid)
            elif first is not None:
                writer = _RecordWriter(session, user_handle, report)
                for number, obj in _chain(first, lines):
                    try:
                        writer.add(parse_record(obj))
                    except FormatError as e:
                        _invalid(e.at(path, number), report, skip_invalid)
                writer.flush()
    except FormatError as e:
        raise ImportFailed(str(e)) from None
    except InvalidFeedback as e:
        raise ImportFailed(f"{path}: {e}") from None
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise ImportFailed(f"{path}: the store refused the import: {reason}") from None
    return report


def _json_lines(path: Path, lines: Iterable[tuple[int, bytes]], report: ImportReport,
                skip_invalid: bool) -> Iterator[tuple[int, Any]]:
    for number, raw in lines:
        report.lines += 1
        try:
            yield number, parse_json(raw, first=number == 1)
        except FormatError as e:
            _invalid(e.at(path, number), report, skip_invalid)


def _chain(first: tuple[int, Any], rest: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    yield first
    yield from rest


def _invalid(error: FormatError, report: ImportReport, skip_invalid: bool) -> None:
    if not skip_invalid:
        raise error
    report.skipped_invalid += 1
    if len(report.invalid_examples) < MAX_EXAMPLES:
        report.invalid_examples.append(str(error))


def _is_header(path: Path, number: int, obj: Any) -> bool:
    try:
        return is_log_header(obj)
    except FormatError as e:  # a log of another version: nothing in it can be read
        raise e.at(path, number) from None


# -- data files ------------------------------------------------------------------------


class _RecordWriter:
    """Writes records in batches: a few flushes per batch, not a few per record."""

    def __init__(self, session: Session, user_handle: str, report: ImportReport) -> None:
        self.session, self.user_handle, self.report = session, user_handle, report
        self.user_id: int | None = None
        self.seen: set[str] = set()
        self.pending: list[Record] = []

    def add(self, record: Record) -> None:
        if record.key in self.seen:
            self.report.skipped_duplicates += 1
            return
        self.seen.add(record.key)
        self.pending.append(record)
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        records, self.pending = self.pending, []
        stored = existing_external_ids(self.session,
                                       external_ids=[record.key for record in records])
        records = [record for record in records if record.key not in stored]
        self.report.skipped_duplicates += len(stored)
        if not records:
            return
        if self.user_id is None:
            self.user_id = get_or_create_user(self.session, handle=self.user_handle).id
        conversation_ids = insert_rows(self.session, model=Conversation, rows=[
            {"user_id": self.user_id, "title": _title(record), "source": "import",
             "external_id": record.key} for record in records])
        prompt_ends, answers = self._messages(records, conversation_ids)
        comparisons, ratings = [], []
        for record, prompt_end, answer_ids in zip(records, prompt_ends, answers, strict=True):
            if isinstance(record, Preference):
                comparisons.append({"user_id": self.user_id, "prompt_message_id": prompt_end,
                                    "candidate_ids": answer_ids, "choice": Choice.a})
            else:
                ratings.append({"message_id": answer_ids[0], "user_id": self.user_id,
                                "thumb": 1 if record.label else -1})
        insert_rows(self.session, model=Comparison, rows=comparisons)
        insert_rows(self.session, model=Rating, rows=ratings)
        self.report.pairs += len(comparisons)
        self.report.labels += len(ratings)

    def _messages(self, records: list[Record],
                  conversation_ids: list[int]) -> tuple[list[int], list[list[int]]]:
        """Insert every record's thread, one INSERT per depth; returns each record's last
        prompt message and its answers."""
        prompt_ends: list[Any] = [None] * len(records)
        answers: list[list[int]] = [[] for _ in records]
        for depth in range(max(len(record.prompt) for record in records) + 1):
            rows, owners = [], []
            for i, record in enumerate(records):
                base = {"conversation_id": conversation_ids[i], "parent_id": prompt_ends[i]}
                if depth < len(record.prompt):
                    turn = record.prompt[depth]
                    rows.append({**base, "role": turn.role, "content": turn.content})
                    owners.append(i)
                elif depth == len(record.prompt):
                    for content in _answers(record):
                        rows.append({**base, "role": "assistant", "content": content})
                        owners.append(i)
            new_ids = insert_rows(self.session, model=Message, rows=rows)
            for i, message_id in zip(owners, new_ids, strict=True):
                if depth < len(records[i].prompt):
                    prompt_ends[i] = message_id
                else:
                    answers[i].append(message_id)
        return prompt_ends, answers


def _answers(record: Record) -> tuple[str, ...]:
    if isinstance(record, Preference):
        return record.chosen, record.rejected
    return (record.completion,)


def _title(record: Record) -> str:
    first_user = next(turn.content for turn in record.prompt if turn.role == "user")
    return first_user.strip().split("\n", 1)[0][:80]


# -- flywheel logs -----------------------------------------------------------------------


def _restore_log(session: Session, path: Path, lines: Iterator[tuple[int, Any]],
                 report: ImportReport, skip_invalid: bool) -> None:
    restorer = _LogRestorer(session, report)
    for number, obj in lines:
        try:
            restorer.add(*from_log(obj))
        except FormatError as e:
            _invalid(e.at(path, number), report, skip_invalid)
    restorer.flush()


class _LogRestorer:
    """Restores log records in order, remapping ids. Inserts in batches, flushing early
    when a record refers to one still waiting."""

    def __init__(self, session: Session, report: ImportReport) -> None:
        self.session, self.report = session, report
        self.ids: dict[str, dict[int, int | None]] = {kind: {} for kind in REFERENCES}
        self.pending: dict[str, dict[int, dict[str, Any]]] = {}
        self.existing_users: set[int] = set()  # users the store had before the import
        self.external_ids: set[str] = set()
        self.starts: dict[int, set[datetime]] = {}

    def add(self, kind: str, old_id: int, row: dict[str, Any]) -> None:
        if old_id in self.ids[kind] or old_id in self.pending.get(kind, {}):
            raise FormatError(f"{kind} {old_id} appears twice in the log")
        skip = False  # a record inside a conversation the store already holds
        for name, target in REFERENCES[kind].items():
            value = row.get(name)
            if value is not None:
                new = [self._new_id(target, ref) for ref in _as_list(value)]
                skip = skip or None in new
                row[name] = new if isinstance(value, list) else new[0]
        if skip:
            self.ids[kind][old_id] = None
            self.report.skipped_duplicates += 1
        elif kind == "user":
            self._user(old_id, row)
        else:
            self.pending.setdefault(kind, {})[old_id] = row
            if sum(map(len, self.pending.values())) >= BATCH:
                self.flush()

    def _new_id(self, kind: str, old_id: int) -> int | None:
        if old_id in self.pending.get(kind, {}):
            self.flush()
        if old_id not in self.ids[kind]:
            raise FormatError(f"refers to {kind} {old_id}, which is not earlier in the log")
        return self.ids[kind][old_id]

    def _user(self, old_id: int, row: dict[str, Any]) -> None:
        user = get_user_by_handle(self.session, handle=row["handle"])
        if user is None:
            user = create_user(self.session, handle=row["handle"], role=row.get("role", "user"))
            if "created_at" in row:
                user.created_at = row["created_at"]
            self._count("user")
        else:
            self.existing_users.add(user.id)
        self.ids["user"][old_id] = user.id

    def flush(self) -> None:
        self._drop_stored_conversations()
        for kind, rows in self.pending.items():
            if not rows:
                continue
            new_ids = insert_rows(self.session, model=MODELS[kind], rows=list(rows.values()))
            self.ids[kind].update(zip(rows, new_ids, strict=True))
            self._count(kind, len(rows))
        self.pending = {}

    def _drop_stored_conversations(self) -> None:
        """Skip conversations the store holds already: same external id, or (for those
        without one) same owner and creation time."""
        pending = self.pending.get("conversation", {})
        stored = existing_external_ids(self.session, external_ids=[
            row["external_id"] for row in pending.values() if row.get("external_id")])
        for old_id, row in list(pending.items()):
            external_id, user_id = row.get("external_id"), row["user_id"]
            if external_id:
                duplicate = external_id in stored or external_id in self.external_ids
                self.external_ids.add(external_id)
            else:
                duplicate = (user_id in self.existing_users and "created_at" in row
                             and row["created_at"] in self._starts(user_id))
            if duplicate:
                del pending[old_id]
                self.ids["conversation"][old_id] = None
                self.report.skipped_duplicates += 1

    def _starts(self, user_id: int) -> set[datetime]:
        if user_id not in self.starts:
            self.starts[user_id] = {utc(moment) for moment in conversation_start_times(
                self.session, user_id=user_id)}
        return self.starts[user_id]

    def _count(self, kind: str, n: int = 1) -> None:
        self.report.restored[kind] = self.report.restored.get(kind, 0) + n
        if kind == "comparison":
            self.report.pairs += n
        elif kind == "rating":
            self.report.labels += n


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
