import pytest

from feedback.errors import InvalidFeedback, NotFound
from feedback.queries import users


def test_create_and_look_up(session):
    user = users.create_user(session, handle="ops", role="operator", api_key_hash="ab" * 32)

    assert user.id is not None and user.role == "operator"
    assert users.get_user(session, user_id=user.id) is user
    assert users.get_user_by_handle(session, handle="ops") is user
    assert users.get_user_by_api_key_hash(session, api_key_hash="ab" * 32) is user
    assert users.get_user_by_handle(session, handle="nobody") is None
    assert users.get_user_by_api_key_hash(session, api_key_hash="cd" * 32) is None
    with pytest.raises(NotFound, match="user 999 not found"):
        users.get_user(session, user_id=999)


def test_create_rejects_an_unknown_role(session):
    with pytest.raises(InvalidFeedback, match="role must be one of user, operator, admin"):
        users.create_user(session, handle="x", role="root")


def test_get_or_create_returns_the_existing_user(session):
    first = users.get_or_create_user(session, handle="anon-1")
    again = users.get_or_create_user(session, handle="anon-1", role="admin")

    assert again.id == first.id and again.role == "user"
    assert len(users.list_users(session)) == 1


def test_set_role(session, alice):
    assert users.set_role(session, user_id=alice.id, role="admin").role == "admin"
    session.expire_all()
    assert users.get_user(session, user_id=alice.id).role == "admin"
    with pytest.raises(InvalidFeedback, match="'superuser'"):
        users.set_role(session, user_id=alice.id, role="superuser")
    with pytest.raises(NotFound):
        users.set_role(session, user_id=999, role="user")


def test_list_users_pages_in_joining_order(session):
    for i in range(5):
        users.create_user(session, handle=f"u{i}")

    assert [u.handle for u in users.list_users(session)] == ["u0", "u1", "u2", "u3", "u4"]
    assert [u.handle for u in users.list_users(session, limit=2, offset=2)] == ["u2", "u3"]
