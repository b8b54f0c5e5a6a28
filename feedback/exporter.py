"""Export feedback as JSON lines that `datasets` and TRL trainers read as they are.

* `dpo`: TRL preference rows, conversational: `{"prompt": [messages from the root down
  to the user turn], "chosen": [{"role": "assistant", …}], "rejected": [...]}`. One row
  per comparison decided "a" or "b" (the winner is chosen) and k·(k−1)/2 rows per
  ranking of k answers; ties and "both bad" are no preference and are left out.
* `kto`: TRL unpaired rows, `{"prompt": [...], "completion": [...], "label": bool}`,
  one per rating (thumb up is true).
* In dpo and kto, a row from a judge's vote (AI feedback: a user with role `judge`) also
  holds `"ai_feedback": true`, so it can be told apart or left out.
* `sft`: TRL conversational language-modeling rows, `{"messages": [the thread above the
  rewritten answer, …, {"role": "assistant", "content": the rewrite}]}`, one per rewrite.
* `log`: every record of the store in its final state, for replay (`feedback.logformat`):
  the feedback, the adapter registry with its audit trail, training runs and annotator
  quality.

Votes that operators left out of training (`feedback.queries.exclusions`) are left out of
every format; in the log, so are the review items and exclusions that name them (the
exclusions of messages and users stay, so a replay leaves out their later votes too).
With `approved_rewrites_only` (`FLYWHEEL_REVIEW_REWRITES=1`), sft holds approved rewrites
only.

Rows come in id order, so the same store always gives the same bytes (the log's header
time aside). Rows that `feedback.formats` would reject on import (a prompt that does
not end with a user turn, say) are left out of dpo, kto and sft, so every dpo and kto
export imports (sft is export only: a row holds no answer to prefer it to).
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from functools import partial
from itertools import combinations, islice
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session, select

from feedback.db import session_scope
from feedback.formats import (
    Demonstration,
    FormatError,
    Preference,
    Progress,
    Turn,
    Unpaired,
    write_json_lines,
)
from feedback.logformat import KEYS, MODELS, REFERENCES, header, to_log
from feedback.models import Choice, Comparison, Message
from feedback.queries.conversations import iter_conversations, iter_messages, message_paths
from feedback.queries.exclusions import TrainingFilter, training_filter
from feedback.queries.judging import judge_ids
from feedback.queries.users import iter_users
from feedback.queries.votes import iter_comparisons, iter_flags, iter_ratings, iter_rewrites

Format = Literal["dpo", "kto", "sft", "log"]
LEFT_OUT_IN_PART = ("rating", "comparison", "rewrite", "flag", "review_item")
BATCH = 500  # votes per message lookup

T = TypeVar("T")


def export_feedback(engine: Engine, *, fmt: Format, out: Path,
                    on_progress: Progress | None = None,
                    approved_rewrites_only: bool = False) -> int:
    """Write the store's feedback to `out` (gzipped if it ends in .gz) and return the
    number of records. A failed export leaves no file behind. `on_progress(records
    written, None)`."""
    if fmt not in ROWS:
        raise ValueError(f"unknown export format {fmt!r} (expected dpo, kto, sft or log)")
    if engine.dialect.name == "postgresql":  # one snapshot, even while the server writes
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with session_scope(engine) as session:
        kept = training_filter(session, approved_rewrites_only=approved_rewrites_only)
        written = write_json_lines(out, ROWS[fmt](session, kept), on_progress=on_progress)
    return written - 1 if fmt == "log" else written  # the log's header is no record


def _dpo_rows(session: Session, kept: TrainingFilter) -> Iterator[dict[str, Any]]:
    judges = judge_ids(session)
    comparisons = filter(kept.keeps_comparison, iter_comparisons(session, decided_only=True))
    for chunk in _batches(comparisons, BATCH):
        paths = message_paths(session, message_ids={
            message_id for c in chunk for message_id in c.candidate_ids})
        for comparison in chunk:
            for winner, loser in _preferences(comparison):
                if winner in paths and loser in paths:
                    yield from _marked(comparison.user_id in judges, _trl(
                        Preference, _prompt(paths[winner]), paths[winner][-1].content,
                        paths[loser][-1].content))


def _preferences(comparison: Comparison) -> list[tuple[int, int]]:
    """(winner, loser) pairs: one for a choice of a or b, all pairs of a ranking."""
    if comparison.ranking:
        return list(combinations(comparison.ranking, 2))
    first, second = comparison.candidate_ids[:2]
    return {Choice.a: [(first, second)], Choice.b: [(second, first)]}.get(comparison.choice, [])


def _kto_rows(session: Session, kept: TrainingFilter) -> Iterator[dict[str, Any]]:
    judges = judge_ids(session)
    for chunk in _batches(filter(kept.keeps_rating, iter_ratings(session)), BATCH):
        paths = message_paths(session, message_ids={rating.message_id for rating in chunk})
        for rating in chunk:
            path = paths.get(rating.message_id)
            if path:
                yield from _marked(rating.user_id in judges, _trl(
                    Unpaired, _prompt(path), path[-1].content, rating.thumb == 1))


def _sft_rows(session: Session, kept: TrainingFilter) -> Iterator[dict[str, Any]]:
    for chunk in _batches(filter(kept.keeps_rewrite, iter_rewrites(session)), BATCH):
        paths = message_paths(session, message_ids={rewrite.message_id for rewrite in chunk})
        for rewrite in chunk:
            path = paths.get(rewrite.message_id)
            if path:
                yield from _trl(Demonstration, _prompt(path), rewrite.content)


def _prompt(path: list[Message]) -> tuple[Turn, ...]:
    """The thread above an answer."""
    return tuple(Turn(message.role, message.content) for message in path[:-1])


def _trl(record_type: type[Preference | Unpaired | Demonstration], *fields: Any
         ) -> Iterator[dict[str, Any]]:
    try:
        yield record_type(*fields).to_trl()
    except FormatError:  # not importable as TRL data: leave it out
        return


def _marked(ai_feedback: bool, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for row in rows:
        yield {**row, "ai_feedback": True} if ai_feedback else row


def _log_rows(session: Session, kept: TrainingFilter) -> Iterator[dict[str, Any]]:
    yield header("export")
    kept = replace(kept, approved_rewrites=None)  # awaiting approval is not left out
    tables = {"user": iter_users, "conversation": iter_conversations,
              "message": iter_messages,
              "rating": lambda s: filter(kept.keeps_rating, iter_ratings(s)),
              "comparison": lambda s: filter(kept.keeps_comparison,
                                             iter_comparisons(s, decided_only=False)),
              "rewrite": lambda s: filter(kept.keeps_rewrite, iter_rewrites(s)),
              "flag": lambda s: filter(kept.keeps_flag, iter_flags(s))}
    written: dict[str, set[int]] = defaultdict(set)  # ids of the types left out in part
    for kind in MODELS:
        for record in tables.get(kind, partial(_in_key_order, kind=kind))(session):
            line = to_log(kind, record)
            if not _names_a_left_out_record(kind, line, written):
                if kind in LEFT_OUT_IN_PART:
                    written[kind].add(line["id"])
                yield line


def _names_a_left_out_record(kind: str, line: dict[str, Any],
                             written: dict[str, set[int]]) -> bool:
    """Whether the record refers to a vote (or review item) left out of the log; an
    exclusion's review item left out is forgotten (set to null) instead."""
    for name, target in REFERENCES[kind].items():
        value = line.get(name)
        if target in LEFT_OUT_IN_PART and value is not None and value not in written[target]:
            if name != "review_item_id":
                return True
            line[name] = None
    return False


def _in_key_order(session: Session, *, kind: str) -> Iterator[Any]:
    model = MODELS[kind]
    yield from session.exec(select(model).order_by(getattr(model, KEYS[kind])))


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


ROWS: dict[str, Callable[[Session, TrainingFilter], Iterator[dict[str, Any]]]] = {
    "dpo": _dpo_rows, "kto": _kto_rows, "sft": _sft_rows, "log": _log_rows}
