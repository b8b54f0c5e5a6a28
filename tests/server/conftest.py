"""Server fixtures: one app per test module (a test module may set `SETTINGS`, a dict of
Settings overrides), reached through starlette's TestClient or a real uvicorn server."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from flywheel.model_loading import LoadedModel
from server.app import create_app
from tests.server.support import LiveServer, load_demo, make_settings


@pytest.fixture(scope="module")
def demo(models_dir: Path) -> LoadedModel:
    """A demo model of the module's own (adapters change a model in place)."""
    return load_demo(models_dir)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-data")


@pytest.fixture(scope="module")
def app(request: pytest.FixtureRequest, demo: LoadedModel, data_dir: Path) -> FastAPI:
    overrides = getattr(request.module, "SETTINGS", {})
    return create_app(make_settings(data_dir, **overrides), model=demo)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    """A browser: it keeps the session cookie the server gives it."""
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def live(app: FastAPI) -> Iterator[LiveServer]:
    """The app on a real socket (for the openai SDK, websockets and true concurrency).
    A module uses `client` or `live`, never both: each runs the app's lifespan."""
    with LiveServer(app) as server:
        yield server
