"""The flywheel log: the store's records as JSON lines, for replay (format version 2).

The first line is a header, `{"format": "flywheel-log", "version": 2, "source": "export"
or "events", "created_at": …}`. Every other line is one record: `{"type": …}` followed by
every column of its table (ids included, times as ISO-8601 UTC like
`2026-01-02T03:04:05.000006Z`; API keys' hashes and last uses are never written), or a
deletion, `{"type": …, "id": …, "deleted": true, "deleted_at": …}` (for `annotator_quality`, whose
key is `user_id`, that field instead of `id`). A record refers to others only by the ids
of records above it.

Types, in dependency order: user, conversation, message, rating, comparison, rewrite, flag
(the feedback), then reward_model, adapter, training_run, audit_event (the registry and its
history), annotator_quality (each user's agreement with the last reward model, which
weighs their votes in training) and erasure (that a user's data was erased, by whom and
how many rows: naming nobody; in an event log, all that is left of that user's records,
see `feedback.erasure`). Version 2 files written before reward models joined the
registry have no reward_model records, and read as they are. After audit_event come
review_item and training_exclusion (the operators' review queue and what they left out of
training: `feedback.queries.review`); older files have none, and their flags read as open.

A record whose (type, id) appeared earlier is a newer state of that row: ratings are
changed, comparisons decided, adapters and reward models move through their statuses. An export
(`feedback export --format log`) writes each row once, in its final state, grouped by type
in dependency order; the live event log (`feedback.eventlog`) writes every committed
insert, update and deletion as it happens. Version 1 files (exports of the seven feedback
types, each row once) read as they are.
"""

from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlmodel import SQLModel

from feedback.formats import FormatError
from feedback.models import (
    Adapter,
    AdapterStatus,
    AnnotatorQuality,
    AuditEvent,
    Choice,
    Comparison,
    Conversation,
    Erasure,
    ExclusionScope,
    Flag,
    FlagCategory,
    FlagStatus,
    Message,
    MessageRole,
    Rating,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
    RewardModelStatus,
    RewardModelVersion,
    Rewrite,
    Role,
    RunKind,
    RunStatus,
    TrainingExclusion,
    TrainingRun,
    User,
)

LOG_FORMAT, LOG_VERSION = "flywheel-log", 2
READABLE_VERSIONS = (1, 2)
MODELS: dict[str, type[SQLModel]] = {
    "user": User, "conversation": Conversation, "message": Message, "rating": Rating,
    "comparison": Comparison, "rewrite": Rewrite, "flag": Flag,
    "reward_model": RewardModelVersion, "adapter": Adapter, "training_run": TrainingRun,
    "audit_event": AuditEvent,
    "review_item": ReviewItem, "training_exclusion": TrainingExclusion,
    "annotator_quality": AnnotatorQuality, "erasure": Erasure}
FEEDBACK_TYPES = ("user", "conversation", "message", "rating", "comparison", "rewrite", "flag")
KEYS = {kind: "user_id" if kind == "annotator_quality" else "id" for kind in MODELS}
# Columns never written: an API key's hash (a secret) and its last use (how a key is used,
# not what anyone said: updated without a log record, `feedback.queries.users`).
NOT_LOGGED = {"api_key_hash", "api_key_last_used_at"}
# Fields that hold ids of other records, and the type they point to.
REFERENCES: dict[str, dict[str, str]] = {
    "user": {},
    "conversation": {"user_id": "user"},
    "message": {"conversation_id": "conversation", "parent_id": "message"},
    "rating": {"message_id": "message", "user_id": "user"},
    "comparison": {"user_id": "user", "prompt_message_id": "message",
                   "candidate_ids": "message", "ranking": "message"},
    "rewrite": {"message_id": "message", "user_id": "user"},
    "flag": {"message_id": "message", "user_id": "user"},
    "reward_model": {},
    "adapter": {},
    "training_run": {},
    "audit_event": {"actor_id": "user"},
    "review_item": {"message_id": "message", "user_id": "user", "flag_id": "flag",
                    "rating_id": "rating", "rewrite_id": "rewrite", "decided_by_id": "user"},
    "training_exclusion": {"message_id": "message", "rating_id": "rating",
                           "comparison_id": "comparison", "rewrite_id": "rewrite",
                           "flag_id": "flag", "user_id": "user",
                           "review_item_id": "review_item", "actor_id": "user"},
    "annotator_quality": {},  # its key, user_id, is a user's id
    "erasure": {},  # names nobody
}
ALLOWED: dict[tuple[str, str], set[Any]] = {
    ("user", "role"): set(Role), ("message", "role"): set(MessageRole),
    ("rating", "thumb"): {-1, 1}, ("comparison", "choice"): {*Choice, None},
    ("flag", "category"): set(FlagCategory), ("adapter", "status"): set(AdapterStatus),
    ("reward_model", "status"): set(RewardModelStatus),
    ("flag", "status"): set(FlagStatus), ("review_item", "kind"): set(ReviewKind),
    ("review_item", "status"): set(ReviewStatus),
    ("training_exclusion", "scope"): set(ExclusionScope),
    ("training_run", "kind"): set(RunKind), ("training_run", "status"): set(RunStatus)}
