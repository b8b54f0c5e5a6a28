"""All configuration in one place: flags override `FLYWHEEL_*` variables override defaults."""

import os
import secrets
from pathlib import Path
from typing import Annotated

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from feedback.private import FILE_MODE, private_dirs
from flywheel.errors import FlywheelError

# Shorter keys are refused: cookies signed with a guessable key can be forged.
MIN_SECRET_KEY_CHARS = 32


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
    # Keys rotated out, comma-separated: cookies they signed still verify (keep each one
    # as long as the cookies' max age, a year, or their anonymous users start afresh).
    previous_secret_keys: Annotated[list[str], NoDecode] = []
    # Web origins, besides the server's own, whose pages may open the chat websocket
    # (comma-separated, e.g. https://chat.example.com).
    allowed_origins: Annotated[list[str], NoDecode] = []
    # Proxies believed about X-Forwarded-Proto (HTTPS: Secure cookies) and X-Forwarded-For
    # (the client's address): comma-separated addresses or networks, "*" for any.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    max_batch: int = 32  # answers generated together; more wait in the queue
    max_queue: int = 64  # waiting answers beyond which requests get 503 + Retry-After
    max_message_chars: int = 8000
    max_conversation_chars: int = 200_000  # all messages of a /v1 request (413 beyond)
    max_body_bytes: int = 1024 * 1024  # any HTTP request's body (413 beyond)
    max_new_tokens: int = 256  # default answer length
    rate_limit_per_minute: int = 60  # answers per user per minute (429 + Retry-After)
    # Answers per client address per minute for callers without an API key (default: the
    # per-user limit), so that dropping the session cookie does not reset the budget.
    # Browsers behind one NAT share it: raise it there. Behind a reverse proxy the address
    # is the proxy's unless the proxy is in `forwarded_allow_ips`.
    rate_limit_per_address_per_minute: int | None = None
    # Threads for blocking work (each request's whole unit of work with the database runs
    # in one); the database pool holds a connection for each, and as many again for the
    # event loop's own worker threads (PostgreSQL: at most 2 × threads connections).
    # Default 4 per core, at most 32 (`worker_threads`): more threads than that only
    # queue on the interpreter lock, and the event loop (streams, /healthz) waits behind
    # them; with 40 on 2 cores, /healthz's p99 under 100 voters was 80–136 ms, with 8 33–50.
    threads: int | None = None
    # How long an idle HTTP connection stays open (uvicorn's default is 5 s, which is also
    # httpx's pool expiry: a client reusing a connection just as the server closes it gets
    # a reset instead of an answer). Longer than clients keep theirs, as nginx's 75 s is.
    keep_alive_s: int = 75
    # torch's CPU threads in a serving process (`serve`, `up`, `engine`); default every core
    # but one (OMP_NUM_THREADS, where set, wins over the default). torch's own default takes
    # every core, and its threads spin while they wait: on a small machine they starve the
    # event loop that streams the answers, and the HTTP clients beside it.
    torch_threads: int | None = None
    db_wait_s: float = 5.0  # wait for a pooled connection or SQLite's lock; then 503
    side_by_side_share: float = 0.1  # share of turns answered twice for a pick
    adapter_poll_s: float = 2.0  # how often servers reconcile adapters with the registry
    # Generation backends (`flywheel engine`, vLLM): base URLs, comma-separated. With any,
    # the server is a gateway over them and loads only the tokenizer; without, it runs the
    # built-in engine in-process.
    backends: Annotated[list[str], NoDecode] = []
    backend_check_s: float = 1.0  # how often the gateway checks each backend's health
    # Where rate-limit counters live: "memory://" (this process), or "redis://host:port"
    # (shared by every replica, so N replicas allow the limit once, not N times).
    rate_limit_storage: str = "memory://"

    # The training loop
    cycle_interval_s: float = 600.0  # how often the worker considers a cycle
    cycle_min_feedback: int = 50  # new votes needed before a cycle runs
    # A JSON file of the cycle's recipe, overriding its defaults section by section, e.g.
    # {"reward": {"max_length": 64}, "ppo": {"steps": 20, "max_new_tokens": 32}}
    cycle_config: Path | None = None
    auto_promote: bool = False  # promote a candidate that passes the gate, without an operator
    auto_promote_min_win_rate: float = 0.55  # reward-model win rate over the live adapter
    # ... and the low end of its 95% interval (bootstrap) above this: 0.5 asks for a
    # candidate better than the live adapter with 95% confidence; -1 turns it off
    auto_promote_min_win_rate_low: float = 0.5
    # ... and the reward model that judged it must agree with the voters beyond chance: the
    # low end of its held-out margin's 90% interval (a one-sided 95% bound) at least this
    # (in reward std units; no held-out pairs count as -inf); -inf turns it off
    auto_promote_min_reward_margin_low: float = 0.0
    auto_promote_max_kl: float = 5.0  # nats per answer to the base model
    auto_promote_max_degenerate: float = 0.1  # share of empty or degenerate answers
    # The live watch (`flywheel watch`): how often the worker scores newly served answers
    # with the current reward model and judges the live adapter (feedback/watch.py).
    watch_interval_s: float = 300.0
    # Roll back, as the scheduler, when the live adapter's thumbs-up rate is significantly
    # below its predecessor's (one-sided two-proportion z-test at this alpha, with at least
    # this many rated answers on each side, over the last 14 days).
    auto_rollback: bool = False
    auto_rollback_min_votes: int = 50
    auto_rollback_alpha: float = 0.01
    # Rewrites train (as demonstrations and chosen answers) only once an operator accepts
    # them in the review queue; off by default, so an unattended loop learns from them at
    # once, as before the queue (dismissing or excluding one takes it back either way).
    review_rewrites: bool = False

    # AI feedback (`flywheel judge`): the judge that votes and that evaluation asks, named
    # by a function (module:function), or a model at an OpenAI-compatible URL, or a local
    # model alone; the API key of its endpoint; the rubric it judges by (default: the one
    # in flywheel/judge/rubric.md).
    judge: str | None = None
    judge_url: str | None = None
    judge_model: str | None = None
    judge_api_key: str | None = None
    judge_key: str | None = None  # the judge user's own API key, which it votes with
    judge_rubric: Path | None = None
    # At most this share of the training pairs and labels comes from judges' votes.
    ai_feedback_max_share: float = 0.25

    @field_validator("ai_feedback_max_share")
    @classmethod
    def _a_share(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"a share is in [0, 1], not {value}")
        return value

    @field_validator("torch_threads", "threads")
    @classmethod
    def _positive_threads(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"at least 1 thread, not {value}")
        return value

    @field_validator("keep_alive_s")
    @classmethod
    def _positive_keep_alive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"keep-alive is at least 1 second, not {value}")
        return value

    def worker_threads(self) -> int:
        """The threads for blocking work (`threads`, default 4 per core, at most 32)."""
        return self.threads or min(32, 4 * len(os.sched_getaffinity(0)))

    def serving_torch_threads(self) -> int | None:
        """The torch CPU threads a serving process should use (`torch_threads`), or None
        to leave torch as OMP_NUM_THREADS set it."""
        if self.torch_threads is not None:
            return self.torch_threads
        if os.environ.get("OMP_NUM_THREADS"):
            return None
        return max(1, len(os.sched_getaffinity(0)) - 1)

    @property
    def judge_configured(self) -> bool:
        return self.judge is not None or self.judge_model is not None

    @field_validator("previous_secret_keys", "allowed_origins", "backends", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("previous_secret_keys")
    @classmethod
    def _long_enough(cls, keys: list[str]) -> list[str]:
        if any(len(key) < MIN_SECRET_KEY_CHARS for key in keys):
            raise ValueError(f"each key needs at least {MIN_SECRET_KEY_CHARS} characters: "
                             "cookies signed with a shorter one could be forged")
        return keys

    @property
    def session_keys(self) -> list[str]:
        """The keys that verify session cookies; the first one signs new ones."""
        return [self.secret_key, *self.previous_secret_keys]

    def resolved_secret_key(self) -> str:
        """The configured secret, else one generated once and kept in the data directory
        (so sessions survive restarts and servers sharing the directory agree). A key
        shorter than MIN_SECRET_KEY_CHARS, configured or stored, is refused."""
        if self.secret_key is not None:
            if len(self.secret_key) < MIN_SECRET_KEY_CHARS:
                raise FlywheelError(
                    f"FLYWHEEL_SECRET_KEY has {len(self.secret_key)} characters, fewer than "
                    f"{MIN_SECRET_KEY_CHARS}: session cookies signed with it could be forged. "
                    "Set a longer one (python -c 'import secrets; print(secrets.token_hex(32))'"
                    "), or unset it to have one kept in the data directory.")
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            _publish_secret_key(path)
        try:
            key = path.read_text().strip()
        except UnicodeDecodeError:
            key = ""
        if len(key) < MIN_SECRET_KEY_CHARS:
            raise FlywheelError(
                f"the secret key in {path} is not a key of at least {MIN_SECRET_KEY_CHARS} "
                "characters (an interrupted start may have left it empty): delete it to have "
                "a new one made (browser sessions then start afresh), or set "
                "FLYWHEEL_SECRET_KEY.")
        return key

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


def _publish_secret_key(path: Path) -> None:
    """Put a new random key at `path`, whole or not at all: written to a temporary file,
    fsynced, then hard-linked into place, which fails if another server starting at the
    same moment got there first (its key is then the one everybody reads)."""
    key = secrets.token_hex(32)
    private_dirs(path.parent)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        os.link(temp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except FileExistsError:
        pass
    finally:
        temp.unlink(missing_ok=True)
