"""The long-lived serving objects, built once in the lifespan, as FastAPI dependencies."""

from typing import Annotated

from fastapi import Depends, Request

from flywheel.settings import Settings
from server.adapters import AdapterManager
from server.chat import ChatService
from server.limits import RateLimiter
from server.metrics import Metrics


def get_chat(request: Request) -> ChatService:
    return request.app.state.chat


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_adapters(request: Request) -> AdapterManager:
    return request.app.state.adapters


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_rate_limiter(request: Request) -> RateLimiter:
    return request.app.state.rate_limiter


Chat = Annotated[ChatService, Depends(get_chat)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Adapters = Annotated[AdapterManager, Depends(get_adapters)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
Limiter = Annotated[RateLimiter, Depends(get_rate_limiter)]
