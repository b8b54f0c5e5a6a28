"""The flywheel feedback log: every record of the store as JSON lines, for replay.

The first line is a header, `{"format": "flywheel-log", "version": 1, "exported_at":
…}`; then one object per record, grouped by type in dependency order (users,
conversations, messages, ratings, comparisons, rewrites, flags), each group in creation
(id) order. A record is `{"type": …}` followed by every column of its table, ids
included, times as ISO-8601 UTC (`2026-01-02T03:04:05.000006Z`); API key hashes are
never written. A record refers to others only by the ids of records above it.
"""

from datetime import UTC, datetime
from typing import Any

from sqlmodel import SQLModel

from feedback.formats import FormatError
from feedback.models import (
    Choice,
    Comparison,
    Conversation,
    Flag,
    FlagCategory,
    Message,
    MessageRole,
    Rating,
    Rewrite,
    Role,
    User,
)

LOG_FORMAT, LOG_VERSION = "flywheel-log", 1
MODELS: dict[str, type[SQLModel]] = {
    "user": User, "conversation": Conversation, "message": Message, "rating": Rating,
    "comparison": Comparison, "rewrite": Rewrite, "flag": Flag}
SECRET = {"api_key_hash"}
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
}
ALLOWED: dict[tuple[str, str], set[Any]] = {
    ("user", "role"): set(Role), ("message", "role"): set(MessageRole),
    ("rating", "thumb"): {-1, 1}, ("comparison", "choice"): {*Choice, None},
    ("flag", "category"): set(FlagCategory)}


def header() -> dict[str, Any]:
    return {"format": LOG_FORMAT, "version": LOG_VERSION,
            "exported_at": encode_time(datetime.now(UTC))}


def is_log_header(obj: Any) -> bool:
    """Whether a first line opens a flywheel log (checking that its version is known)."""
    if not (isinstance(obj, dict) and obj.get("format") == LOG_FORMAT):
        return False
    if obj.get("version") != LOG_VERSION:
        raise FormatError(f"unsupported {LOG_FORMAT} version {obj.get('version')!r} "
                          f"(this Flywheel reads version {LOG_VERSION})")
    return True


def to_log(kind: str, record: SQLModel) -> dict[str, Any]:
    """One store record as a log line."""
    line: dict[str, Any] = {"type": kind}
    for name in MODELS[kind].model_fields:
        if name not in SECRET:
            value = getattr(record, name)
            line[name] = encode_time(value) if isinstance(value, datetime) else value
    return line


def from_log(obj: Any) -> tuple[str, int, dict[str, Any]]:
    """A log line's type, id, and columns (checked, times parsed, ids not yet remapped)."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    if not isinstance(kind, str) or kind not in MODELS:
        raise FormatError(f"not a log record: 'type' must be one of {', '.join(MODELS)}")
    row = {}
    for name, info in MODELS[kind].model_fields.items():
        if name == "id" or name in SECRET:
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
    return kind, _check_id(obj.get("id"), "id"), row


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
