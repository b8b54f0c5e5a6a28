"""Parsing and writing preference data files (no database)."""

import gzip
import json
import stat
from pathlib import Path

import pytest

from feedback.formats import (
    FormatError,
    Preference,
    Turn,
    Unpaired,
    iter_lines,
    parse_json,
    parse_record,
    read_records,
    write_json_lines,
)

U, A, S = "user", "assistant", "system"


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def write_lines(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


# -- each format ---------------------------------------------------------------------------


def test_trl_preference_strings():
    record = parse_record({"prompt": "Hi?", "chosen": " Hello.", "rejected": "Go away."})
    assert record == Preference((Turn(U, "Hi?"),), " Hello.", "Go away.")  # kept as is


def test_trl_preference_conversational_with_system_message():
    record = parse_record({
        "prompt": [msg(S, "Be kind."), msg(U, "a"), msg(A, "b"), msg(U, "c")],
        "chosen": [msg(A, "good")], "rejected": [msg(A, "bad")]})
    assert record.prompt == (Turn(S, "Be kind."), Turn(U, "a"), Turn(A, "b"), Turn(U, "c"))
    assert (record.chosen, record.rejected) == ("good", "bad")
    assert record.to_trl() == {"prompt": [msg(S, "Be kind."), msg(U, "a"), msg(A, "b"),
                                          msg(U, "c")],
                               "chosen": [msg(A, "good")], "rejected": [msg(A, "bad")]}


def test_completions_that_repeat_the_prompt_are_accepted():
    record = parse_record({"prompt": [msg(U, "q")], "chosen": [msg(U, "q"), msg(A, "x")],
                           "rejected": [msg(A, "y")]})
    assert (record.prompt, record.chosen, record.rejected) == ((Turn(U, "q"),), "x", "y")


def test_implicit_prompt():
    prefix = [msg(U, "a"), msg(A, "b"), msg(U, "c")]
    record = parse_record({"chosen": [*prefix, msg(A, "yes")], "rejected": [*prefix, msg(A, "no")]})
    assert record == Preference((Turn(U, "a"), Turn(A, "b"), Turn(U, "c")), "yes", "no")


@pytest.mark.parametrize("label", [True, False])
def test_trl_unpaired(label):
    string = parse_record({"prompt": "q", "completion": "x", "label": label})
    listed = parse_record({"prompt": [msg(U, "q")], "completion": [msg(A, "x")], "label": label})
    assert string == listed == Unpaired((Turn(U, "q"),), "x", label)
    assert listed.to_trl() == {"prompt": [msg(U, "q")], "completion": [msg(A, "x")],
                               "label": label}


def test_anthropic_hh_turns_are_stripped_and_the_prompt_is_the_common_prefix():
    record = parse_record({
        "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman:  How are you?"
                  "\n\nAssistant: Fine, thanks.",
        "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman:  How are you?"
                    "\n\nAssistant: Leave me alone."})
    assert record == Preference(
        (Turn(U, "Hi there"), Turn(A, "Hello!"), Turn(U, "How are you?")),
        "Fine, thanks.", "Leave me alone.")


def test_anthropic_hh_consecutive_turns_are_merged():
    # Like rows 661 and 1029 of the HH dev set: the chosen side ends in two Assistant turns.
    prefix = "\n\nHuman: q\n\nAssistant: a\n\nHuman: q2"
    record = parse_record({"chosen": prefix + "\n\nAssistant: one\n\nAssistant:  two",
                           "rejected": prefix + "\n\nAssistant: other"})
    assert record.prompt[-1] == Turn(U, "q2")
    assert (record.chosen, record.rejected) == ("one\n\ntwo", "other")
    both = parse_record({"chosen": "\n\nHuman: a\n\nHuman: b\n\nAssistant: x",
                         "rejected": "\n\nHuman: a\n\nHuman: b\n\nAssistant: y"})
    assert both.prompt == (Turn(U, "a\n\nb"),)


def test_an_empty_answer_is_a_valid_completion():
    record = parse_record({"chosen": "\n\nHuman: q\n\nAssistant: ",
                           "rejected": "\n\nHuman: q\n\nAssistant: something"})
    assert (record.chosen, record.rejected) == ("", "something")


def test_key_is_a_stable_content_hash():
    as_string = parse_record({"prompt": "q", "chosen": "x", "rejected": "y"})
    as_messages = parse_record({"prompt": [msg(U, "q")], "chosen": [msg(A, "x")],
                                "rejected": [msg(A, "y")]})
    swapped = parse_record({"prompt": "q", "chosen": "y", "rejected": "x"})
    unpaired = parse_record({"prompt": "q", "completion": "x", "label": True})
    assert as_string.key == as_messages.key
    assert len(as_string.key) == 64 and int(as_string.key, 16) >= 0
    assert len({as_string.key, swapped.key, unpaired.key}) == 3


# -- errors ----------------------------------------------------------------------------------

PROMPT = [msg(U, "q")]


@pytest.mark.parametrize(("obj", "reason"), [
    ([1, 2], "line is not a JSON object"),
    ({"prompt": "q", "chosen": "x"}, "missing field 'rejected'"),
    ({"rejected": "x"}, "missing field 'chosen'"),
    ({"prompt": "q", "completion": "x"}, "missing field 'label'"),
    ({"prompt": "q", "chosen": "x", "rejected": "x"}, "chosen and rejected are identical"),
    ({"prompt": [msg(U, "q"), msg(A, "a")], "chosen": "x", "rejected": "y"},
     "prompt must end with a user turn"),
    ({"prompt": [msg(U, "  ")], "chosen": "x", "rejected": "y"},
     "prompt message 1 (user) is empty"),
    ({"prompt": "", "chosen": "x", "rejected": "y"}, "prompt message 1 (user) is empty"),
    ({"prompt": [], "chosen": "x", "rejected": "y"}, "'prompt' must be a string or a non-empty"),
    ({"prompt": [msg("tool", "q")], "chosen": "x", "rejected": "y"}, "unknown role 'tool'"),
    ({"prompt": [msg(U, "q"), msg(S, "s"), msg(U, "q")], "chosen": "x", "rejected": "y"},
     "a system message may only come first"),
    ({"prompt": [{"role": U}], "chosen": "x", "rejected": "y"}, "has no 'content'"),
    ({"prompt": [{"role": U, "content": [1]}], "chosen": "x", "rejected": "y"},
     "'content' must be a string"),
    ({"prompt": PROMPT, "chosen": [msg(A, "x"), msg(A, "y")], "rejected": "z"},
     "'chosen' must be a single assistant message"),
    ({"prompt": PROMPT, "chosen": [msg(U, "x")], "rejected": "z"},
     "'chosen' must be a single assistant message"),
    ({"prompt": "q", "completion": "x", "label": 1}, "'label' must be true or false"),
    ({"chosen": "hello", "rejected": "\n\nHuman: q\n\nAssistant: a"},
     "'chosen' is not an Anthropic HH transcript"),
    ({"chosen": "\n\nHuman: q\n\nAssistant: a\n\nHuman: more",
      "rejected": "\n\nHuman: q\n\nAssistant: b"},
     "chosen and rejected transcripts must differ only in one final assistant message"),
    ({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: a"},
     "chosen and rejected are identical"),
    ({"chosen": [msg(U, "q"), msg(A, "a")], "rejected": [msg(U, "other"), msg(A, "b")]},
     "chosen and rejected conversations must differ only in one final assistant"),
    ({"chosen": [msg(U, "q"), msg(A, "a")], "rejected": [msg(U, "q")]},
     "must differ only in one final assistant message"),
    ({"chosen": [msg(U, "q"), msg(A, "a")], "rejected": "\n\nHuman: q\n\nAssistant: b"},
     "must both be HH transcripts (strings) or both message lists"),
    ({"text": "hello"}, "not a known record"),
    ({"prompt": "q"}, "a prompt alone is no feedback"),
])
def test_bad_records_give_a_precise_reason(obj, reason):
    with pytest.raises(FormatError) as caught:
        parse_record(obj)
    assert reason in str(caught.value)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "line is not JSON"),
    (b'{"prompt": "\xff"}', "line is not UTF-8 text"),
])
def test_bad_lines(raw, reason):
    with pytest.raises(FormatError, match=reason):
        parse_json(raw)


