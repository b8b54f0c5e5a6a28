"""What training, exports and replays leave out: the operators' exclusions
(`training_exclusion` rows, made by the review queue, `feedback.queries.review`) and, where
rewrites must be approved first (`FLYWHEEL_REVIEW_REWRITES=1`), the rewrites not approved.

An exclusion names one message (every vote on it: its ratings, rewrites and flags, and the
comparisons that show it or answer it; as a user turn, it is no PPO prompt either), one
vote (a rating, comparison, rewrite or flag), or one user (every vote they gave or will
give). Dismissed flags and rewrites, and redacted texts, are exclusions too.
"""

from dataclasses import dataclass

from sqlmodel import Session, col, select

from feedback.models import (
    Comparison,
    ExclusionScope,
    Flag,
    Rating,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
    Rewrite,
    TrainingExclusion,
)


@dataclass(frozen=True)
class TrainingFilter:
    """The ids left out, by scope. `approved_rewrites`: with None every rewrite not
    excluded counts; otherwise only these do."""

    messages: frozenset[int] = frozenset()
    ratings: frozenset[int] = frozenset()
    comparisons: frozenset[int] = frozenset()
    rewrites: frozenset[int] = frozenset()
    flags: frozenset[int] = frozenset()
    users: frozenset[int] = frozenset()
    approved_rewrites: frozenset[int] | None = None

    def keeps_message(self, message_id: int) -> bool:
        return message_id not in self.messages

    def keeps_rating(self, rating: Rating) -> bool:
        return (rating.id not in self.ratings and rating.user_id not in self.users
                and rating.message_id not in self.messages)

    def keeps_comparison(self, comparison: Comparison) -> bool:
        return (comparison.id not in self.comparisons and comparison.user_id not in self.users
                and comparison.prompt_message_id not in self.messages
                and not self.messages.intersection(comparison.candidate_ids))

    def keeps_rewrite(self, rewrite: Rewrite) -> bool:
        return (rewrite.id not in self.rewrites and rewrite.user_id not in self.users
                and rewrite.message_id not in self.messages
                and (self.approved_rewrites is None or rewrite.id in self.approved_rewrites))

    def keeps_flag(self, flag: Flag) -> bool:
        return (flag.id not in self.flags and flag.user_id not in self.users
                and flag.message_id not in self.messages)


_TARGET = {ExclusionScope.message: TrainingExclusion.message_id,
           ExclusionScope.rating: TrainingExclusion.rating_id,
           ExclusionScope.comparison: TrainingExclusion.comparison_id,
           ExclusionScope.rewrite: TrainingExclusion.rewrite_id,
           ExclusionScope.flag: TrainingExclusion.flag_id,
           ExclusionScope.user: TrainingExclusion.user_id}


def training_filter(session: Session, *, approved_rewrites_only: bool = False
                    ) -> TrainingFilter:
    """The store's exclusions; with `approved_rewrites_only`, rewrites count only once an
    operator accepted them in the review queue."""
    ids: dict[str, set[int]] = {scope: set() for scope in ExclusionScope}
    for scope, target in _TARGET.items():
        ids[scope].update(session.exec(
            select(target).where(TrainingExclusion.scope == scope, col(target).is_not(None))))
    approved = None
    if approved_rewrites_only:
        approved = frozenset(session.exec(
            select(ReviewItem.rewrite_id).where(ReviewItem.kind == ReviewKind.rewrite,
                                                ReviewItem.status == ReviewStatus.accepted,
                                                col(ReviewItem.rewrite_id).is_not(None))))
    return TrainingFilter(
        messages=frozenset(ids[ExclusionScope.message]),
        ratings=frozenset(ids[ExclusionScope.rating]),
        comparisons=frozenset(ids[ExclusionScope.comparison]),
        rewrites=frozenset(ids[ExclusionScope.rewrite]),
        flags=frozenset(ids[ExclusionScope.flag]),
        users=frozenset(ids[ExclusionScope.user]),
        approved_rewrites=approved)


def exclude(session: Session, *, scope: ExclusionScope, target_id: int, actor: str,
            actor_id: int | None = None, review_item_id: int | None = None
            ) -> TrainingExclusion:
    """Leave one message's votes, one vote or one user's votes out of training, as `actor`
    (a handle; `actor_id`: the operator's user id, if any)."""
    exclusion = TrainingExclusion(scope=scope, actor_id=actor_id, actor=actor,
                                  review_item_id=review_item_id)
    setattr(exclusion, _TARGET[scope].key, target_id)
    session.add(exclusion)
    session.flush()
    return exclusion
