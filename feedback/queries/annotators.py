"""Annotator quality: how far each user's votes can be trusted, from the votes themselves.

For every user with votes (ratings, decided comparisons, rewrites, flags):

* **careless patterns** in the raw votes, once a user has `MIN_VOTES` of a kind:
  `always_a` / `always_b` / `always_tie` — at least `PATTERN_SHARE` of their
  side-by-side picks name the same position, or no winner (the server shows the two
  answers in random order, so an honest user's share of "A" is near one half whatever
  they prefer; a judge that always names the first answer shown ties every pair, as
  its two orders disagree); `always_up` / `always_down` — at
  least `PATTERN_SHARE` of their thumbs point one way while the other users' thumbs do not
  (at most `CROWD_SHARE` the same way: a model everyone likes is not a careless crowd);
* **consensus agreement**: on items judged by two or more users, how often the user
  agrees with the majority of the *other* people (leave-one-out; even splits are skipped).
  Judges (users with role `judge`, whose votes are AI feedback) are measured against
  people like anyone, but people are never measured against judges, and the crowd
  medians below are the people's.
  An item is a first user turn's text with the answer texts shown: the same two answers
  in a side-by-side pick (in either order), or the same answer for a thumb. Such items
  arise when users ask the same question and get the same answers — the simulated crowd
  asks fixed calibration prompts with a fixed sampling seed, which the server's seeded
  sampling answers identically;
* **reward-model agreement**: the share of the user's picks and thumbs that the last
  trained reward model agrees with, stored by the trainer (`trainer.annotators`) in the
  `annotator_quality` table;
* `random`: agreement with the reward model that cannot be told from chance while being
  clearly below the crowd's median agreement (the reward model judges all of a user's
  picks and thumbs; the few shared items of the consensus are too few to tell an honest
  user with an odd taste from a coin, so they only lower the weight);
* **weight**: what `trainer.data` multiplies each of the user's pairs and labels by —
  `CARELESS_WEIGHT` for any pattern; otherwise, for each agreement measured on
  `MIN_ITEMS` items or more, (a − ½)/(m − ½) clipped to [`CARELESS_WEIGHT`, 1], where a
  is the user's agreement shrunk towards the crowd median m by `PRIOR_ITEMS` pseudo-votes;
  the smaller of the two. An honest user as good as the median weighs 1; a user who
  agrees no better than chance (or worse: an adversary) weighs `CARELESS_WEIGHT`.
"""

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from feedback.models import (
    AnnotatorQuality,
    Choice,
    Comparison,
    Flag,
    Message,
    Rating,
    Rewrite,
    User,
    utcnow,
)
from feedback.queries.judging import judge_ids

MIN_VOTES = 10  # votes of a kind before a pattern (or random clicking) is judged
MIN_ITEMS = 5  # items an agreement needs before it moves a weight (shrunk: see PRIOR_ITEMS)
PATTERN_SHARE = 0.9  # share of one answer that makes a pattern
CROWD_SHARE = 0.8  # ...unless the other users vote that way this often too
CARELESS_WEIGHT = 0.1
PRIOR_ITEMS = 10  # pseudo-votes at the crowd median that an agreement is shrunk with
Z = 1.645  # one-sided 95% for the "random" tests
BATCH = 500


@dataclass
class Annotator:
    """One row of `GET /api/annotators` (and of `flywheel users quality`)."""

    user_id: int
    handle: str
    votes: int
    consensus_agreement: float | None
    consensus_items: int
    reward_model_agreement: float | None
    reward_model_items: int
    pattern: str | None  # always_a, always_b, always_tie, always_up, always_down, random
    weight: float
    ai_feedback: bool = False  # a judge: its votes are AI feedback


@dataclass
class QualityReport:
    reward_model: str | None  # the reward model the agreements were measured with
    annotators: list[Annotator]


