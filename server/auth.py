"""Who is calling: an API key (SDK clients, operators) or a browser session cookie.

A browser with neither gets an anonymous user and a signed, HttpOnly session cookie on
its first call. An API key that is given but unknown is refused (401), never silently
downgraded to an anonymous session.
"""

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request, Response
from sqlmodel import Session

from feedback.db import session_scope
from feedback.models import Role, User
from feedback.queries import users
from flywheel.api_keys import hash_api_key
from server.errors import APIError

COOKIE = "flywheel_session"
COOKIE_MAX_AGE = 365 * 24 * 3600


def sign(user_id: int, secret: str) -> str:
    mac = hmac.new(secret.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()
    return f"{user_id}.{mac}"


def verify(cookie: str, secret: str) -> int | None:
    user_id, _, _ = cookie.partition(".")
    if not user_id.isdigit() or not hmac.compare_digest(cookie, sign(int(user_id), secret)):
        return None
    return int(user_id)


def bearer_key(headers) -> str | None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def authenticate(session: Session, *, headers, cookies, secret: str) -> User | None:
    """The caller named by an API key or a valid session cookie, else None.
    Raises 401 for a key that matches nobody."""
    key = bearer_key(headers)
    if key is not None:
        user = users.get_user_by_api_key_hash(session, api_key_hash=hash_api_key(key))
        if user is None:
            raise APIError(401, "invalid API key", code="invalid_api_key")
        return user
    user_id = verify(cookies.get(COOKIE, ""), secret)
    return session.get(User, user_id) if user_id is not None else None


def new_anonymous_user(session: Session) -> User:
    return users.create_user(session, handle=f"anon-{secrets.token_hex(6)}")


def cookie_header(user: User, secret: str) -> str:
    return (f"{COOKIE}={sign(user.id, secret)}; Max-Age={COOKIE_MAX_AGE}; Path=/; "
            "HttpOnly; SameSite=Lax")


def current_user(request: Request, response: Response) -> User:
    # A short unit of work of its own: a streaming route must not hold a connection
    # for as long as it generates.
    secret = request.app.state.settings.secret_key
    with session_scope(request.app.state.db) as session:
        user = authenticate(session, headers=request.headers, cookies=request.cookies,
                            secret=secret)
        if user is None:
            user = new_anonymous_user(session)
            response.headers.append("set-cookie", cookie_header(user, secret))
    return user


def operator(request: Request) -> User:
    if bearer_key(request.headers) is None:
        raise APIError(401, "operator routes need an API key (Authorization: Bearer …)",
                       code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
    with session_scope(request.app.state.db) as session:
        user = authenticate(session, headers=request.headers, cookies={},
                            secret=request.app.state.settings.secret_key)
    if user.role not in (Role.operator, Role.admin):
        raise APIError(403, "this route is for operators", code="forbidden")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
Operator = Annotated[User, Depends(operator)]
