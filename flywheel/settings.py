"""All configuration in one place: flags override `FLYWHEEL_*` variables override defaults."""

import os
import secrets
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")

    data_dir: Path = Path("flywheel-data")
    db: str | None = None  # default: SQLite inside data_dir
    model: str = "demo"  # a local Hugging Face directory, a hub id, or "demo"
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = "text"  # or "json": one object per line
    # Every committed change to the store, appended as JSON lines (`feedback.eventlog`);
    # default <data_dir>/events.jsonl, "off" (or empty) for none.
    event_log: str | None = None

    # Serving
    secret_key: str | None = None  # signs session cookies; default: kept in data_dir
    max_batch: int = 32  # answers generated together; more wait in the queue
    max_queue: int = 64  # waiting answers beyond which requests get 503 + Retry-After
    max_message_chars: int = 8000
    max_new_tokens: int = 256  # default answer length
    rate_limit_per_minute: int = 60  # answers per user per minute (429 + Retry-After)
    side_by_side_share: float = 0.1  # share of turns answered twice for a pick
    adapter_poll_s: float = 2.0  # how often servers reconcile adapters with the registry

    # The training loop
    cycle_interval_s: float = 600.0  # how often the worker considers a cycle
    cycle_min_feedback: int = 50  # new votes needed before a cycle runs
    # A JSON file of the cycle's recipe, overriding its defaults section by section, e.g.
    # {"reward": {"max_length": 64}, "ppo": {"steps": 20, "max_new_tokens": 32}}
    cycle_config: Path | None = None
    auto_promote: bool = False  # promote a candidate that passes the gate, without an operator
    auto_promote_min_win_rate: float = 0.55  # reward-model win rate over the live adapter
    auto_promote_max_kl: float = 5.0  # nats per answer to the base model
    auto_promote_max_degenerate: float = 0.1  # share of empty or degenerate answers

    def resolved_secret_key(self) -> str:
        """The configured secret, else one generated once and kept in the data directory
        (so sessions survive restarts and servers sharing the directory agree)."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        return path.read_text().strip()

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{(self.data_dir / 'flywheel.db').resolve()}"

    @property
    def event_log_path(self) -> Path | None:
        if self.event_log is None:
            return self.data_dir / "events.jsonl"
        return None if self.event_log in ("", "off") else Path(self.event_log)

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"
