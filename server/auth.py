"""Who is calling: an API key (SDK clients, operators) or a browser session cookie.

A browser with neither is anonymous, and its reads leave no trace: it owns nothing, so
they find nothing. Its anonymous user and the signed, HttpOnly session cookie that names
it are made when it first needs them: its first answer (`/v1/chat/completions`), its chat
websocket (the handshake is the one moment a socket can set a cookie), or `GET /api/me`,
the web UI's explicit first step. An API key that is given but unknown (or rotated,
revoked, expired) is refused (401), never silently downgraded to an anonymous session;
every request reads the key's user, so a revoked key is refused by every server at once.

Roles: `operator` routes (adapters, reward models, review) take operators' and admins'
keys; `admin` routes (users and keys) only admins'.
"""

import asyncio
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request, Response
from itsdangerous import BadData, TimestampSigner
from sqlmodel import Session
from starlette.requests import HTTPConnection

from feedback.db import session_scope
from feedback.models import Role, User
from feedback.queries import users
from flywheel.api_keys import hash_api_key
from server.errors import APIError

COOKIE = "flywheel_session"
COOKIE_MAX_AGE = 365 * 24 * 3600
COOKIE_SALT = "flywheel.session"


def _signer(keys: Sequence[str]) -> TimestampSigner:
    # itsdangerous signs with the last key of its list and verifies with any of them.
    return TimestampSigner(list(reversed(keys)), salt=COOKIE_SALT,
                           digest_method=hashlib.sha256)


def sign(user_id: int, keys: Sequence[str]) -> str:
    """A session cookie's value: the user id, timestamped, signed with the first key."""
    return _signer(keys).sign(str(user_id)).decode()


def verify(cookie: str, keys: Sequence[str]) -> int | None:
    """The user id of a cookie signed with any of the keys, younger than the cookie's
    max age; None for anything else (a malformed cookie is no session, never an error)."""
    signed = verify_signed(cookie, keys)
    return None if signed is None else signed[0]


def verify_signed(cookie: str, keys: Sequence[str]) -> tuple[int, datetime] | None:
    """`verify`'s user id, and when the cookie was signed (to the second)."""
    try:
        value, signed_at = _signer(keys).unsign(cookie, max_age=COOKIE_MAX_AGE,
                                                return_timestamp=True)
        return int(value), signed_at
    except (BadData, UnicodeError, ValueError):
        return None


def bearer_key(headers) -> str | None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def authenticate(session: Session, *, headers, cookies, keys: Sequence[str]) -> User | None:
    """The caller named by an API key or a valid session cookie, else None.
    Raises 401 for a key that matches nobody (unknown, rotated or revoked) or has expired;
    notes the key's use (at most once a minute)."""
    key = bearer_key(headers)
    if key is not None:
        user = users.get_user_by_api_key_hash(session, api_key_hash=hash_api_key(key))
        if user is None:
            raise APIError(401, "invalid API key", code="invalid_api_key")
        if users.key_expired(user):
            raise APIError(401, "this API key has expired; ask an admin to rotate it",
                           code="expired_api_key")
        users.note_key_use(session, user=user)
        return user
    signed = verify_signed(cookies.get(COOKIE, ""), keys)
    if signed is None:
        return None
    user = session.get(User, signed[0])
    # A cookie signed before its user was made names an erased user whose id SQLite gave
    # to someone new: no session (cookies are signed once their user is committed).
    if user is None or signed[1] < user.created_at.replace(microsecond=0):
        return None
    return user


def cookie_header(user: User, connection: HTTPConnection) -> str:
    """A new session's Set-Cookie. Secure when the connection came over HTTPS, directly or
    through a proxy the settings trust (`forwarded_allow_ips`)."""
    value = sign(user.id, connection.app.state.settings.session_keys)
    secure = "; Secure" if connection.url.scheme in ("https", "wss") else ""
    return f"{COOKIE}={value}; Max-Age={COOKIE_MAX_AGE}; Path=/; HttpOnly; SameSite=Lax{secure}"


