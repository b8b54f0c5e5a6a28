"""AI feedback: the judges' users, and the turns a judge has yet to judge.

A judge is a user with role `judge` (`Role.judge`); its votes are AI feedback wherever
votes are read (training data, exports, the console), told apart by the voter's role.
A turn is a user message with one or more assistant answers to it; a judge has judged it
once it has rated one of its answers or decided a comparison over them.
"""

from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session, col, select

from feedback.models import Comparison, Conversation, Message, MessageRole, Rating, Role, User
from feedback.queries.conversations import message_paths

BATCH = 500


@dataclass(frozen=True)
class TurnToJudge:
    prompt_message_id: int
    prompt: list[Message]  # the thread from the conversation's start to the user turn
    answer_ids: list[int]  # the assistant answers to it, oldest first
    answers: list[str]


def judge_ids(session: Session) -> set[int]:
    """The ids of every judge: whose votes are AI feedback."""
    return set(session.exec(select(User.id).where(User.role == Role.judge)))


def judged_prompt_ids(session: Session, *, judge_id: int) -> set[int]:
    """The user turns the judge has judged (rated an answer of, or compared answers of)."""
    compared = select(Comparison.prompt_message_id).where(Comparison.user_id == judge_id)
    rated = (select(Message.parent_id).join(Rating, col(Rating.message_id) == Message.id)
             .where(Rating.user_id == judge_id))
    return set(session.exec(compared)) | {p for p in session.exec(rated) if p is not None}


def turns_to_judge(session: Session, *, judge_id: int, after_id: int = 0,
                   limit: int = 100,
                   chosen: Callable[[int], bool] = lambda prompt_id: True) -> list[TurnToJudge]:
    """Up to `limit` turns after user message `after_id`, oldest first, that have answers,
    that the judge has not judged yet, and whose prompt id `chosen` accepts. Turns of the
    judges' own conversations (a judge asking a chat model through a Flywheel server)
    are no one's feedback to judge."""
    done = judged_prompt_ids(session, judge_id=judge_id)
    judges = list(judge_ids(session))
    turns: list[TurnToJudge] = []
    while len(turns) < limit:
        prompt_ids = list(session.exec(
            select(Message.id, Conversation.user_id)
            .join(Conversation, col(Conversation.id) == Message.conversation_id)
            .where(Message.role == MessageRole.user, Message.id > after_id)
            .order_by(col(Message.id)).limit(BATCH)).all())
        if not prompt_ids:
            break
        after_id = prompt_ids[-1][0]
        wanted = [p for p, owner in prompt_ids
                  if owner not in judges and p not in done and chosen(p)]
        answers: dict[int, list[Message]] = {p: [] for p in wanted}
        for answer in session.exec(select(Message).where(
                col(Message.parent_id).in_(wanted), Message.role == MessageRole.assistant)
                .order_by(col(Message.id))):
            answers[answer.parent_id].append(answer)
        paths = message_paths(session, message_ids=[p for p in wanted if answers[p]])
        for prompt_id in wanted:
            if answers[prompt_id] and len(turns) < limit:
                turns.append(TurnToJudge(prompt_id, paths[prompt_id],
                                         [a.id for a in answers[prompt_id]],
                                         [a.content for a in answers[prompt_id]]))
    return turns


def newest_judged_prompt_id(session: Session, *, judge_id: int) -> int:
    """The newest user turn the judge has judged (0 for none)."""
    return max(judged_prompt_ids(session, judge_id=judge_id), default=0)
