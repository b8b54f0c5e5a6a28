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


def error_body(status: int, message: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"),
                      "code": code}}


def error_response(status: int, message: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError):
        return error_response(e.status, e.message, e.code, e.headers)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, e: NotFound):
        return error_response(404, str(e), "not_found")

    @app.exception_handler(InvalidFeedback)
    async def invalid_feedback(_: Request, e: InvalidFeedback):
        return error_response(422, str(e), "invalid_feedback")

    @app.exception_handler(RegistryError)
    async def registry_conflict(_: Request, e: RegistryError):
        # An illegal move for the registry's current state (e.g. promoting a rejected
        # adapter, rolling back with nothing retired): a conflict, not a malformed request.
        return error_response(409, str(e), "registry_conflict")

    @app.exception_handler(DataError)
    async def unstorable(_: Request, e: DataError):
        return error_response(422, UNSTORABLE, "unstorable_value")

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(OperationalError)
    async def database_busy(request: Request, e: Exception):
        log.warning("database busy on %s %s: %s", request.method, request.url.path,
                    str(e).splitlines()[0])
        return error_response(503, DATABASE_BUSY_MESSAGE, "database_busy",
                              DATABASE_RETRY_AFTER)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
        return error_response(422, message, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), None, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, e: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error", "internal_error")
