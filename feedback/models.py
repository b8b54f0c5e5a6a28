"""The feedback store's tables: one SQLModel family per table (DESIGN §3).

Enumerated columns (roles, statuses, choices) are stored as short strings so that
migrations stay portable between SQLite and PostgreSQL; the allowed values live in the
`StrEnum`s below and the query functions check them. Timestamps are timezone-aware UTC
on both databases, and a nullable JSON column holds SQL NULL (not JSON `null`) for `None`.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Index,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that reads back aware UTC datetimes everywhere (SQLite
    drops the offset; PostgreSQL answers in the session's time zone). Naive means UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else _as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else _as_utc(value)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _timestamp(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kw)


def _json(*, nullable: bool = False, default: Any = None) -> Any:
    if nullable:  # plain JSON would store None as the JSON text 'null', which IS NOT NULL
        return Field(default=None, sa_type=JSON(none_as_null=True), nullable=True)
    return Field(default_factory=default, sa_type=JSON, nullable=False)


class Role(StrEnum):
    user = "user"
    operator = "operator"
    admin = "admin"
    judge = "judge"  # an AI annotator: votes on any answer; its votes are AI feedback


class MessageRole(StrEnum):
    system = "system"
    user = "user"
    assistant = "assistant"


class Choice(StrEnum):
    a = "a"
    b = "b"
    tie = "tie"
    both_bad = "both_bad"


class FlagCategory(StrEnum):
    harmful = "harmful"
    hateful = "hateful"
    sexual = "sexual"
    violent = "violent"
    self_harm = "self_harm"
    misinformation = "misinformation"
    privacy = "privacy"
    other = "other"


class FlagStatus(StrEnum):
    open = "open"  # not reviewed yet
    resolved = "resolved"  # an operator agreed and acted on it
    dismissed = "dismissed"  # an operator found nothing in it: no longer a bad label


class ReviewKind(StrEnum):
    flag = "flag"
    thumbs_down = "thumbs_down"  # a thumbs-down with a comment
    rewrite = "rewrite"
    disagreement = "disagreement"  # users voted the same item opposite ways


class ReviewStatus(StrEnum):
    open = "open"
    accepted = "accepted"
    dismissed = "dismissed"
    excluded = "excluded"
    redacted = "redacted"


class ExclusionScope(StrEnum):
    message = "message"  # every vote on one message
    rating = "rating"
    comparison = "comparison"
    rewrite = "rewrite"
    flag = "flag"
    user = "user"  # every vote of one user, later ones included


class AdapterStatus(StrEnum):
    training = "training"
    candidate = "candidate"
    approved = "approved"
    live = "live"
    retired = "retired"
    rejected = "rejected"
    failed = "failed"


class RewardModelStatus(StrEnum):
    current = "current"  # the one the loop trains and evaluates with (at most one)
    retired = "retired"  # was current; a newer one replaced it
    rejected = "rejected"  # worse than the current one on the held-out split when trained


class RunKind(StrEnum):
    reward = "reward"
    ppo = "ppo"
    dpo = "dpo"  # `flywheel train dpo`
    eval = "eval"
    cycle = "cycle"


class RunStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


# -- people and conversations -------------------------------------------------------


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    handle: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(default=Role.user, max_length=16)
    api_key_hash: str | None = Field(default=None, max_length=64, unique=True, index=True)
    created_at: datetime = _timestamp()
    # The API key's life: refused after `api_key_expires_at` (None: never expires);
    # `api_key_last_used_at` is updated at most once a minute (`feedback.queries.users`);
    # a revoked key leaves `api_key_hash` empty and the time it was revoked.
    api_key_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    api_key_last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    api_key_revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Conversation(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", ondelete="CASCADE", index=True)
    title: str = Field(default="", max_length=200)
    # Where it came from: "chat", "api", "import", "simulated".
    source: str = Field(default="chat", max_length=16)
    # A stable key for imported records, so importing a file twice adds nothing.
    external_id: str | None = Field(default=None, max_length=64, unique=True)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class Message(SQLModel, table=True):
    """One turn. Messages form a tree through `parent_id` (side-by-side answers and
    regenerations are siblings). Assistant messages record how they were produced."""

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", ondelete="CASCADE", index=True)
    parent_id: int | None = Field(default=None, foreign_key="message.id", ondelete="CASCADE")
    role: str = Field(max_length=16)
    content: str = Field(sa_type=Text)
    created_at: datetime = _timestamp()
    adapter_version: str | None = Field(default=None, max_length=64)
    sampling: dict[str, Any] | None = _json(nullable=True)
    seed: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = Field(default=None, max_length=16)
    latency_ms: float | None = None


# -- votes ---------------------------------------------------------------------------


class Rating(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("message_id", "user_id"),
        CheckConstraint("thumb IN (-1, 1)", name="thumb_is_up_or_down"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", ondelete="CASCADE", index=True)
    user_id: int = Field(foreign_key="user.id", ondelete="CASCADE", index=True)
    thumb: int
    reasons: list[str] = _json(default=list)
    comment: str = Field(default="", sa_type=Text)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class Comparison(SQLModel, table=True):
    """A side-by-side battle: the answers shown for one prompt, in display order
    (`candidate_ids[0]` is A), and the user's verdict: a `choice` for two answers, or a
    `ranking` (message ids, best first) for k answers. Both are empty until the user
    votes."""

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", ondelete="CASCADE", index=True)
    prompt_message_id: int = Field(foreign_key="message.id", ondelete="CASCADE", index=True)
    candidate_ids: list[int] = _json(default=list)
    choice: str | None = Field(default=None, max_length=16)
    ranking: list[int] | None = _json(nullable=True)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class Rewrite(SQLModel, table=True):
    """A user's improved version of an assistant answer (demonstration data)."""

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", ondelete="CASCADE", index=True)
    user_id: int = Field(foreign_key="user.id", ondelete="CASCADE", index=True)
    content: str = Field(sa_type=Text)
    created_at: datetime = _timestamp()


