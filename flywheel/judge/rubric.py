"""The rubric a chat-model judge follows (its constitution), and the messages it gets.

A rubric is a Markdown or text file; each list item (`- `, `* ` or `1. `) is one
principle. The default ships beside this module (`rubric.md`).
"""

import re
from dataclasses import dataclass
from pathlib import Path

from flywheel.errors import FlywheelError

DEFAULT_RUBRIC = Path(__file__).with_name("rubric.md")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.+?)\s*$")


@dataclass(frozen=True)
class Rubric:
    principles: tuple[str, ...]

    def pair_messages(self, prompt: str, first: str, second: str) -> list[dict[str, str]]:
        """The chat messages that ask which of two answers is better."""
        return [
            {"role": "system", "content": self._preamble("compare two answers to a "
                                                         "conversation")
             + "Reply with one word: A if answer A is better, B if answer B is better, "
               "tie if neither is."},
            {"role": "user", "content": f"[Conversation]\n{prompt}\n\n[Answer A]\n{first}"
                                        f"\n\n[Answer B]\n{second}\n\nWhich answer is better? "
                                        "Reply with A, B or tie."},
        ]

    def single_messages(self, prompt: str, answer: str) -> list[dict[str, str]]:
        """The chat messages that ask whether one answer is good."""
        return [
            {"role": "system", "content": self._preamble("rate an answer to a conversation")
             + "Reply with one word: good or bad."},
            {"role": "user", "content": f"[Conversation]\n{prompt}\n\n[Answer]\n{answer}\n\n"
                                        "Is this answer good or bad? Reply with good or bad."},
        ]

    def _preamble(self, task: str) -> str:
        listed = "\n".join(f"- {p}" for p in self.principles)
        return f"You are a careful judge. You {task} by these principles:\n{listed}\n"


def conversation_text(messages: list[dict[str, str]]) -> str:
    """A thread as a judge reads it: a first user turn alone is its own text; a longer
    thread is `Role: text` lines."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def load_rubric(path: str | Path | None = None) -> Rubric:
    """The rubric at `path` (default: the one that ships). Raises FlywheelError for a file
    that cannot be read or lists no principle."""
    path = Path(path) if path is not None else DEFAULT_RUBRIC
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FlywheelError(f"cannot read the rubric {path}: {e}") from None
    principles = tuple(m.group(1) for line in text.splitlines() if (m := _ITEM.match(line)))
    if not principles:
        raise FlywheelError(f"the rubric {path} lists no principle (one per '- ' line)")
    return Rubric(principles)
