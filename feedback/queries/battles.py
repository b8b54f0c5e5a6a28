"""Side-by-side battles between two models, as users judged them."""

from dataclasses import dataclass

from sqlmodel import Session, col, select

from feedback.models import Choice, Comparison, Message


@dataclass(frozen=True)
class BattleRecord:
    wins: int  # `model` picked
    losses: int  # `opponent` picked
    ties: int
    both_bad: int

    @property
    def decided(self) -> int:
        return self.wins + self.losses + self.ties


def battle_record(session: Session, *, model: str | None, opponent: str | None) -> BattleRecord:
    """How `model` fared against `opponent` (adapter versions; None is the base model) in
    every two-answer comparison users decided between them."""
    query = select(Comparison).where(col(Comparison.choice).is_not(None))
    comparisons = [c for c in session.exec(query) if len(c.candidate_ids) == 2]
    ids = {i for c in comparisons for i in c.candidate_ids}
    rows = session.exec(select(Message.id, Message.adapter_version)
                        .where(col(Message.id).in_(ids))).all() if ids else []
    version = {message_id: adapter for message_id, adapter in rows}
    counts = {Choice.a: 0, Choice.b: 0, Choice.tie: 0, Choice.both_bad: 0}
    wins = losses = 0
    for c in comparisons:
        a, b = (version.get(i, "?") for i in c.candidate_ids)
        if {a, b} != {model, opponent} or model == opponent:
            continue
        if c.choice in (Choice.tie, Choice.both_bad):
            counts[c.choice] += 1
        elif (c.choice == Choice.a) == (a == model):
            wins += 1
        else:
            losses += 1
    return BattleRecord(wins, losses, counts[Choice.tie], counts[Choice.both_bad])
