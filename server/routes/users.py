"""Users and their API keys (admins), and the caller's own account (`/api/me`).

A new or rotated key is in the response once and never again (only its hash is stored).
Erasing a user (`DELETE /api/users/{id}`, or a user's own `DELETE /api/me`) removes
everything they wrote or voted from the store and the event log (`feedback.erasure`).
"""

import asyncio
from datetime import datetime

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field

from feedback.db import session_scope
from feedback.erasure import ErasureReport, erase_user
from feedback.models import Role
from feedback.queries import users
from flywheel.api_keys import hash_api_key, new_api_key
from server.auth import Admin, CallerDep, CurrentUser, clear_cookie_header
from server.store import MAX_ROW_ID, RowId, Store

router = APIRouter(prefix="/api", tags=["users"])


class Me(BaseModel):
    id: int
    handle: str
    role: str


class UserOut(BaseModel):
    id: int
    handle: str
    role: str
    created_at: datetime
    has_api_key: bool
    api_key_expires_at: datetime | None
    api_key_last_used_at: datetime | None  # to the minute
    api_key_revoked_at: datetime | None


class NewUser(BaseModel):
    handle: str = Field(min_length=1, max_length=64)
    role: Role = Role.user
    expires_at: AwareDatetime | None = None  # the key's; none: it never expires


class KeyRotation(BaseModel):
    expires_at: AwareDatetime | None = None


class NewKey(BaseModel):
    user: UserOut
    api_key: str  # shown only now


class ErasureOut(BaseModel):
    erasure_id: int
    rows: dict[str, int]  # removed from the store, by table
    adapters: list[str]  # trained on the erased data: retrain them
    reward_models: list[str]
    log_records_removed: int | None  # None: the event log is off


def _user_out(user) -> UserOut:
    return UserOut.model_validate({**user.model_dump(),
                                   "has_api_key": user.api_key_hash is not None})


@router.get("/me")
def me(user: CurrentUser) -> Me:
    """The caller; a browser's first call here also starts its session."""
    return Me(id=user.id, handle=user.handle, role=user.role)


def _erase(request: Request, user_id: int, actor: str) -> ErasureReport:
    return erase_user(request.app.state.db, user_id=user_id, actor=actor,
                      event_log=request.app.state.settings.event_log_path)


@router.delete("/me", status_code=204)
async def erase_me(found: CallerDep, request: Request) -> Response:
    """Erase the caller: everything they wrote or voted, their key, their session (the
    cookie is cleared). A browser without a session has nothing to erase."""
    response = Response(status_code=204)
    if found.user is not None:
        await asyncio.to_thread(_erase, request, found.user.id, "self")
    response.headers.append("set-cookie", clear_cookie_header(request))
    return response


@router.get("/users")
def list_users(_: Admin, db: Store, limit: int = Query(100, ge=1, le=1000),
               offset: int = Query(0, ge=0, le=MAX_ROW_ID)) -> list[UserOut]:
    """Users in the order they joined, with their keys' state (never the keys)."""
    with session_scope(db) as session:
        return [_user_out(u) for u in users.list_users(session, limit=limit, offset=offset)]


@router.post("/users", status_code=201)
def create_user(body: NewUser, _: Admin, db: Store) -> NewKey:
    """A user with an API key, returned only now."""
    key = new_api_key()
    with session_scope(db) as session:
        user = users.create_user(session, handle=body.handle, role=body.role,
                                 api_key_hash=hash_api_key(key),
                                 api_key_expires_at=body.expires_at)
        return NewKey(user=_user_out(user), api_key=key)


@router.post("/users/{user_id}/rotate-key")
def rotate_key(user_id: RowId, _: Admin, db: Store,
               body: KeyRotation | None = None) -> NewKey:
    """A new key for the user, returned only now; the old one stops working at once."""
    key = new_api_key()
    with session_scope(db) as session:
        user = users.rotate_api_key(session, user_id=user_id, api_key_hash=hash_api_key(key),
                                    expires_at=body.expires_at if body else None)
        return NewKey(user=_user_out(user), api_key=key)


@router.post("/users/{user_id}/revoke")
def revoke_key(user_id: RowId, _: Admin, db: Store) -> UserOut:
    """Take the user's key away (401 from then on, on every server); their data stays."""
    with session_scope(db) as session:
        return _user_out(users.revoke_api_key(session, user_id=user_id))


@router.delete("/users/{user_id}")
def erase(user_id: RowId, admin: Admin, request: Request) -> ErasureOut:
    """Erase the user: everything they wrote or voted, from the store and the event log;
    the reward models and adapters trained on it are marked (and listed here)."""
    report = _erase(request, user_id, admin.handle)
    return ErasureOut(erasure_id=report.erasure_id, rows=report.rows, adapters=report.adapters,
                      reward_models=report.reward_models,
                      log_records_removed=report.log_records_removed)
