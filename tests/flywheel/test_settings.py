"""Settings: flags override `FLYWHEEL_*` variables override the defaults."""

import os
import secrets
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flywheel.cli.common import settings_from
from flywheel.errors import FlywheelError
from flywheel.settings import MIN_SECRET_KEY_CHARS, Settings


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
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # the data dir it created
    assert os.listdir(path.parent) == ["secret_key"]  # no temporary file left
    assert Settings(data_dir=tmp_path / "data").resolved_secret_key() == key
    assert Settings(data_dir=tmp_path / "other").resolved_secret_key() != key
    given = "g" * MIN_SECRET_KEY_CHARS
    assert Settings(data_dir=tmp_path / "data", secret_key=given).resolved_secret_key() == given


def test_servers_starting_at_once_agree_on_one_key(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each one draws a key slowly (so they overlap); exactly one key is kept, and every
    server gets it, whole."""
    draw = secrets.token_hex

    def slow_draw(n: int) -> str:
        time.sleep(0.05)
        return draw(n)

    monkeypatch.setattr(secrets, "token_hex", slow_draw)
    start = threading.Barrier(8)

    def start_server(_: int) -> str:
        start.wait()
        return Settings(data_dir=tmp_path / "data").resolved_secret_key()

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(start_server, range(8)))
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert os.listdir(tmp_path / "data") == ["secret_key"]


@pytest.mark.parametrize("crash_in", ["token_hex", "fsync"])
def test_a_crash_while_making_the_key_leaves_none(tmp_path: Path, crash_in: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A server killed while it makes the key (drawing it, or writing it out) leaves no
    key file, so the next start makes one instead of finding an empty key."""
    def killed(*_):
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(secrets if crash_in == "token_hex" else os, crash_in, killed)
        with pytest.raises(_Killed):
            Settings(data_dir=tmp_path).resolved_secret_key()
    assert not (tmp_path / "secret_key").exists()
    assert len(Settings(data_dir=tmp_path).resolved_secret_key()) == 64


class _Killed(BaseException):
    """What a kill looks like to the code it interrupts: nothing after it runs."""


@pytest.mark.parametrize("stored", ["", "\n", "short-key\n", "\udcff"])
def test_an_empty_or_short_stored_key_is_refused(tmp_path: Path, stored: str) -> None:
    (tmp_path / "secret_key").write_text(stored, errors="surrogateescape")
    with pytest.raises(FlywheelError, match=r"secret_key.*delete it"):
        Settings(data_dir=tmp_path).resolved_secret_key()


@pytest.mark.parametrize("given", ["", "short", "x" * (MIN_SECRET_KEY_CHARS - 1)])
def test_an_empty_or_short_configured_key_is_refused(tmp_path: Path, given: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_SECRET_KEY", given)
    with pytest.raises(FlywheelError, match=f"FLYWHEEL_SECRET_KEY.*{MIN_SECRET_KEY_CHARS}"):
        Settings(data_dir=tmp_path).resolved_secret_key()
    assert not (tmp_path / "secret_key").exists()  # never silently replaced by a stored one


def test_rotated_keys_and_allowed_origins_are_comma_separated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    old, older = "o" * MIN_SECRET_KEY_CHARS, "p" * MIN_SECRET_KEY_CHARS
    monkeypatch.setenv("FLYWHEEL_SECRET_KEY", "n" * MIN_SECRET_KEY_CHARS)
    monkeypatch.setenv("FLYWHEEL_PREVIOUS_SECRET_KEYS", f"{old}, {older}")
    monkeypatch.setenv("FLYWHEEL_ALLOWED_ORIGINS", "https://a.example,https://b.example")

    settings = Settings()

    assert settings.session_keys == ["n" * MIN_SECRET_KEY_CHARS, old, older]  # signer first
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert Settings(previous_secret_keys="", allowed_origins="").session_keys[1:] == []
    with pytest.raises(ValueError, match=f"at least {MIN_SECRET_KEY_CHARS}"):
        Settings(previous_secret_keys=f"{old},short")


def test_serving_leaves_one_core_to_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert Settings().serving_torch_threads() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert Settings().serving_torch_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the operator's choice wins over the default
    assert Settings().serving_torch_threads() is None
    monkeypatch.setenv("FLYWHEEL_TORCH_THREADS", "6")  # and the setting over both
    assert Settings().serving_torch_threads() == 6


def test_zero_torch_threads_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_TORCH_THREADS", "0")
    with pytest.raises(ValueError, match="at least 1 thread"):
        Settings()


def test_worker_threads_are_four_per_core_at_most_32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert Settings().worker_threads() == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert Settings().worker_threads() == 32
    monkeypatch.setenv("FLYWHEEL_THREADS", "40")
    assert Settings().worker_threads() == 40
    monkeypatch.setenv("FLYWHEEL_THREADS", "0")
    with pytest.raises(ValueError, match="at least 1 thread"):
        Settings()


def test_keep_alive_outlasts_httpx_pool_expiry() -> None:
    assert Settings().keep_alive_s > 5  # httpx keeps an idle connection 5 s
    with pytest.raises(ValueError, match="at least 1 second"):
        Settings(keep_alive_s=0)
