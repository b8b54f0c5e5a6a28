import json
import logging

from flywheel.logs import JsonFormatter, TextFormatter, configure_logging


def _record(**extra) -> logging.LogRecord:
    record = logging.LogRecord("server.chat", logging.INFO, __file__, 1, "answer %s", ("ok",),
                               None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_the_message_and_every_extra_field():
    line = JsonFormatter().format(_record(completion_tokens=12, adapter="policy-v2",
                                          color_message="\x1b[1m"))
    entry = json.loads(line)
    assert entry["message"] == "answer ok"
    assert entry["level"] == "INFO" and entry["logger"] == "server.chat"
    assert entry["completion_tokens"] == 12 and entry["adapter"] == "policy-v2"
    assert "color_message" not in entry and entry["ts"].endswith("Z")


def test_text_lines_append_extra_fields_as_key_value_pairs():
    line = TextFormatter().format(_record(status=200, ms=3.5))
    assert line.endswith("server.chat: answer ok status=200 ms=3.5")
    assert TextFormatter().format(_record()).endswith("answer ok")


def test_a_gateway_does_not_log_a_line_per_backend_check():
    configure_logging()
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("server.gateway").isEnabledFor(logging.INFO)
