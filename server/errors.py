"""One JSON error shape for every route, OpenAI's, so SDKs and the web UI read it alike:

    {"error": {"message": "...", "type": "invalid_request_error", "code": "..."}}
"""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from feedback.errors import InvalidFeedback, NotFound, RegistryError

log = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "overloaded_error",
}


# What a database refuses to store is the request's fault, e.g. a NUL character in a text
# (PostgreSQL) or a number beyond its column.
UNSTORABLE = "the request holds a value the database cannot store (e.g. a NUL character)"


# The database saturated (no pooled connection, or SQLite's write lock, within the
# settings' `db_wait_s`) or unreachable: nothing is wrong with the request; retry it.
DATABASE_BUSY = (PoolTimeout, OperationalError)
DATABASE_BUSY_MESSAGE = "the database is busy; retry shortly"
DATABASE_RETRY_AFTER = {"Retry-After": "2"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers

    def body(self) -> dict:
        return error_body(self.status, self.message, self.code)


def error_body(status: int, message: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"),
                      "code": code}}


def error_response(status: int, message: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code), status_code=status, headers=headers)


def as_api_error(e: BaseException, *, where: str) -> APIError:
    """Any exception as the error a client gets, the same over HTTP, the websocket and SSE:
    the request's own faults with what to fix, a busy database as retryable, anything else
    as an internal error (logged with its traceback; `where` says what failed)."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, NotFound):
        return APIError(404, str(e), code="not_found")
    if isinstance(e, RegistryError):
        # An illegal move for the registry's current state (e.g. promoting a rejected
        # adapter, rolling back with nothing retired): a conflict, not a malformed request
        # (checked before InvalidFeedback, which it refines).
        return APIError(409, str(e), code="registry_conflict")
    if isinstance(e, InvalidFeedback):
        return APIError(422, str(e), code="invalid_feedback")
    if isinstance(e, DataError):
        return APIError(422, UNSTORABLE, code="unstorable_value")
    if isinstance(e, DATABASE_BUSY):
        log.warning("database busy on %s: %s", where, str(e).splitlines()[0])
        return APIError(503, DATABASE_BUSY_MESSAGE, code="database_busy",
                        headers=DATABASE_RETRY_AFTER)
    if isinstance(e, RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        path = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return APIError(422, f"{path}: {first.get('msg', 'invalid')}" if path
                        else "invalid request", code="invalid_request")
    if isinstance(e, StarletteHTTPException):
        return APIError(e.status_code, str(e.detail), headers=getattr(e, "headers", None))
    log.error("unhandled error on %s", where, exc_info=e)
    return APIError(500, "internal server error", code="internal_error")


# Every exception class with a handler of its own (Starlette picks the most specific).
HANDLED = (APIError, NotFound, InvalidFeedback, RegistryError, DataError, *DATABASE_BUSY,
           RequestValidationError, StarletteHTTPException, Exception)


def install_error_handlers(app: FastAPI) -> None:
    async def handle(request: Request, e: Exception) -> JSONResponse:
        error = as_api_error(e, where=f"{request.method} {request.url.path}")
        return error_response(error.status, error.message, error.code, error.headers)

    for kind in HANDLED:
        app.add_exception_handler(kind, handle)
