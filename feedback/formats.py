"""Preference data files: parsing and writing, no database (DESIGN §4).

A data file is JSON lines, optionally gzipped (recognised by its magic bytes). Each line
is one of:

* TRL preference: `prompt`, `chosen`, `rejected`, as strings or as message lists
  (`[{"role", "content"}]`); or the implicit-prompt variant, only `chosen` / `rejected`
  message lists that share the prompt as a common prefix;
* TRL unpaired: `prompt`, `completion`, `label` (true or false);
* Anthropic HH: `chosen` / `rejected` transcripts of `\\n\\nHuman:` / `\\n\\nAssistant:`
  turns. Each turn's text is stripped, and consecutive turns of the same speaker are
  merged into one message joined by a blank line ("\\n\\n"); the prompt is the common
  prefix and each completion the one assistant message that remains.

Every line becomes a `Preference` or an `Unpaired` record: a prompt (messages that end
with a user turn, an optional system message first; a prompt string is one user message)
and assistant completions, as plain strings. Completions may be empty (the HH dev set
has empty chosen answers, rows 1480 and 1505); user and system messages may not.
Strings are kept as they are, except HH turns, which are stripped. `key` is a stable
content hash of the record, so importing a file twice adds nothing.
"""

import gzip
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from feedback.private import FILE_MODE

ROLES = ("system", "user", "assistant")
GZIP_MAGIC = b"\x1f\x8b"
PROGRESS_EVERY = 1000  # lines between progress callbacks

Progress = Callable[[int, int | None], None]  # (done, total or None)


