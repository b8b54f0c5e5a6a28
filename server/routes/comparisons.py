"""Side-by-side verdicts: a choice between two answers, or a ranking of k answers.

People vote on answers of their own conversations; a judge (the AI annotator) on any."""

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator
from sqlmodel import Session

from feedback.models import Comparison
from feedback.queries import conversations as convs
from feedback.queries import votes
from server.auth import CallerId, VoteScope
from server.deps import MetricsDep
from server.store import Records, RowId

router = APIRouter(prefix="/api/comparisons", tags=["comparisons"])


class Verdict(BaseModel):
    choice: Literal["a", "b", "tie", "both_bad"] | None = None
    ranking: list[RowId] | None = Field(None, min_length=2, max_length=16,
                                        description="message ids, best first")

    @model_validator(mode="after")
    def one_of(self):
        if (self.choice is None) == (self.ranking is None):
            raise ValueError("give either a choice or a ranking")
        return self


class RankingIn(BaseModel):
    """A ranking of answers (best first), or a `choice` between two `candidate_ids`
    shown in that order (A first)."""

    prompt_message_id: RowId
    ranking: list[RowId] | None = Field(None, min_length=2, max_length=16,
                                        description="answers to the prompt, best first")
    candidate_ids: list[RowId] | None = Field(None, min_length=2, max_length=2,
                                              description="two answers to the prompt, A first")
    choice: Literal["a", "b", "tie", "both_bad"] | None = None

    @model_validator(mode="after")
    def ranking_or_choice(self):
        if (self.ranking is None) == (self.choice is None):
            raise ValueError("give either a ranking or a choice between candidate_ids")
        if (self.choice is None) != (self.candidate_ids is None):
            raise ValueError("a choice needs candidate_ids, and candidate_ids a choice")
        return self


class ComparisonOut(BaseModel):
    id: int
    prompt_message_id: int
    candidate_ids: list[int]
    choice: str | None
    ranking: list[int] | None


@router.post("/{comparison_id}/verdict")
async def decide(comparison_id: RowId, body: Verdict, user_id: CallerId, records: Records,
                 metrics: MetricsDep) -> ComparisonOut:
    """Record (or replace) the verdict on a side-by-side turn shown to this user."""
    def store(session: Session) -> Comparison:
        return votes.record_choice(session, comparison_id=comparison_id, user_id=user_id,
                                   choice=body.choice, ranking=body.ranking)
    comparison = await records.run(store)
    metrics.votes.labels("comparison").inc()
    return ComparisonOut.model_validate(comparison, from_attributes=True)


@router.post("", status_code=201)
async def rank(body: RankingIn, user_id: CallerId, scope: VoteScope, records: Records,
               metrics: MetricsDep) -> ComparisonOut:
    """Rank answers the user got for one prompt (e.g. `n` > 1 through the OpenAI API), or
    pick between two of them."""
    def store(session: Session) -> Comparison:
        convs.get_message(session, message_id=body.prompt_message_id, user_id=scope)
        comparison = votes.create_comparison(session, user_id=user_id,
                                             prompt_message_id=body.prompt_message_id,
                                             candidate_ids=body.ranking or body.candidate_ids)
        return votes.record_choice(session, comparison_id=comparison.id, user_id=user_id,
                                   choice=body.choice, ranking=body.ranking)
    comparison = await records.run(store)
    metrics.votes.labels("ranking" if body.ranking else "comparison").inc()
    return ComparisonOut.model_validate(comparison, from_attributes=True)
