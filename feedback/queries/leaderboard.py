"""The leaderboard: every version that fought a side-by-side battle (the base model and
each adapter), rated by a Bradley–Terry fit of users' verdicts (`feedback.bradley_terry`).

A battle is a decided comparison between answers of two different versions: a two-answer
`choice` ("a", "b", "tie", or "both_bad", which counts as a tie), or a `ranking`, where each
answer beats every answer ranked below it. Answers of one version against each other are
not battles. The base model is anchored at 1000 points when it fought; otherwise the
version with the most battles is.
"""

from collections import Counter
from dataclasses import dataclass
from itertools import combinations

from sqlmodel import Session, col, select

from feedback.bradley_terry import rate
from feedback.models import Adapter, Choice, Comparison, Message

BASE = "base"  # how the base model is named on the leaderboard
ANCHOR_RATING = 1000.0
FIRST_SCORE = {Choice.a: 1.0, Choice.b: 0.0, Choice.tie: 0.5, Choice.both_bad: 0.5}


@dataclass(frozen=True)
class Battle:
    first: str
    second: str
    score: float  # the first's: 1 won, 0 lost, 0.5 tie


@dataclass(frozen=True)
class Standing:
    version: str
    status: str | None  # the adapter's registry status; None for the base model
    rating: float
    low: float
    high: float
    battles: int
    wins: int
    losses: int
    ties: int  # ties and "both bad"


@dataclass(frozen=True)
class Leaderboard:
    standings: list[Standing]  # best first
    anchor: str | None  # the version fixed at ANCHOR_RATING; None with no battles
    battles: int
    level: float
    resamples: int


def battles(session: Session) -> list[Battle]:
    """Every battle users decided, oldest first (module doc)."""
    query = (select(Comparison).where(col(Comparison.choice).is_not(None)
                                      | col(Comparison.ranking).is_not(None))
             .order_by(col(Comparison.id)))
    comparisons = list(session.exec(query))
    ids = {i for c in comparisons for i in [*c.candidate_ids, *(c.ranking or [])]}
    rows = session.exec(select(Message.id, Message.adapter_version)
                        .where(col(Message.id).in_(ids))).all() if ids else []
    version = {message_id: adapter or BASE for message_id, adapter in rows}
    found = []
    for c in comparisons:
        if c.choice is not None and len(c.candidate_ids) == 2:
            a, b = (version.get(i) for i in c.candidate_ids)
            if a and b and a != b:
                found.append(Battle(a, b, FIRST_SCORE[Choice(c.choice)]))
        elif c.ranking:
            ranked = [version.get(i) for i in c.ranking]
            found += [Battle(a, b, 1.0) for a, b in combinations(ranked, 2)
                      if a and b and a != b]
    return found


def leaderboard(session: Session, *, level: float = 0.95, resamples: int = 1000,
                seed: int = 0) -> Leaderboard:
    """The Bradley–Terry ratings of every version with battles, best first, with `level`
    bootstrap intervals over `resamples` resamples of the battles."""
    fought = battles(session)
    games: Counter[str] = Counter()
    record: dict[str, Counter[str]] = {}
    for battle in fought:
        for me, score in ((battle.first, battle.score), (battle.second, 1 - battle.score)):
            games[me] += 1
            outcome = "wins" if score == 1 else "losses" if score == 0 else "ties"
            record.setdefault(me, Counter())[outcome] += 1
    versions = sorted(games, key=lambda v: (v != BASE, -games[v], v))
    if not versions:
        return Leaderboard([], None, 0, level, resamples)
    index = {v: i for i, v in enumerate(versions)}
    ratings = rate(versions, [(index[b.first], index[b.second]) for b in fought],
                   [b.score for b in fought], anchor=0, anchor_rating=ANCHOR_RATING,
                   level=level, resamples=resamples, seed=seed)
    status = dict(session.exec(select(Adapter.version, Adapter.status)
                               .where(col(Adapter.version).in_(versions))).all())
    standings = [Standing(v, status.get(v), float(ratings.rating[i]), float(ratings.low[i]),
                          float(ratings.high[i]), games[v], record[v]["wins"],
                          record[v]["losses"], record[v]["ties"])
                 for i, v in enumerate(versions)]
    standings.sort(key=lambda s: -s.rating)
    return Leaderboard(standings, versions[0], len(fought), level, resamples)
