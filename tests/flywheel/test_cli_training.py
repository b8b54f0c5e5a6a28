"""`flywheel train reward` and `flywheel eval reward`: from a file and from the store,
the next version in the registry, the JSON last line, and one-line errors; `--processes N`
runs the command line again under torchrun, where rank 0 alone reads, saves and registers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from feedback.db import open_store, session_scope
from feedback.queries import reward_models
from flywheel.settings import Settings
from tests.flywheel.test_cli import flywheel_cli, ok, one_error, sqlite_url, write_jsonl
from tests.trainer.synthetic import synthetic_rows

FAST = ("--epochs", 1, "--max-length", 32, "--batch-size", 8, "--lr", 2e-4)


@pytest.fixture(autouse=True)
def _no_flywheel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"FLYWHEEL_{name.upper()}", raising=False)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "prefs.jsonl", *synthetic_rows(24))


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_train_on_a_file_then_evaluate(data_file, tmp_path):
    out = tmp_path / "rm"
    trained = last_json(ok(flywheel_cli("train", "reward", "--data", data_file, "--out", out,
                                        "--heldout-fraction", 0.25, *FAST)))
    assert trained["path"] == str(out) and trained["promoted"] is None
    assert trained["train_pairs"] + trained["pairs"] == 24
    assert (out / "reward_config.json").is_file()
    report = ok(flywheel_cli("eval", "reward", "--model", out, "--data", data_file))
    figures = last_json(report)
    assert 0.0 <= figures["accuracy"] <= 1.0 and figures["pairs"] == 24
    assert report.splitlines()[0].startswith("accuracy ")


def test_train_registers_the_next_version(data_file, tmp_path):
    db = sqlite_url(tmp_path / "store.db")
    ok(flywheel_cli("feedback", "import", data_file, "--db", db))
    data_dir = tmp_path / "data"
    trained = last_json(ok(flywheel_cli("train", "reward", "--db", db, "--data-dir", data_dir,
                                        "--heldout-fraction", 0.25, *FAST)))
    root = data_dir / "reward_models"
    assert trained["path"] == str(root / "rm-0001") and trained["promoted"] is True
    assert trained["version"] == "rm-0001" and not (root / "CURRENT").exists()
    assert trained["data"]["train_pairs"] == trained["train_pairs"]
    again = last_json(ok(flywheel_cli("train", "reward", "--data", data_file, "--db", db,
                                      "--data-dir", data_dir, "--heldout-fraction", 0.25,
                                      "--actor", "ana", *FAST)))
    assert again["version"] == "rm-0002"

    engine = open_store(db)
    with session_scope(engine) as session:
        rows = {row.version: row for row in reward_models.list_reward_models(session)}
        trail = reward_models.reward_model_audit_events(session, version="rm-0002")
    engine.dispose()
    first, second = rows["rm-0001"], rows["rm-0002"]
    assert first.data_window["source"] == "feedback store"
    assert first.data_window["pairs"] == trained["train_pairs"]
    assert first.heldout["accuracy"] == trained["accuracy"]
    assert second.data_window["source"] == str(data_file) and second.parent_version == "rm-0001"
    assert second.status == ("current" if again["promoted"] else "rejected")
    assert first.status == ("retired" if again["promoted"] else "current")
    assert {event.actor for event in trail} == {"ana"}


def test_user_errors_are_one_line(tmp_path, data_file):
    bad = write_jsonl(tmp_path / "bad.jsonl", {"prompt": "only a prompt"})
    one_error(flywheel_cli("train", "reward", "--data", bad, "--out", tmp_path / "x"),
              "bad.jsonl:1")
    one_error(flywheel_cli("train", "reward", "--db", sqlite_url(tmp_path / "empty.db"),
                           "--data-dir", tmp_path), "no preference pairs")
    one_error(flywheel_cli("eval", "reward", "--model", tmp_path, "--data", data_file),
              "not a reward model directory")


def test_help_lists_the_commands():
    assert "reward" in ok(flywheel_cli("train", "--help"))
    assert "accuracy" in ok(flywheel_cli("eval", "reward", "--help"))


def test_processes_runs_the_same_command_line_under_torchrun(monkeypatch, data_file, tmp_path):
    launched = []
    monkeypatch.setattr("trainer.launch.run_command_on",
                        lambda processes, argv: launched.append((processes, argv)) or 3)
    result = flywheel_cli("train", "reward", "--data", data_file, "--processes", 2,
                          "--epochs", 2, "--backbone", "policy-lora", "--data-dir", tmp_path)
    assert result.exit_code == 3  # torchrun's
    assert launched == [(2, ["train", "reward", "--data", str(data_file), "--backbone",
                             "policy-lora", "--epochs", "2", "--data-dir", str(tmp_path)])]
    result = flywheel_cli("train", "ppo", "--processes", 4, "--no-warm-start", "--seed", 5)
    assert launched[1] == (4, ["train", "ppo", "--no-warm-start", "--seed", "5"])
    flywheel_cli("train", "dpo", "--processes", 2, "--beta", 0.2)
    assert launched[2] == (2, ["train", "dpo", "--beta", "0.2"])


@pytest.mark.slow
def test_two_processes_register_one_reward_model_that_one_process_matches(data_file, tmp_path):
    db = sqlite_url(tmp_path / "store.db")
    ok(flywheel_cli("feedback", "import", data_file, "--db", db))
    args = ["train", "reward", "--db", db, "--heldout-fraction", 0.25, *FAST]
    two = subprocess.run([sys.executable, "-m", "flywheel", *map(str, args), "--data-dir",
                          str(tmp_path / "two"), "--processes", "2"],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr
    lines = two.stdout.strip().splitlines()  # rank 0's alone
    assert lines[0].endswith(", on 2 processes") and len(lines) == 3
    figures = last_json(two.stdout)
    assert figures["version"] == "rm-0001" and figures["promoted"] is True
    assert figures["pairs"] > 0 and figures["train_pairs"] == figures["data"]["train_pairs"]
    assert sorted(p.name for p in (tmp_path / "two" / "reward_models").iterdir()) == ["rm-0001"]
    engine = open_store(db)
    with session_scope(engine) as session:
        (registered,) = reward_models.list_reward_models(session)
    engine.dispose()
    assert registered.heldout["accuracy"] == figures["accuracy"]
    one = last_json(ok(flywheel_cli(*args, "--data-dir", tmp_path / "one", "--out",
                                    tmp_path / "one-rm")))
    for key in ("accuracy", "loss", "reward_mean", "reward_std", "steps"):
        assert figures[key] == pytest.approx(one[key], rel=1e-5, abs=1e-5), key

