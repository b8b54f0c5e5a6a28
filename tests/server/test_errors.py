"""One function turns any exception into the error a client gets (HTTP, websocket, SSE)."""

import logging

import pytest
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException

from feedback.errors import InvalidFeedback, NotFound, RegistryError
from server.errors import APIError, as_api_error


@pytest.mark.parametrize(("exception", "status", "code"), [
    (NotFound("no conversation 7"), 404, "not_found"),
    (InvalidFeedback("a parent from elsewhere"), 422, "invalid_feedback"),
    (RegistryError("promote a rejected adapter"), 409, "registry_conflict"),
    (DataError("INSERT", {}, Exception("NUL")), 422, "unstorable_value"),
    (OperationalError("SELECT", {}, Exception("database is locked")), 503, "database_busy"),
    (HTTPException(405, "Method Not Allowed"), 405, None),
])
def test_known_exceptions_become_their_error(exception, status, code) -> None:
    error = as_api_error(exception, where="test")

    assert (error.status, error.code) == (status, code)
    body = error.body()["error"]
    assert list(body) == ["message", "type", "code"] and body["type"] and body["message"]


def test_a_busy_database_says_when_to_retry() -> None:
    error = as_api_error(OperationalError("SELECT", {}, Exception("locked")), where="test")
    assert error.headers == {"Retry-After": "2"}


def test_an_api_error_is_itself() -> None:
    original = APIError(429, "slow down", code="rate_limit_exceeded")
    assert as_api_error(original, where="test") is original
    assert original.body() == {"error": {"message": "slow down", "type": "rate_limit_error",
                                         "code": "rate_limit_exceeded"}}


def test_anything_else_is_an_internal_error_and_logged(caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="server.errors"):
        error = as_api_error(RuntimeError("secret detail"), where="websocket turn")

    assert error.body() == {"error": {"message": "internal server error",
                                      "type": "server_error", "code": "internal_error"}}
    assert "websocket turn" in caplog.text and "secret detail" in caplog.text
