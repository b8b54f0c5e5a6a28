"""Logging for every process: readable lines, or one JSON object per line for log
shippers (`FLYWHEEL_LOG_FORMAT=json`). Fields passed as `extra={...}` appear in both."""

import json
import logging
import sys
import time

# Attributes every LogRecord has; anything else on a record came from `extra`
# (uvicorn adds a colour copy of its message, which is noise here).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}


def _extra(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z", "level": record.levelname,
                 "logger": record.name, "message": record.getMessage(), **_extra(record)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _extra(record).items())
        line = super().format(record)
        return f"{line} {fields}" if fields else line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (a captured or redirected stderr
    that is later closed never breaks logging)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    """For long-running processes: our format on the root logger, and no progress bars
    from transformers (they are for terminals, not logs)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "migrating…" on every start
    # A line per HTTP call: a gateway checks each backend every second.
    logging.getLogger("httpx").setLevel(logging.WARNING)
