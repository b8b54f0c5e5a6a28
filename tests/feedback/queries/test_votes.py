import pytest

from feedback.errors import InvalidFeedback, NotFound
from feedback.queries import conversations as cq
from feedback.queries import votes


def test_rating_again_updates_instead_of_adding(session, chat, alice, bob):
    first = votes.upsert_rating(session, message_id=chat.a.id, user_id=alice.id, thumb=1)
    again = votes.upsert_rating(session, message_id=chat.a.id, user_id=alice.id, thumb=-1,
                                reasons=["wrong"], comment="no")
    votes.upsert_rating(session, message_id=chat.a.id, user_id=bob.id, thumb=1)
    session.commit()
    session.expire_all()

    assert again.id == first.id
    ratings = list(votes.iter_ratings(session))
    assert [(r.user_id, r.thumb, r.reasons, r.comment) for r in ratings] == [
        (alice.id, -1, ["wrong"], "no"), (bob.id, 1, [], "")]


def test_rating_rejects_bad_votes(session, chat, alice):
    for thumb in (0, 2, -2):
        with pytest.raises(InvalidFeedback, match="thumb must be 1 or -1"):
            votes.upsert_rating(session, message_id=chat.a.id, user_id=alice.id, thumb=thumb)
    with pytest.raises(InvalidFeedback, match="is not an assistant answer"):
        votes.upsert_rating(session, message_id=chat.prompt.id, user_id=alice.id, thumb=1)
    with pytest.raises(NotFound):
        votes.upsert_rating(session, message_id=999, user_id=alice.id, thumb=1)
    assert list(votes.iter_ratings(session)) == []


def test_choice_between_two_answers_and_voting_again(session, chat, alice):
    comparison = votes.create_comparison(session, user_id=alice.id,
                                         prompt_message_id=chat.prompt.id,
                                         candidate_ids=[chat.b.id, chat.a.id])
    assert list(votes.iter_comparisons(session)) == []  # undecided
    assert list(votes.iter_comparisons(session, decided_only=False)) == [comparison]

    votes.record_choice(session, comparison_id=comparison.id, user_id=alice.id, choice="a")
    votes.record_choice(session, comparison_id=comparison.id, user_id=alice.id,
                        choice="both_bad")
    session.commit()
    session.expire_all()

    (stored,) = votes.iter_comparisons(session)
    assert (stored.candidate_ids, stored.choice, stored.ranking) == (
        [chat.b.id, chat.a.id], "both_bad", None)
    with pytest.raises(InvalidFeedback, match="choice must be one of a, b, tie, both_bad"):
        votes.record_choice(session, comparison_id=comparison.id, user_id=alice.id, choice="c")


def test_ranking_must_be_a_permutation(session, chat, alice):
    c = cq.add_message(session, conversation_id=chat.conversation.id, role="assistant",
                       content="Yo", parent_id=chat.prompt.id)
    ids = [chat.a.id, chat.b.id, c.id]
    comparison = votes.create_comparison(session, user_id=alice.id,
                                         prompt_message_id=chat.prompt.id, candidate_ids=ids)

    def vote(**verdict):
        return votes.record_choice(session, comparison_id=comparison.id, user_id=alice.id,
                                   **verdict)

    for ranking in ([chat.a.id, chat.b.id], [chat.a.id, chat.a.id, chat.b.id], ids + [999]):
        with pytest.raises(InvalidFeedback, match="every answer of the comparison once"):
            vote(ranking=ranking)
    with pytest.raises(InvalidFeedback, match="rank three or more"):
        vote(choice="a")
    with pytest.raises(InvalidFeedback, match="either a choice or a ranking"):
        vote()
    with pytest.raises(InvalidFeedback, match="either a choice or a ranking"):
        vote(choice="a", ranking=ids)
    assert vote(ranking=[c.id, chat.a.id, chat.b.id]).ranking == [c.id, chat.a.id, chat.b.id]


def test_comparison_needs_distinct_answers_to_the_prompt(session, chat, alice):
    cid = chat.conversation.id
    elsewhere = cq.add_message(session, conversation_id=cid, role="assistant", content="?")

    def compare(candidates):
        votes.create_comparison(session, user_id=alice.id, prompt_message_id=chat.prompt.id,
                                candidate_ids=candidates)

    for candidates in ([chat.a.id], [chat.a.id, chat.a.id]):
        with pytest.raises(InvalidFeedback, match="two or more distinct answers"):
            compare(candidates)
    with pytest.raises(InvalidFeedback, match=f"message {elsewhere.id} does not answer"):
        compare([chat.a.id, elsewhere.id])
    with pytest.raises(InvalidFeedback, match="is not an assistant answer"):
        compare([chat.a.id, chat.prompt.id])
    with pytest.raises(NotFound):
        compare([chat.a.id, 999])


def test_someone_elses_comparison_is_not_found(session, chat, alice, bob):
    comparison = votes.create_comparison(session, user_id=alice.id,
                                         prompt_message_id=chat.prompt.id,
                                         candidate_ids=[chat.a.id, chat.b.id])

    assert votes.get_comparison(session, comparison_id=comparison.id,
                                user_id=alice.id) is comparison
    with pytest.raises(NotFound, match=f"comparison {comparison.id} not found"):
        votes.get_comparison(session, comparison_id=comparison.id, user_id=bob.id)
    with pytest.raises(NotFound):
        votes.record_choice(session, comparison_id=comparison.id, user_id=bob.id, choice="a")
    with pytest.raises(NotFound):
        votes.get_comparison(session, comparison_id=999)
    assert comparison.choice is None


def test_rewrites(session, chat, alice):
    rewrite = votes.add_rewrite(session, message_id=chat.a.id, user_id=alice.id,
                                content="Hi! How can I help?")
    for content in ("", "  \n"):
        with pytest.raises(InvalidFeedback, match="cannot be empty"):
            votes.add_rewrite(session, message_id=chat.a.id, user_id=alice.id, content=content)
    with pytest.raises(InvalidFeedback, match="is not an assistant answer"):
        votes.add_rewrite(session, message_id=chat.prompt.id, user_id=alice.id, content="x")

    assert list(votes.iter_rewrites(session)) == [rewrite]


def test_flagging_again_in_a_category_updates_it(session, chat, alice):
    first = votes.add_flag(session, message_id=chat.a.id, user_id=alice.id, category="harmful")
    again = votes.add_flag(session, message_id=chat.a.id, user_id=alice.id, category="harmful",
                           comment="really")
    other = votes.add_flag(session, message_id=chat.a.id, user_id=alice.id, category="privacy")
    with pytest.raises(InvalidFeedback, match="flag category must be one of harmful"):
        votes.add_flag(session, message_id=chat.a.id, user_id=alice.id, category="rude")
    with pytest.raises(InvalidFeedback, match="is not an assistant answer"):
        votes.add_flag(session, message_id=chat.prompt.id, user_id=alice.id, category="other")
    session.commit()
    session.expire_all()

    assert again.id == first.id
    assert [(f.id, f.category, f.comment) for f in votes.iter_flags(session)] == [
        (first.id, "harmful", "really"), (other.id, "privacy", "")]