class FormatError(ValueError):
    """A data file that cannot be read, or one of its lines; prints as `FILE:LINE: reason`."""

    def __init__(self, reason: str, *, path: str | Path | None = None,
                 line: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.path, self.line = reason, path, line

    def at(self, path: str | Path, line: int) -> "FormatError":
        return FormatError(self.reason, path=path, line=line)

    def __str__(self) -> str:
        where = ":".join(str(part) for part in (self.path, self.line) if part is not None)
        return f"{where}: {self.reason}" if where else self.reason


class Turn(NamedTuple):
    role: str
    content: str


def _check_prompt(prompt: tuple[Turn, ...]) -> None:
    if not prompt:
        raise FormatError("prompt is empty")
    for number, turn in enumerate(prompt, 1):
        if turn.role not in ROLES:
            raise FormatError(f"unknown role {turn.role!r} in prompt message {number} "
                              "(expected system, user or assistant)")
        if turn.role == "system" and number > 1:
            raise FormatError("a system message may only come first in the prompt")
        if turn.role != "assistant" and not turn.content.strip():
            raise FormatError(f"prompt message {number} ({turn.role}) is empty")
    if prompt[-1].role != "user":
        raise FormatError("prompt must end with a user turn")


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _messages(prompt: tuple[Turn, ...]) -> list[dict[str, str]]:
    return [{"role": turn.role, "content": turn.content} for turn in prompt]


def _answer(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


@dataclass(frozen=True)
class Preference:
    """A prompt and two answers to it, the chosen one first. Checked when built."""

    prompt: tuple[Turn, ...]
    chosen: str
    rejected: str

    def __post_init__(self) -> None:
        _check_prompt(self.prompt)
        if self.chosen == self.rejected:
            raise FormatError("chosen and rejected are identical")

    @cached_property
    def key(self) -> str:
        return _digest("preference", self.prompt, self.chosen, self.rejected)

    def to_trl(self) -> dict[str, Any]:
        """The TRL conversational preference row."""
        return {"prompt": _messages(self.prompt), "chosen": _answer(self.chosen),
                "rejected": _answer(self.rejected)}


@dataclass(frozen=True)
class Unpaired:
    """A prompt, one answer, and whether the answer is good. Checked when built."""

    prompt: tuple[Turn, ...]
    completion: str
    label: bool

    def __post_init__(self) -> None:
        _check_prompt(self.prompt)

    @cached_property
    def key(self) -> str:
        return _digest("unpaired", self.prompt, self.completion, self.label)

    def to_trl(self) -> dict[str, Any]:
        """The TRL conversational unpaired row."""
        return {"prompt": _messages(self.prompt), "completion": _answer(self.completion),
                "label": self.label}


@dataclass(frozen=True)
class Demonstration:
    """A prompt and an answer to imitate (a user's rewrite), for SFT. Checked when built.
    Written by `feedback export --format sft`; not a record that data files are read as."""

    prompt: tuple[Turn, ...]
    completion: str

    def __post_init__(self) -> None:
        _check_prompt(self.prompt)

    def to_trl(self) -> dict[str, Any]:
        """The TRL conversational language-modeling row: the whole exchange as `messages`."""
        return {"messages": _messages(self.prompt) + _answer(self.completion)}


Record = Preference | Unpaired


# -- parsing ---------------------------------------------------------------------------


def _turns(value: Any, field: str) -> list[Turn]:
    if not isinstance(value, list) or not value:
        raise FormatError(f"'{field}' must be a string or a non-empty list of messages")
    turns = []
    for number, message in enumerate(value, 1):
        where = f"'{field}' message {number}"
        if not isinstance(message, dict):
            raise FormatError(f"{where} is not an object with 'role' and 'content'")
        for name in ("role", "content"):
            if name not in message:
                raise FormatError(f"{where} has no '{name}'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise FormatError(f"unknown role {role!r} in {where} "
                              "(expected system, user or assistant)")
        if not isinstance(content, str):
            raise FormatError(f"{where}: 'content' must be a string")
        turns.append(Turn(role, content))
    return turns


def _prompt(value: Any) -> tuple[Turn, ...]:
    if isinstance(value, str):
        return (Turn("user", value),)
    return tuple(_turns(value, "prompt"))


def _completion(value: Any, field: str, prompt: tuple[Turn, ...]) -> str:
    """One assistant answer: a string, or a list holding one assistant message (a list
    that repeats the prompt first is accepted too)."""
    if isinstance(value, str):
        return value
    turns = _turns(value, field)
    if tuple(turns[:len(prompt)]) == prompt:
        turns = turns[len(prompt):]
    if len(turns) != 1 or turns[0].role != "assistant":
        raise FormatError(f"'{field}' must be a single assistant message")
    return turns[0].content


def _split_pair(chosen: list[Turn], rejected: list[Turn], what: str) -> Preference:
    """Prompt = the common prefix; each side must then be one assistant message."""
    if chosen == rejected:
        raise FormatError("chosen and rejected are identical")
    common = 0
    while common < min(len(chosen), len(rejected)) and chosen[common] == rejected[common]:
        common += 1
    tails = chosen[common:], rejected[common:]
    if any(len(tail) != 1 or tail[0].role != "assistant" for tail in tails):
        raise FormatError(f"chosen and rejected {what} must differ only in one final "
                          "assistant message")
    return Preference(tuple(chosen[:common]), tails[0][0].content, tails[1][0].content)


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def _hh_turns(text: str, field: str) -> list[Turn]:
    parts = _HH_TURN.split("\n\n" + text.lstrip())
    if parts[0]:
        raise FormatError(f"'{field}' is not an Anthropic HH transcript "
                          r"(expected '\n\nHuman: …\n\nAssistant: …' turns)")
    turns: list[Turn] = []
    for speaker, raw in zip(parts[1::2], parts[2::2], strict=True):
        role, content = ("user" if speaker == "Human" else "assistant"), raw.strip()
        if turns and turns[-1].role == role:  # merge consecutive turns of one speaker
            content = "\n\n".join(part for part in (turns.pop().content, content) if part)
        turns.append(Turn(role, content))
    return turns


def _required(obj: dict[str, Any], *fields: str) -> None:
    for field in fields:
        if field not in obj:
            raise FormatError(f"missing field '{field}'")


def parse_record(obj: Any) -> Record:
    """The record one parsed JSON line holds; `FormatError` (without a location) if none."""
    if not isinstance(obj, dict):
        raise FormatError("line is not a JSON object")
    if "completion" in obj or "label" in obj:
        _required(obj, "prompt", "completion", "label")
        if not isinstance(obj["label"], bool):
            raise FormatError("'label' must be true or false")
        prompt = _prompt(obj["prompt"])
        return Unpaired(prompt, _completion(obj["completion"], "completion", prompt),
                        obj["label"])
    if "chosen" not in obj and "rejected" not in obj:
        if "prompt" in obj:
            raise FormatError("a prompt alone is no feedback: missing fields 'chosen' and "
                              "'rejected' (or 'completion' and 'label')")
        raise FormatError("not a known record: expected prompt/chosen/rejected, "
                          "prompt/completion/label, or chosen/rejected fields")
    _required(obj, "chosen", "rejected")
    chosen, rejected = obj["chosen"], obj["rejected"]
    if "prompt" in obj:
        prompt = _prompt(obj["prompt"])
        return Preference(prompt, _completion(chosen, "chosen", prompt),
                          _completion(rejected, "rejected", prompt))
    if isinstance(chosen, str) and isinstance(rejected, str):
        return _split_pair(_hh_turns(chosen, "chosen"), _hh_turns(rejected, "rejected"),
                           "transcripts")
    if isinstance(chosen, list) and isinstance(rejected, list):
        return _split_pair(_turns(chosen, "chosen"), _turns(rejected, "rejected"),
                           "conversations")
    raise FormatError("without a 'prompt', 'chosen' and 'rejected' must both be HH "
                      "transcripts (strings) or both message lists")


def parse_json(raw: bytes, *, first: bool = False) -> Any:
    """One line's JSON value; `FormatError` if it is not UTF-8 or not JSON."""
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError:
        raise FormatError("line is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(f"line is not JSON ({e.msg} at column {e.colno})") from None


# -- files -----------------------------------------------------------------------------


def iter_lines(path: str | Path, *,
               on_progress: Progress | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) for each non-blank line. `on_progress(bytes read, file size)`.

    A file that cannot be opened or decompressed raises `FormatError` naming the file.
    """
    path = Path(path)
    try:
        raw = path.open("rb")
    except OSError as e:
        raise FormatError(f"cannot read: {e.strerror or e}", path=path) from None
    number = 0
    with raw:
        size = os.fstat(raw.fileno()).st_size
        gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if gzipped else raw
        try:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    yield number, line
                if on_progress and number % PROGRESS_EVERY == 0:
                    on_progress(raw.tell(), size)
        except (OSError, EOFError) as e:  # zlib.error and BadGzipFile are OSErrors
            raise FormatError(f"cannot read after line {number}: {e}", path=path) from None
    if on_progress:
        on_progress(size, size)


def read_records(path: str | Path) -> Iterator[Record]:
    """Every record of a data file; the first bad line raises `FormatError` (FILE:LINE)."""
    for number, raw in iter_lines(path):
        try:
            yield parse_record(parse_json(raw, first=number == 1))
        except FormatError as e:
            raise e.at(path, number) from None


def write_json_lines(path: str | Path, rows: Iterable[dict[str, Any]], *,
                     on_progress: Progress | None = None) -> int:
    """Write rows as JSON lines (gzipped if the name ends in .gz), reproducibly, through
    a temporary file renamed at the end: a failure leaves no partial file. The file is
    0600: it holds users' conversations. Returns the number of rows; `on_progress(rows
    written, None)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    count = 0
    try:
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb") as raw:
            # A fixed mtime and no name in the gzip header keep the bytes reproducible.
            out = (gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0,
                                 compresslevel=6) if path.suffix == ".gz" else raw)
            with out:
                for row in rows:
                    out.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
                    count += 1
                    if on_progress and count % PROGRESS_EVERY == 0:
                        on_progress(count, None)
        os.replace(temp, path)
    except OSError as e:
        temp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if on_progress:
        on_progress(count, count)
    return count
