"""Users: anonymous browser sessions, API-key holders, operators and admins.

An API key is stored only as its hash. It may expire (`api_key_expires_at`), be rotated (a
new hash replaces the old one: the old key stops working at once) or revoked (no hash:
the user stays, with their data, but no key names them). Every request with a key reads
its user, so a key revoked on one server is refused by every server at once. Its last use
is written at most once a minute (`KEY_USE_RESOLUTION`), by a plain UPDATE that the event
log does not record (it is no feedback).
"""

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from feedback.errors import InvalidFeedback, NotFound
from feedback.models import Role, User, utcnow

KEY_USE_RESOLUTION = timedelta(minutes=1)


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidFeedback(f"role must be one of {', '.join(Role)}, not {role!r}") from None


HANDLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")


def create_user(session: Session, *, handle: str, role: str = Role.user,
                api_key_hash: str | None = None,
                api_key_expires_at: datetime | None = None) -> User:
    if not HANDLE.fullmatch(handle):
        raise InvalidFeedback(f"a handle is 1 to 64 letters, digits or _.@+- (not {handle!r})")
    if get_user_by_handle(session, handle=handle) is not None:
        raise InvalidFeedback(f"a user named {handle!r} already exists")
    _check_expiry(api_key_expires_at)
    user = User(handle=handle, role=_role(role), api_key_hash=api_key_hash,
                api_key_expires_at=api_key_expires_at)
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, *, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def get_user_by_handle(session: Session, *, handle: str) -> User | None:
    return session.exec(select(User).where(User.handle == handle)).first()


def get_user_by_api_key_hash(session: Session, *, api_key_hash: str) -> User | None:
    """The holder of an API key, looked up by the key's hash (the key itself is never
    stored)."""
    return session.exec(select(User).where(User.api_key_hash == api_key_hash)).first()


def get_or_create_user(session: Session, *, handle: str, role: str = Role.user) -> User:
    return get_user_by_handle(session, handle=handle) or create_user(
        session, handle=handle, role=role
    )


def set_role(session: Session, *, user_id: int, role: str) -> User:
    user = get_user(session, user_id=user_id)
    user.role = _role(role)
    session.add(user)
    session.flush()
    return user


def list_users(session: Session, *, limit: int = 100, offset: int = 0) -> list[User]:
    """Users in the order they joined."""
    query = select(User).order_by(col(User.id)).offset(offset).limit(limit)
    return list(session.exec(query))


def iter_users(session: Session) -> Iterator[User]:
    yield from session.exec(select(User).order_by(col(User.id)))


def find_user(session: Session, *, handle_or_id: str) -> User:
    """A user named by handle, or by id (digits that are no user's handle)."""
    user = get_user_by_handle(session, handle=handle_or_id)
    if user is None and handle_or_id.isdigit():
        user = session.get(User, int(handle_or_id))
    if user is None:
        raise NotFound(f"user {handle_or_id} not found")
    return user


# -- API keys ------------------------------------------------------------------------------


def _check_expiry(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidFeedback("an API key's expiry must be in the future")


def rotate_api_key(session: Session, *, user_id: int, api_key_hash: str,
                   expires_at: datetime | None = None) -> User:
    """Give the user a new key (its hash); the old one, if any, stops working."""
    _check_expiry(expires_at)
    user = get_user(session, user_id=user_id)
    user.api_key_hash, user.api_key_expires_at = api_key_hash, expires_at
    user.api_key_last_used_at = user.api_key_revoked_at = None
    session.add(user)
    session.flush()
    return user


def revoke_api_key(session: Session, *, user_id: int) -> User:
    """Take the user's key away (their data stays). Revoking no key is an error."""
    user = get_user(session, user_id=user_id)
    if user.api_key_hash is None:
        raise InvalidFeedback(f"user {user.handle} has no API key to revoke")
    user.api_key_hash, user.api_key_revoked_at = None, utcnow()
    session.add(user)
    session.flush()
    return user


def key_expired(user: User, *, now: datetime | None = None) -> bool:
    return user.api_key_expires_at is not None and user.api_key_expires_at <= (now or utcnow())


def note_key_use(session: Session, *, user: User, now: datetime | None = None) -> bool:
    """Record that the user's key was used now, unless that was recorded less than
    `KEY_USE_RESOLUTION` ago (then nothing is written). Returns whether it wrote."""
    now = now or utcnow()
    last = user.api_key_last_used_at
    if last is not None and now - last < KEY_USE_RESOLUTION:
        return False
    table = User.__table__  # a Core UPDATE: no ORM flush, so no event-log record
    stale = or_(table.c.api_key_last_used_at.is_(None),
                table.c.api_key_last_used_at <= now - KEY_USE_RESOLUTION)
    session.execute(update(table).where(table.c.id == user.id, stale)
                    .values(api_key_last_used_at=now))
    set_committed_value(user, "api_key_last_used_at", now)  # not a change to flush
    return True
