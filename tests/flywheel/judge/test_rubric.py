"""The rubric: its principles, the messages a judge gets, bad files refused."""

import pytest

from flywheel.errors import FlywheelError
from flywheel.judge.rubric import DEFAULT_RUBRIC, conversation_text, load_rubric


def test_the_default_rubric_ships_with_principles():
    rubric = load_rubric()
    assert DEFAULT_RUBRIC.name == "rubric.md"
    assert len(rubric.principles) >= 4
    assert any("order" in p for p in rubric.principles)


def test_a_rubric_file_is_its_list_items(tmp_path):
    path = tmp_path / "rubric.md"
    path.write_text("# Mine\n\nSome prose.\n\n- Be kind.\n* Be brief.\n1. Be right.\n")
    rubric = load_rubric(path)
    assert rubric.principles == ("Be kind.", "Be brief.", "Be right.")
    system, user = rubric.pair_messages("Hi?", "one", "two")
    assert "- Be kind.\n- Be brief.\n- Be right." in system["content"]
    assert user["content"].index("[Answer A]\none") < user["content"].index("[Answer B]\ntwo")
    assert "good or bad" in rubric.single_messages("Hi?", "one")[1]["content"]


def test_bad_rubrics_are_refused(tmp_path):
    empty = tmp_path / "empty.md"
    empty.write_text("no list here\n")
    with pytest.raises(FlywheelError, match="lists no principle"):
        load_rubric(empty)
    with pytest.raises(FlywheelError, match="cannot read"):
        load_rubric(tmp_path / "missing.md")


def test_a_thread_reads_as_role_lines():
    assert conversation_text([{"role": "user", "content": "Hi?"}]) == "Hi?"
    assert conversation_text([{"role": "user", "content": "Hi?"},
                              {"role": "assistant", "content": "Hello."},
                              {"role": "user", "content": "And?"}]) == \
        "User: Hi?\nAssistant: Hello.\nUser: And?"