class Flag(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("message_id", "user_id", "category"),)

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", ondelete="CASCADE", index=True)
    user_id: int = Field(foreign_key="user.id", ondelete="CASCADE", index=True)
    category: str = Field(max_length=32)
    comment: str = Field(default="", sa_type=Text)
    created_at: datetime = _timestamp()
    status: str = Field(default=FlagStatus.open, max_length=16, index=True,
                        sa_column_kwargs={"server_default": FlagStatus.open.value})


# -- the learning loop -----------------------------------------------------------------


class Adapter(SQLModel, table=True):
    # At most one adapter is live, whatever two operators do at the same moment.
    __table_args__ = (
        Index("ix_adapter_one_live", "status", unique=True,
              sqlite_where=text("status = 'live'"), postgresql_where=text("status = 'live'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(max_length=64, unique=True, index=True)
    parent_version: str | None = Field(default=None, max_length=64)
    base_model: str = Field(max_length=255)
    path: str = Field(max_length=1024)
    sha256: str = Field(default="", max_length=64)
    status: str = Field(default=AdapterStatus.training, max_length=16, index=True)
    eval_report: dict[str, Any] | None = _json(nullable=True)
    traffic_share: float = 0.0
    reward_model_version: str | None = Field(default=None, max_length=64)  # trained with it
    # Its training data included a user who was erased since (`feedback.erasure`): retrain.
    trained_on_erased_data: bool = Field(default=False, sa_column_kwargs={
        "server_default": text("false")})
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class RewardModelVersion(SQLModel, table=True):
    """A trained reward model: an immutable directory under `<data_dir>/reward_models/`
    named after its version, what it saw, and how it scored on the held-out split."""

    __tablename__ = "reward_model"
    # At most one reward model is current, whatever two trainers do at the same moment.
    __table_args__ = (
        Index("ix_reward_model_one_current", "status", unique=True,
              sqlite_where=text("status = 'current'"),
              postgresql_where=text("status = 'current'")),
    )

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(max_length=64, unique=True, index=True)  # rm-0001, rm-0002, ...
    # The one current when it was trained (a cycle warm-starts from it).
    parent_version: str | None = Field(default=None, max_length=64)
    path: str = Field(max_length=1024)
    backbone: str = Field(max_length=32)  # "minilm" or "policy-lora"
    # What it trained on, e.g. {"since": None, "until": "...", "pairs": 900,
    # "heldout_pairs": 100}.
    data_window: dict[str, Any] = _json(default=dict)
    heldout: dict[str, Any] | None = _json(nullable=True)  # accuracy, loss, ece, pairs
    status: str = Field(default=RewardModelStatus.current, max_length=16, index=True)
    # Its training data included a user who was erased since (`feedback.erasure`): retrain.
    trained_on_erased_data: bool = Field(default=False, sa_column_kwargs={
        "server_default": text("false")})
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class TrainingRun(SQLModel, table=True):
    __tablename__ = "training_run"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # a RunKind
    status: str = Field(default=RunStatus.running, max_length=16, index=True)
    # Which feedback the run saw, e.g. {"until": "...", "max_message_id": 123}.
    data_window: dict[str, Any] = _json(default=dict)
    config: dict[str, Any] = _json(default=dict)
    metrics: dict[str, Any] = _json(default=dict)
    error: str | None = Field(default=None, sa_type=Text)
    adapter_version: str | None = Field(default=None, max_length=64)
    started_at: datetime = _timestamp()
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    actor_id: int | None = Field(default=None, foreign_key="user.id", ondelete="SET NULL")
    actor: str = Field(max_length=64)  # the handle, or "scheduler"
    action: str = Field(max_length=32)  # "approve", "promote", "rollback", ...
    adapter_version: str | None = Field(default=None, max_length=64, index=True)
    reward_model_version: str | None = Field(default=None, max_length=64, index=True)
    detail: dict[str, Any] = _json(default=dict)
    created_at: datetime = _timestamp(index=True)


class Lease(SQLModel, table=True):
    """A named lock shared by every process through the database (e.g. "cycle": one
    training cycle at a time). It expires unless renewed, so a crashed holder frees it."""

    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(max_length=128)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class AnnotatorQuality(SQLModel, table=True):
    """How well one user's votes agree with the reward model that the last cycle trained
    (written by the trainer; read by the server and the training data). The patterns and
    the consensus agreement come from the raw votes (`feedback.queries.annotators`)."""

    __tablename__ = "annotator_quality"

    user_id: int = Field(foreign_key="user.id", ondelete="CASCADE", primary_key=True)
    reward_model: str = Field(max_length=64)  # the reward model's version directory
    reward_model_agreement: float | None = None  # share of the user's votes it agrees with
    reward_model_items: int = 0  # how many of the user's votes it judged
    computed_at: datetime = _timestamp()


# -- the review queue ------------------------------------------------------------------


class ReviewItem(SQLModel, table=True):
    """Feedback waiting for an operator (`feedback.queries.review`): a flag, a thumbs-down
    with a comment, a rewrite, or an item users disagree on, and how it was resolved."""

    __tablename__ = "review_item"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16, index=True)  # a ReviewKind
    # What it reviews, e.g. "flag:12" or "disagreement:<digest>": an item is made once.
    key: str = Field(max_length=96, unique=True)
    message_id: int | None = Field(default=None, foreign_key="message.id", ondelete="CASCADE",
                                   index=True)
    user_id: int | None = Field(default=None, foreign_key="user.id", ondelete="CASCADE",
                                index=True)  # who raised it (none for a disagreement)
    flag_id: int | None = Field(default=None, foreign_key="flag.id", ondelete="CASCADE")
    rating_id: int | None = Field(default=None, foreign_key="rating.id", ondelete="CASCADE")
    rewrite_id: int | None = Field(default=None, foreign_key="rewrite.id", ondelete="CASCADE")
    # A disagreement's votes: {"ratings": [ids], "comparisons": [ids]}.
    detail: dict[str, Any] = _json(default=dict)
    status: str = Field(default=ReviewStatus.open, max_length=16, index=True)
    exclude_scope: str | None = Field(default=None, max_length=16)  # message, vote or user
    note: str = Field(default="", sa_type=Text)
    decided_by_id: int | None = Field(default=None, foreign_key="user.id", ondelete="SET NULL")
    decided_by: str | None = Field(default=None, max_length=64)  # the operator's handle
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = _timestamp()


class TrainingExclusion(SQLModel, table=True):
    """Feedback that training, exports and replays leave out: one message's votes, one
    vote, or every vote of one user (`scope` names which of the ids is set)."""

    __tablename__ = "training_exclusion"

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=16)  # an ExclusionScope
    message_id: int | None = Field(default=None, foreign_key="message.id", ondelete="CASCADE")
    rating_id: int | None = Field(default=None, foreign_key="rating.id", ondelete="CASCADE")
    comparison_id: int | None = Field(default=None, foreign_key="comparison.id",
                                      ondelete="CASCADE")
    rewrite_id: int | None = Field(default=None, foreign_key="rewrite.id", ondelete="CASCADE")
    flag_id: int | None = Field(default=None, foreign_key="flag.id", ondelete="CASCADE")
    user_id: int | None = Field(default=None, foreign_key="user.id", ondelete="CASCADE")
    review_item_id: int | None = Field(default=None, foreign_key="review_item.id",
                                       ondelete="SET NULL")
    actor_id: int | None = Field(default=None, foreign_key="user.id", ondelete="SET NULL")
    actor: str = Field(max_length=64)
    created_at: datetime = _timestamp()


class Erasure(SQLModel, table=True):
    """That a user's data was erased, and nothing else about them: no id, no handle, no
    content (`feedback.erasure`). The event log keeps this record in place of theirs."""

    id: int | None = Field(default=None, primary_key=True)
    actor: str = Field(max_length=64)  # who erased: "self", an admin's handle, "cli:<login>"
    rows: dict[str, Any] = _json(default=dict)  # how many rows of each table went
    erased_at: datetime = _timestamp()