def clear_cookie_header(connection: HTTPConnection) -> str:
    """A Set-Cookie that ends the session (its user was erased)."""
    secure = "; Secure" if connection.url.scheme in ("https", "wss") else ""
    return f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax{secure}"


NOBODY = 0  # no user has this id: what a caller without a session owns


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the request names them; finding out creates nothing."""

    user: User | None  # None: a browser without a session (yet)
    # The client's address, for callers without an API key: their answers are also
    # metered per address (dropping the cookie does not reset the budget). None for a key.
    metered_address: str | None

    @property
    def user_id(self) -> int | None:
        return None if self.user is None else self.user.id


def identify(connection: HTTPConnection) -> Caller:
    """The caller of a request or websocket, in a short unit of work of its own (a
    streaming route must not hold a connection for as long as it generates)."""
    with session_scope(connection.app.state.db) as session:
        user = authenticate(session, headers=connection.headers, cookies=connection.cookies,
                            keys=connection.app.state.settings.session_keys)
    keyed = bearer_key(connection.headers) is not None
    address = connection.client.host if connection.client else "unknown"
    return Caller(user, None if keyed else address)


def new_session(connection: HTTPConnection) -> tuple[User, str]:
    """A new anonymous user, committed, and the Set-Cookie header that names it."""
    with session_scope(connection.app.state.db) as session:
        user = users.create_user(session, handle=f"anon-{secrets.token_hex(6)}")
    return user, cookie_header(user, connection)


CallerDep = Annotated[Caller, Depends(identify)]


async def caller_id(found: CallerDep) -> int:
    """The caller's user id; NOBODY for a browser without a session, whose reads find
    nothing and whose votes find no message of theirs."""
    return NOBODY if found.user_id is None else found.user_id


async def ensure_session(found: Caller, connection: HTTPConnection,
                         response: Response) -> User:
    """The caller's user, or for a browser without a session a new one, whose cookie
    goes on `response`: what a write is recorded under."""
    if found.user is not None:
        return found.user
    user, cookie = await asyncio.to_thread(new_session, connection)
    response.headers.append("set-cookie", cookie)
    return user


async def current_user(found: CallerDep, request: Request, response: Response) -> User:
    """The caller, starting a session for a browser without one (`GET /api/me`)."""
    return await ensure_session(found, request, response)


def _key_holder(request: Request, roles: tuple[Role, ...], who: str) -> User:
    if bearer_key(request.headers) is None:
        raise APIError(401, f"{who} routes need an API key (Authorization: Bearer …)",
                       code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
    with session_scope(request.app.state.db) as session:
        user = authenticate(session, headers=request.headers, cookies={},
                            keys=request.app.state.settings.session_keys)
    if user.role not in roles:
        raise APIError(403, f"this route is for {who}s", code="forbidden")
    return user


def operator(request: Request) -> User:
    """An operator's key (adapters, reward models, review): operators and admins. An admin
    may do an operator's work: one who may create keys of any role could give themselves
    an operator's key anyway."""
    return _key_holder(request, (Role.operator, Role.admin), "operator")


def admin(request: Request) -> User:
    """An admin's key (users and keys): admins only."""
    return _key_holder(request, (Role.admin,), "admin")


async def vote_scope(found: CallerDep) -> int | None:
    """Whose answers the caller may vote on: its own conversations' (its user id), or any
    answer (None) for a judge, the AI annotator that votes on other people's turns."""
    if found.user is not None and found.user.role == Role.judge:
        return None
    return NOBODY if found.user_id is None else found.user_id


CallerId = Annotated[int, Depends(caller_id)]
VoteScope = Annotated[int | None, Depends(vote_scope)]
CurrentUser = Annotated[User, Depends(current_user)]
Operator = Annotated[User, Depends(operator)]
Admin = Annotated[User, Depends(admin)]
