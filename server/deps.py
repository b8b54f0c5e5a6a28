"""The long-lived serving objects, built once in the lifespan, as FastAPI dependencies
(async: reading an attribute needs no worker thread, which may all be busy)."""

from typing import Annotated

from fastapi import Depends, Request

from flywheel.settings import Settings
from server.adapters import AdapterManager
from server.chat import ChatService
from server.limits import RateLimiter
from server.metrics import Metrics


async def get_chat(request: Request) -> ChatService:
    return request.app.state.chat


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_adapters(request: Request) -> AdapterManager:
    return request.app.state.adapters


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_rate_limiter(request: Request) -> RateLimiter:
    return request.app.state.rate_limiter


Chat = Annotated[ChatService, Depends(get_chat)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Adapters = Annotated[AdapterManager, Depends(get_adapters)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
Limiter = Annotated[RateLimiter, Depends(get_rate_limiter)]