# The column that dates a record's state: rows that change carry the time of the change.
STATE_TIME = {"user": "created_at", "conversation": "created_at", "message": "created_at",
              "rating": "updated_at", "comparison": "updated_at", "rewrite": "created_at",
              "flag": "created_at", "reward_model": "updated_at", "adapter": "updated_at",
              "training_run": "started_at", "review_item": "created_at",
              "training_exclusion": "created_at",
              "audit_event": "created_at", "annotator_quality": "computed_at",
              "erasure": "erased_at"}


class LogRecord(NamedTuple):
    """One parsed record: its type, its key, and its columns (None for a deletion), ids as
    the log has them."""

    kind: str
    key: int
    row: dict[str, Any] | None
    time: datetime | None  # when this state began (see `STATE_TIME`), or the deletion


def header(source: str) -> dict[str, Any]:
    """The first line: `source` is "export" or "events"."""
    return {"format": LOG_FORMAT, "version": LOG_VERSION, "source": source,
            "created_at": encode_time(datetime.now(UTC))}


def is_log_header(obj: Any) -> bool:
    """Whether a first line opens a flywheel log (checking that its version is known)."""
    if not (isinstance(obj, dict) and obj.get("format") == LOG_FORMAT):
        return False
    if obj.get("version") not in READABLE_VERSIONS:
        raise FormatError(f"unsupported {LOG_FORMAT} version {obj.get('version')!r} "
                          f"(this Flywheel reads versions 1 and {LOG_VERSION})")
    return True


def to_log(kind: str, record: SQLModel) -> dict[str, Any]:
    """One store record as a log line."""
    line: dict[str, Any] = {"type": kind}
    for name in MODELS[kind].model_fields:
        if name not in NOT_LOGGED:
            value = getattr(record, name)
            line[name] = encode_time(value) if isinstance(value, datetime) else value
    return line


def deletion(kind: str, key: int, moment: datetime) -> dict[str, Any]:
    """The log line saying that a row was deleted."""
    return {"type": kind, KEYS[kind]: key, "deleted": True, "deleted_at": encode_time(moment)}


def from_log(obj: Any) -> LogRecord:
    """A log line, checked, times parsed, ids not yet remapped."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    if not isinstance(kind, str) or kind not in MODELS:
        raise FormatError(f"not a log record: 'type' must be one of {', '.join(MODELS)}")
    key = _check_id(obj.get(KEYS[kind]), KEYS[kind])
    if obj.get("deleted") is True:
        return LogRecord(kind, key, None, parse_time(obj.get("deleted_at"), "deleted_at"))
    row = {}
    for name, info in MODELS[kind].model_fields.items():
        if name == KEYS[kind] or name in NOT_LOGGED:
            continue
        if name not in obj:
            if info.is_required():
                raise FormatError(f"{kind} record is missing field '{name}'")
            continue
        value = obj[name]
        if info.annotation in (datetime, datetime | None) and value is not None:
            value = parse_time(value, name)
        allowed = ALLOWED.get((kind, name))
        if allowed is not None and (isinstance(value, bool | list | dict)
                                    or value not in allowed):
            raise FormatError(f"{kind} record has an invalid {name}: {value!r}")
        if name in REFERENCES[kind] and value is not None:
            for ref in value if isinstance(value, list) else [value]:
                _check_id(ref, name)
        row[name] = value
    return LogRecord(kind, key, row, row.get(STATE_TIME[kind]))


def _check_id(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(f"'{name}' must hold integer ids, not {value!r}")
    return value


def encode_time(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any, name: str) -> datetime:
    try:
        return utc(datetime.fromisoformat(value))
    except (TypeError, ValueError):
        raise FormatError(f"'{name}' must be an ISO-8601 time, not {value!r}") from None


def utc(moment: datetime) -> datetime:
    """Times are UTC; SQLite hands them back without a zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