def annotator_quality(session: Session) -> QualityReport:
    """Every user with votes, in the order they joined (module doc)."""
    picks = _picks(session)
    thumbs = _thumbs(session)
    votes: Counter[int] = Counter()
    for model in (Rewrite, Flag):
        query = select(model.user_id, func.count()).group_by(model.user_id)
        votes.update(dict(session.exec(query).all()))
    votes.update(Counter(p.user_id for p in picks) + Counter(t.user_id for t in thumbs))
    decided = select(Comparison.user_id, func.count()).where(
        col(Comparison.ranking).is_not(None)).group_by(Comparison.user_id)
    votes.update(dict(session.exec(decided).all()))  # rankings: no pattern, but votes
    stored = {q.user_id: q for q in session.exec(select(AnnotatorQuality))}
    latest = max(stored.values(), key=lambda q: q.computed_at, default=None)
    judges = judge_ids(session)
    consensus = _consensus(picks, thumbs, judges)
    handles = dict(session.exec(select(User.id, User.handle)
                                .where(col(User.id).in_(list(votes)))).all()) if votes else {}
    rm = {u: (q.reward_model_agreement, q.reward_model_items) for u, q in stored.items()}
    rm_median = _crowd_median(v for u, v in rm.items() if u not in judges)
    consensus_median = _crowd_median(v for u, v in consensus.items() if u not in judges)
    choices: dict[int, Counter[str]] = defaultdict(Counter)
    for p in picks:
        choices[p.user_id][p.choice] += 1
    ups: dict[int, Counter[int]] = defaultdict(Counter)
    for t in thumbs:
        ups[t.user_id][t.thumb] += 1
    all_ups = sum(ups.values(), Counter())
    annotators = []
    for user_id in sorted(votes):
        agreed, items = consensus.get(user_id, (None, 0))
        rm_agreement, rm_items = rm.get(user_id, (None, 0))
        pattern = (_pick_pattern(choices[user_id])
                   or _thumb_pattern(ups[user_id], all_ups - ups[user_id]))
        if pattern is None and _random(rm_agreement, rm_items, rm_median):
            pattern = "random"
        weight = CARELESS_WEIGHT if pattern else min(
            _factor(rm_agreement, rm_items, rm_median),
            _factor(agreed, items, consensus_median))
        annotators.append(Annotator(
            user_id=user_id, handle=handles.get(user_id, str(user_id)), votes=votes[user_id],
            consensus_agreement=_round(agreed), consensus_items=items,
            reward_model_agreement=_round(rm_agreement), reward_model_items=rm_items,
            pattern=pattern, weight=round(weight, 3), ai_feedback=user_id in judges))
    return QualityReport(reward_model=latest.reward_model if latest else None,
                         annotators=annotators)


def annotator_weights(session: Session) -> dict[int, float]:
    """user id -> the weight its votes get in training (1.0 for users not listed)."""
    return {a.user_id: a.weight for a in annotator_quality(session).annotators}


def save_reward_model_agreement(session: Session, *, reward_model: str,
                                agreement: dict[int, tuple[float | None, int]]) -> None:
    """Replace the stored reward-model agreement: user id -> (agreement, items judged)."""
    session.exec(delete(AnnotatorQuality))
    now = utcnow()
    known = set(session.exec(select(User.id).where(col(User.id).in_(list(agreement)))))
    for user_id, (share, items) in sorted(agreement.items()):
        if user_id not in known:  # deleted since its votes were read
            continue
        session.add(AnnotatorQuality(user_id=user_id, reward_model=reward_model,
                                     reward_model_agreement=share, reward_model_items=items,
                                     computed_at=now))
    session.flush()


# -- raw votes -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Pick:
    id: int
    user_id: int
    choice: str
    item: tuple | None  # (prompt text, frozenset of the two answer texts); None: no overlap
    winner: str | None  # the picked answer's text (None for tie / both bad)


@dataclass(frozen=True)
class _Thumb:
    user_id: int
    thumb: int
    item: tuple | None  # (prompt text, answer text) for a first turn


def _picks(session: Session) -> list[_Pick]:
    rows = session.exec(select(Comparison.id, Comparison.user_id, Comparison.choice,
                               Comparison.candidate_ids, Comparison.prompt_message_id)
                        .where(col(Comparison.choice).is_not(None))
                        .order_by(col(Comparison.id))).all()
    rows = [r for r in rows if len(r[3]) == 2]
    ids = sorted({m for r in rows for m in (*r[3], r[4])})
    texts: dict[int, tuple[str, int | None]] = {}
    for start in range(0, len(ids), BATCH):
        query = select(Message.id, Message.content, Message.parent_id).where(
            col(Message.id).in_(ids[start:start + BATCH]))
        texts.update({i: (content, parent) for i, content, parent in session.exec(query)})
    picks = []
    for comparison_id, user_id, choice, (a, b), prompt_id in rows:
        prompt, parent = texts.get(prompt_id, ("", 0))
        answers = texts.get(a, ("",))[0], texts.get(b, ("",))[0]
        item = (prompt, frozenset(answers)) if parent is None and answers[0] != answers[1] \
            else None
        winner = {Choice.a: answers[0], Choice.b: answers[1]}.get(choice)
        picks.append(_Pick(comparison_id, user_id, choice, item, winner))
    return picks


