"""A real server on the (sharpened) demo model for the crowd, one per test module."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.app import create_app
from tests.server.support import LiveServer, load_demo, make_settings


@pytest.fixture(scope="module")
def app(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return create_app(make_settings(tmp_path_factory.mktemp("crowd"), max_new_tokens=8),
                      model=load_demo(models_dir))


@pytest.fixture(scope="module")
def live(app) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server
