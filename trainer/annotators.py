"""Each user's agreement with the reward model a cycle has just trained, for annotator
quality (`feedback.queries.annotators`) and so for the weights of their votes next time.

Measured on the user's own votes, one item each:

* a side-by-side pick of A or B (or a ranking's pairs): the reward model agrees when it
  scores the picked answer higher;
* a thumb: the reward model agrees when it scores an up-voted answer above, and a
  down-voted one below, the median score of every thumbed answer.

The reward model was trained on these votes (most users' votes are the only evidence it
has), so the figures are in-sample: an honest user agrees well, while random clicks and
inverted (adversarial) votes, which the majority outweighs, agree at chance or worse.
"""

import logging
import statistics
from collections import defaultdict

from sqlalchemy import Engine

from feedback.db import session_scope
from feedback.queries.annotators import save_reward_model_agreement
from trainer.data import Label, Pair, store_feedback
from trainer.reward import RewardModel

log = logging.getLogger(__name__)
PAIR_SOURCES = ("choice", "ranking")  # the user's own verdicts between two answers


def reward_model_agreement(pairs: list[Pair], labels: list[Label],
                           model: RewardModel) -> dict[int, tuple[float | None, int]]:
    """user id -> (share of the user's picks and thumbs the model agrees with, items)."""
    pairs = [p for p in pairs if p.user_id is not None and p.source in PAIR_SOURCES]
    thumbs = [x for x in labels if x.user_id is not None and x.source == "thumb"]
    prompts = [p.prompt for p in pairs] * 2 + [x.prompt for x in thumbs]
    answers = ([p.chosen for p in pairs] + [p.rejected for p in pairs]
               + [x.completion for x in thumbs])
    scores = model.score(prompts, answers, normalized=False).float().cpu().tolist() \
        if prompts else []
    chosen, rejected, rated = (scores[:len(pairs)], scores[len(pairs):2 * len(pairs)],
                               scores[2 * len(pairs):])
    agree: dict[int, int] = defaultdict(int)
    items: dict[int, int] = defaultdict(int)
    for pair, good, bad in zip(pairs, chosen, rejected, strict=True):
        items[pair.user_id] += 1
        agree[pair.user_id] += good > bad
    middle = statistics.median(rated) if rated else 0.0
    for label, score in zip(thumbs, rated, strict=True):
        items[label.user_id] += 1
        agree[label.user_id] += (score > middle) == label.label
    return {user: (agree[user] / n, n) for user, n in items.items()}


def record_annotator_quality(engine: Engine, model: RewardModel, *, version: str) -> int:
    """Measure every user's agreement with `model` and store it (replacing the last
    measurement). Returns how many users were measured."""
    with session_scope(engine) as session:
        pairs, labels, _ = store_feedback(session)
    agreement = reward_model_agreement(pairs, labels, model)
    with session_scope(engine) as session:
        save_reward_model_agreement(session, reward_model=version, agreement=agreement)
    log.info("annotator quality: %d users measured against reward model %s",
             len(agreement), version)
    return len(agreement)