def _thumbs(session: Session) -> list[_Thumb]:
    answer, prompt = aliased(Message), aliased(Message)
    query = (select(Rating.user_id, Rating.thumb, prompt.content, prompt.parent_id,
                    answer.content)
             .join(answer, col(answer.id) == Rating.message_id)
             .join(prompt, col(prompt.id) == answer.parent_id)
             .order_by(col(Rating.id)))
    return [_Thumb(user_id, thumb, (question, text) if parent is None else None)
            for user_id, thumb, question, parent, text in session.exec(query)]


# -- patterns and agreement ----------------------------------------------------------


def _pick_pattern(choices: Counter[str]) -> str | None:
    """always_a / always_b / always_tie from one user's side-by-side choices (a, b, tie,
    both_bad)."""
    total = sum(choices.values())
    for choice in (Choice.a, Choice.b, Choice.tie):
        if total >= MIN_VOTES and choices[choice] >= PATTERN_SHARE * total:
            return f"always_{choice}"
    return None


def _thumb_pattern(mine: Counter[int], others: Counter[int]) -> str | None:
    """always_up / always_down from one user's thumbs (+1/-1 counts) and everyone else's."""
    total, crowd_total = sum(mine.values()), sum(others.values())
    if total < MIN_VOTES:
        return None
    for thumb, name in ((1, "always_up"), (-1, "always_down")):
        crowd = others[thumb] / crowd_total if crowd_total else 0.0
        if mine[thumb] >= PATTERN_SHARE * total and crowd <= CROWD_SHARE:
            return name
    return None


def _consensus(picks: list[_Pick], thumbs: list[_Thumb],
               judges: set[int]) -> dict[int, tuple[float, int]]:
    """user id -> (agreement with the other people's majority, items) on shared items
    (the judges' votes are measured, never measured against)."""
    votes: dict[tuple, dict[int, object]] = defaultdict(dict)  # item -> user -> last vote
    for p in picks:
        if p.item is not None and p.winner is not None:
            votes[("pick", *p.item)][p.user_id] = p.winner
    for t in thumbs:
        if t.item is not None:
            votes[("thumb", *t.item)][t.user_id] = t.thumb
    agree: Counter[int] = Counter()
    items: Counter[int] = Counter()
    for by_user in votes.values():
        if len(by_user) < 2:
            continue
        people = Counter(v for u, v in by_user.items() if u not in judges)
        for user_id, vote in by_user.items():
            others = (people - Counter([vote] if user_id not in judges else [])
                      ).most_common(2)
            if not others:
                continue  # no other person judged it
            if len(others) == 2 and others[0][1] == others[1][1]:
                continue  # the others are split evenly: no consensus to agree with
            items[user_id] += 1
            agree[user_id] += vote == others[0][0]
    return {u: (agree[u] / n, n) for u, n in items.items()}


def _crowd_median(measures: Iterable[tuple[float | None, int]]) -> float | None:
    values = [a for a, n in measures if a is not None and n >= MIN_ITEMS]
    return statistics.median(values) if values else None


def _random(agreement: float | None, items: int, median: float | None) -> bool:
    """Agreement that chance explains, while the crowd clearly agrees: random clicks."""
    if agreement is None or items < MIN_VOTES or median is None:
        return False
    chance = Z * 0.5 / math.sqrt(items)
    below_crowd = agreement < median - Z * math.sqrt(median * (1 - median) / items)
    return abs(agreement - 0.5) <= chance and below_crowd


def _factor(agreement: float | None, items: int, median: float | None) -> float:
    if agreement is None or items < MIN_ITEMS or median is None or median <= 0.55:
        return 1.0  # too little evidence, or a measure that tells nobody apart
    shrunk = (agreement * items + median * PRIOR_ITEMS) / (items + PRIOR_ITEMS)
    return min(1.0, max(CARELESS_WEIGHT, (shrunk - 0.5) / (median - 0.5)))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
