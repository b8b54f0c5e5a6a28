"""Merging a flywheel log into a store that may already hold feedback (what
`feedback import` does with a log; see `feedback.importer`): users matched by handle,
every id remapped, conversations the store holds skipped, later states applied to the rows
restored from them, deletions done, registry (and erasure) records left out."""

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from feedback.formats import FormatError
from feedback.logformat import FEEDBACK_TYPES, MODELS, REFERENCES, LogRecord, utc
from feedback.queries.bulk import insert_rows
from feedback.queries.conversations import conversation_start_times, existing_external_ids
from feedback.queries.users import create_user, get_user_by_handle

if TYPE_CHECKING:
    from feedback.importer import ImportReport

BATCH = 500  # records per flush


class LogMerger:
    """Merges log records in order, remapping ids. Inserts in batches, flushing early
    when a record refers to one still waiting."""

    def __init__(self, session: Session, report: "ImportReport") -> None:
        self.session, self.report = session, report
        self.ids: dict[str, dict[int, int | None]] = {kind: {} for kind in FEEDBACK_TYPES}
        self.pending: dict[str, dict[int, dict[str, Any]]] = {}
        self.existing_users: set[int] = set()  # users the store had before the import
        self.external_ids: set[str] = set()
        self.starts: dict[int, set[datetime]] = {}

    def add(self, record: LogRecord) -> None:
        kind, old_id, row = record.kind, record.key, record.row
        if kind not in FEEDBACK_TYPES:
            self.report.not_imported += 1
            return
        seen = old_id in self.ids[kind] or old_id in self.pending.get(kind, {})
        if row is None:
            self._delete(kind, old_id)
            return
        skip = False  # a record inside a conversation the store already holds
        for name, target in REFERENCES[kind].items():
            value = row.get(name)
            if value is not None:
                new = [self._new_id(target, ref) for ref in _as_list(value)]
                skip = skip or None in new
                row[name] = new if isinstance(value, list) else new[0]
        if seen:
            self._update(kind, old_id, row)
        elif skip:
            self.ids[kind][old_id] = None
            self.report.skipped_duplicates += 1
        elif kind == "user":
            self._user(old_id, row)
        else:
            self.pending.setdefault(kind, {})[old_id] = row
            if sum(map(len, self.pending.values())) >= BATCH:
                self.flush()

    def _update(self, kind: str, old_id: int, row: dict[str, Any]) -> None:
        """A later state of a restored record (a user keeps the store's own)."""
        if old_id in self.pending.get(kind, {}):
            self.pending[kind][old_id] = row
        elif kind != "user" and (new_id := self.ids[kind][old_id]) is not None:
            stored = self.session.get(MODELS[kind], new_id)
            for name, value in row.items():
                setattr(stored, name, value)

    def _delete(self, kind: str, old_id: int) -> None:
        self.flush()  # what is waiting may refer to the row
        if old_id not in self.ids[kind]:
            raise FormatError(f"deletes {kind} {old_id}, which is not earlier in the log")
        if kind != "user" and (new_id := self.ids[kind][old_id]) is not None:
            self.session.delete(self.session.get(MODELS[kind], new_id))
            self.session.flush()
        self.ids[kind][old_id] = None

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
