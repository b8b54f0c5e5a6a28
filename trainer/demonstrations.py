"""Demonstrations for SFT (the classic recipe's stage 1): the users' rewrites of answers.

Each rewrite in the store that operators did not leave out (`feedback.queries.exclusions`;
with `approved_rewrites_only`, `FLYWHEEL_REVIEW_REWRITES=1`, each one they approved) becomes
one example: the conversation up to the user turn that the
rewritten answer replied to, and the improved text. Like the preference pairs
(`trainer.data`), each is weighted by its user's annotator weight, duplicates (the same
prompt and text) are kept once at their heaviest, and no one user's share goes over the cap.
"""

from dataclasses import dataclass

from sqlalchemy import Engine

from feedback.db import session_scope
from feedback.models import MessageRole
from feedback.queries.annotators import annotator_weights
from feedback.queries.conversations import message_paths
from feedback.queries.exclusions import training_filter
from feedback.queries.votes import iter_rewrites
from trainer.data import (
    BATCH,
    DEFAULT_MAX_USER_SHARE,
    SOURCE_WEIGHTS,
    _batches,
    _messages,
    _prompt_key,
    cap_user_share,
)

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Demonstration:
    """A prompt (messages ending with a user turn) and the answer to imitate."""

    prompt: Messages
    completion: str
    weight: float = 1.0
    user_id: int | None = None  # who wrote it (for the per-user cap)
    conversation_id: int | str | None = None

    @property
    def key(self) -> tuple:
        return _prompt_key(self.prompt), self.completion


def demonstrations(engine: Engine, *, annotator_weighting: bool = True,
                   approved_rewrites_only: bool = False,
                   max_user_share: float | None = DEFAULT_MAX_USER_SHARE,
                   seed: int = 0) -> list[Demonstration]:
    """Every rewrite of the store as a demonstration, in the order they were written,
    weighted by annotator quality (unless `annotator_weighting` is off), deduplicated and
    capped per user (module doc)."""
    with session_scope(engine) as session:
        kept = training_filter(session, approved_rewrites_only=approved_rewrites_only)
        rewrites = list(filter(kept.keeps_rewrite, iter_rewrites(session)))
        weights = annotator_weights(session) if annotator_weighting else {}
        found: list[Demonstration] = []
        for chunk in _batches(rewrites, BATCH):
            paths = message_paths(session, message_ids={r.message_id for r in chunk})
            for rewrite in chunk:
                path = paths.get(rewrite.message_id, [])
                if len(path) < 2 or path[-2].role != MessageRole.user:
                    continue  # an answer to no user turn is no demonstration
                weight = SOURCE_WEIGHTS["rewrite"] * min(1.0, weights.get(rewrite.user_id, 1.0))
                found.append(Demonstration(_messages(path[:-1]), rewrite.content, weight,
                                           rewrite.user_id, path[-1].conversation_id))
    kept: dict[tuple, Demonstration] = {}
    for example in found:  # a duplicate keeps the first one's place and the heaviest weight
        held = kept.get(example.key)
        if held is None or example.weight > held.weight:
            kept[example.key] = example
    return cap_user_share(list(kept.values()), max_user_share, seed=seed)
