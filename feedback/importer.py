"""Import a feedback file into the store: all of it in one transaction, or none of it.

Data files (TRL preference, TRL unpaired, Anthropic HH; see `feedback.formats`) become
conversations owned by the importing user, with source "import" and the record's content
hash as external id, so importing a file again adds nothing. A preference becomes the
prompt as a chain of messages, the two answers as children of its last user message, and
a comparison of [chosen, rejected] decided "a"; an unpaired record becomes the prompt,
its answer and a thumb (+1 for a true label, -1 for a false one).

A flywheel log (an export or an event log, `feedback.logformat`) is merged record by
record: users are matched by handle (created, without an API key, when missing), every
id is remapped to the store's own, so a log can be merged into a store that already has
feedback. Conversations the store already holds (same external id, or same owner and
creation time) are skipped with their messages and the votes on them. A later state of
a record updates the row restored from it, and a deletion deletes it. Only the feedback
is merged: the registry (adapters, reward models), training runs, annotator quality and
erasure records belong to the store that wrote the log, and are counted as not
imported (`feedback.replay` rebuilds a whole store, ids and all).
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
from feedback.logformat import from_log, is_log_header
from feedback.logmerge import LogMerger
from feedback.models import Choice, Comparison, Conversation, Message, Rating
from feedback.queries.bulk import insert_rows
from feedback.queries.conversations import existing_external_ids
from feedback.queries.users import get_or_create_user

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
    not_imported: int = 0  # a log's registry, run, annotator quality and erasure records

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
        if self.not_imported:
            lines.append(f"not imported: {_plural(self.not_imported, 'record')} of the "
                         "registry, training runs, annotator quality and erasures")
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
    merger = LogMerger(session, report)
    for number, obj in lines:
        try:
            merger.add(from_log(obj))
        except FormatError as e:
            _invalid(e.at(path, number), report, skip_invalid)
    merger.flush()
