"""Annotator quality for operators: how far each user's votes are trusted in training."""

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from feedback.db import session_scope
from feedback.queries.annotators import annotator_quality
from server.auth import Operator
from server.store import Store

router = APIRouter(prefix="/api", tags=["operators"])

Pattern = Literal["always_a", "always_b", "always_tie", "always_up", "always_down", "random"]


class AnnotatorOut(BaseModel):
    user_id: int
    handle: str
    votes: int
    consensus_agreement: float | None  # with the other users' majority on shared items
    consensus_items: int
    reward_model_agreement: float | None  # with the last reward model, on the user's votes
    pattern: Pattern | None  # a careless pattern, if any
    weight: float  # what training multiplies the user's votes by
    ai_feedback: bool  # a judge (an AI annotator): measured against people like anyone


class AnnotatorsOut(BaseModel):
    reward_model: str | None  # the reward model the agreements were measured with
    annotators: list[AnnotatorOut]


@router.get("/annotators")
def list_annotators(_: Operator, db: Store) -> AnnotatorsOut:
    """Every user with votes: their careless pattern, agreement with the consensus and
    with the reward model, and the weight their votes get in training."""
    with session_scope(db) as session:
        report = annotator_quality(session)
    return AnnotatorsOut(reward_model=report.reward_model, annotators=[
        AnnotatorOut.model_validate(a, from_attributes=True) for a in report.annotators])
