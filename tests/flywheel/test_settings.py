"""Settings: flags override `FLYWHEEL_*` variables override the defaults."""

import stat
from pathlib import Path

import pytest

from flywheel.cli.common import settings_from
from flywheel.settings import Settings


@pytest.fixture(autouse=True)
def _no_flywheel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"FLYWHEEL_{name.upper()}", raising=False)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.data_dir == Path("flywheel-data")
    assert settings.model == "demo"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.db_url == f"sqlite:///{tmp_path.resolve() / 'flywheel-data' / 'flywheel.db'}"
    assert settings.models_dir == Path("flywheel-data") / "models"
    assert settings.adapters_dir == Path("flywheel-data") / "adapters"


def test_environment_then_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("FLYWHEEL_PORT", "9001")
    monkeypatch.setenv("FLYWHEEL_MODEL", "some/model")
    settings = Settings()
    assert settings.data_dir == tmp_path / "env"
    assert settings.port == 9001 and settings.model == "some/model"
    assert settings.db_url == f"sqlite:///{tmp_path / 'env' / 'flywheel.db'}"

    monkeypatch.setenv("FLYWHEEL_DB", "sqlite:///elsewhere.db")
    assert Settings().db_url == "sqlite:///elsewhere.db"

    # The CLI's options: given ones win, absent (None) ones leave the environment alone.
    settings = settings_from(db=None, data_dir=tmp_path / "flag", port=None, model="demo")
    assert settings.data_dir == tmp_path / "flag"
    assert settings.db_url == "sqlite:///elsewhere.db"
    assert settings.port == 9001 and settings.model == "demo"


def test_secret_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    key = settings.resolved_secret_key()
    assert len(key) == 64
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(data_dir=tmp_path / "data").resolved_secret_key() == key
    assert Settings(data_dir=tmp_path / "other").resolved_secret_key() != key
    assert Settings(data_dir=tmp_path / "data", secret_key="given").resolved_secret_key() == "given"