def test_a_leading_byte_order_mark_is_ignored():
    assert parse_json(b'\xef\xbb\xbf{"a": 1}', first=True) == {"a": 1}


# -- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz"])
def test_read_records_plain_and_gzipped(tmp_path, name):
    path = write_lines(tmp_path / name, [
        json.dumps({"prompt": "q", "chosen": "x", "rejected": "y"}), "",
        json.dumps({"prompt": "q", "completion": "x", "label": False})])
    assert [type(record) for record in read_records(path)] == [Preference, Unpaired]


def test_gzip_is_recognised_by_its_magic_bytes(tmp_path):
    path = tmp_path / "no-gz-suffix.jsonl"
    path.write_bytes(gzip.compress(b'{"prompt": "q", "chosen": "x", "rejected": "y"}\n'))
    assert len(list(read_records(path))) == 1


def test_errors_name_the_file_and_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [
        json.dumps({"prompt": "q", "chosen": "x", "rejected": "y"}), "",
        json.dumps({"prompt": "q", "chosen": "x"})])
    with pytest.raises(FormatError) as caught:
        list(read_records(path))
    assert str(caught.value) == f"{path}:3: missing field 'rejected'"


def test_unreadable_files(tmp_path):
    with pytest.raises(FormatError, match=r"missing\.jsonl: cannot read: No such file"):
        list(iter_lines(tmp_path / "missing.jsonl"))
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-20])
    with pytest.raises(FormatError, match=r"corrupt\.jsonl\.gz: cannot read after line"):
        list(iter_lines(corrupt))


def test_progress_reports_bytes(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", ['{"a": 1}'] * 2500)
    seen = []
    list(iter_lines(path, on_progress=lambda done, total: seen.append((done, total))))
    size = path.stat().st_size
    assert len(seen) == 3 and seen[-1] == (size, size)


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_write_json_lines_is_reproducible(tmp_path, name):
    rows = [{"prompt": "é", "n": 1}, {"prompt": "x", "n": 2}]
    first, second = tmp_path / "a" / name, tmp_path / "b" / name
    assert write_json_lines(first, rows) == write_json_lines(second, rows) == 2
    assert first.read_bytes() == second.read_bytes()
    assert [record for _, record in ((n, parse_json(raw)) for n, raw in iter_lines(first))] == rows


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_written_files_are_private(tmp_path, name):
    """Exports hold users' conversations: readable by their owner only."""
    write_json_lines(tmp_path / name, [{"prompt": "hi", "chosen": "a", "rejected": "b"}])
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_a_failed_write_leaves_no_file(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def rows():
        yield {"a": 1}
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        write_json_lines(out, rows())
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


# -- the real data ---------------------------------------------------------------------------


def test_hh_dev_set_parses(hh_dev):
    records = list(read_records(hh_dev))
    assert len(records) == 1600 and all(isinstance(r, Preference) for r in records)
    assert "\n\n" in records[661].chosen and "\n\n" in records[1029].chosen  # merged turns
    assert records[1480].chosen == records[1505].chosen == ""  # empty chosen answers
    assert len({record.key for record in records}) == 1600
