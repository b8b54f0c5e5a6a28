"""Users: anonymous browser sessions, API-key holders and operators."""

import re
from collections.abc import Iterator

from sqlmodel import Session, col, select

from feedback.errors import InvalidFeedback, NotFound
from feedback.models import Role, User


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidFeedback(f"role must be one of {', '.join(Role)}, not {role!r}") from None


HANDLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")


def create_user(session: Session, *, handle: str, role: str = Role.user,
                api_key_hash: str | None = None) -> User:
    if not HANDLE.fullmatch(handle):
        raise InvalidFeedback(f"a handle is 1 to 64 letters, digits or _.@+- (not {handle!r})")
    user = User(handle=handle, role=_role(role), api_key_hash=api_key_hash)
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
