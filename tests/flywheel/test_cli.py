"""The `flywheel` command line (DESIGN §4): help, common options and their environment
fallbacks, the feedback import/export round trip on both databases, and user errors
reported as one `error:` line with exit code 2, never a traceback."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from click.testing import Result
from sqlmodel import Session, select
from typer.testing import CliRunner

import flywheel
from feedback.db import current_revision, open_store
from feedback.models import User
from flywheel.api_keys import hash_api_key
from flywheel.cli import app
from flywheel.model_loading import load_model
from flywheel.settings import Settings

runner = CliRunner()
HH_PAIRS = 1600


@pytest.fixture(autouse=True)
def _no_flywheel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's FLYWHEEL_* settings must not leak into these tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"FLYWHEEL_{name.upper()}", raising=False)


def flywheel_cli(*args: object) -> Result:
    return runner.invoke(app, [str(arg) for arg in args], prog_name="flywheel")


def ok(result: Result) -> str:
    """The command's stdout, after checking that it succeeded."""
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def one_error(result: Result, *fragments: str) -> str:
    """The single `error:` line of a failed command, after checking how it failed."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def usage_error(result: Result, fragment: str) -> None:
    """click's own usage error: exit 2, the reason on stderr, no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert fragment in result.stderr
    assert result.stdout == ""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def write_jsonl(path: Path, *rows: object) -> Path:
    """One line per row: a dict is written as JSON, a str as it is."""
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n"
                            for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f]


def export(db: str, fmt: str, out: Path) -> list[dict]:
    out_text = ok(flywheel_cli("feedback", "export", "--format", fmt, "--out", out, "--db", db))
    rows = read_jsonl(out)
    records = len(rows) - 1 if fmt == "log" else len(rows)
    assert f"wrote {records} {fmt} records to {out}" in out_text
    return rows


PAIR = {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."}
PAIR_2 = {"prompt": [{"role": "user", "content": "Hi!"}],
          "chosen": [{"role": "assistant", "content": "Hello."}],
          "rejected": [{"role": "assistant", "content": "Go away."}]}
LABEL_UP = {"prompt": "Name a colour.", "completion": "Blue.", "label": True}
LABEL_DOWN = {"prompt": "Name a fruit.", "completion": "A chair.", "label": False}


# -- help and version -------------------------------------------------------------------

COMMANDS = {  # command path -> the common options it must take
    (): (),
    ("db",): (),
    ("db", "upgrade"): ("--db", "--data-dir"),
    ("demo-model",): ("--data-dir", "--out", "--seed"),
    ("feedback",): (),
    ("feedback", "import"): ("--db", "--data-dir", "--user", "--skip-invalid"),
    ("feedback", "export"): ("--db", "--data-dir", "--format", "--out"),
    ("serve",): ("--db", "--data-dir", "--model", "--host", "--port"),
    ("users",): (),
    ("users", "create"): ("--db", "--data-dir", "--role"),
}


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda path: " ".join(path) or "flywheel")
def test_help_names_the_common_options(path: tuple[str, ...]) -> None:
    text = ok(flywheel_cli(*path, "--help"))
    assert "Usage: flywheel" in text
    for option in COMMANDS[path]:
        assert option in text, f"{option} missing from `flywheel {' '.join(path)} --help`"


def _command_paths(command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():  # a group's sub-commands
        paths += _command_paths(sub, (*path, name))
    return paths


def test_every_command_has_help() -> None:
    """Commands added later are covered too; the ones DESIGN §4 needs by now are there."""
    paths = _command_paths(typer.main.get_command(app))
    assert set(COMMANDS) <= set(paths)
    for path in paths:
        result = flywheel_cli(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert result.stdout.strip(), path


def test_help_names_the_environment_variables() -> None:
    assert "FLYWHEEL_DB" in ok(flywheel_cli("db", "upgrade", "--help"))
    assert "FLYWHEEL_DATA_DIR" in ok(flywheel_cli("db", "upgrade", "--help"))
    assert "FLYWHEEL_MODEL" in ok(flywheel_cli("serve", "--help"))


def test_version() -> None:
    assert ok(flywheel_cli("--version")).strip() == f"flywheel {flywheel.__version__}"


# -- feedback import / export --------------------------------------------------------------


def test_hh_import_then_export_round_trip(db_url: str, hh_dev: Path, tmp_path: Path) -> None:
    """The acceptance criterion: 1,600 HH pairs in, 1,600 DPO rows out, on both databases."""
    summary = ok(flywheel_cli("feedback", "import", hh_dev, "--db", db_url))
    assert f"imported {HH_PAIRS} pairs and 0 labels" in summary
    assert "skipped 0 duplicates and 0 invalid lines" in summary

    dpo = export(db_url, "dpo", tmp_path / "dpo.jsonl")
    assert len(dpo) == HH_PAIRS
    for row in dpo:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["prompt"][-1]["role"] == "user"
        assert [turn["role"] for turn in row["chosen"]] == ["assistant"]
        assert [turn["role"] for turn in row["rejected"]] == ["assistant"]
    assert len(export(db_url, "dpo", tmp_path / "dpo.jsonl.gz")) == HH_PAIRS
    assert export(db_url, "kto", tmp_path / "kto.jsonl") == []  # HH holds pairs only

    log = export(db_url, "log", tmp_path / "log.jsonl")
    assert log[0]["format"] == "flywheel-log"
    types = [row["type"] for row in log[1:]]
    assert types.count("comparison") == types.count("conversation") == HH_PAIRS

    again = ok(flywheel_cli("feedback", "import", hh_dev, "--db", db_url))
    assert "imported 0 pairs and 0 labels" in again
    assert f"skipped {HH_PAIRS} duplicates" in again
    assert len(export(db_url, "dpo", tmp_path / "after.jsonl")) == HH_PAIRS

    # The log restores into an empty store, which then exports the same pairs.
    fresh = sqlite_url(tmp_path / "restored.db")
    assert "restored" in ok(flywheel_cli("feedback", "import", tmp_path / "log.jsonl",
                                         "--db", fresh))
    assert export(fresh, "dpo", tmp_path / "restored.jsonl") == dpo


def test_trl_formats_round_trip(db_url: str, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "mixed.jsonl", PAIR, LABEL_UP, PAIR_2, LABEL_DOWN)
    summary = ok(flywheel_cli("feedback", "import", data, "--db", db_url, "--user", "bob"))
    assert "imported 2 pairs and 2 labels" in summary

    dpo = export(db_url, "dpo", tmp_path / "dpo.jsonl")
    assert [row["chosen"][0]["content"] for row in dpo] == ["4.", "Hello."]
    kto = export(db_url, "kto", tmp_path / "kto.jsonl")
    assert [(row["completion"][0]["content"], row["label"]) for row in kto] == [
        ("Blue.", True), ("A chair.", False)]
    log = export(db_url, "log", tmp_path / "log.jsonl")
    assert [row["handle"] for row in log if row.get("type") == "user"] == ["bob"]

    again = ok(flywheel_cli("feedback", "import", data, "--db", db_url))
    assert "imported 0 pairs and 0 labels" in again and "skipped 4 duplicates" in again


def test_a_malformed_line_aborts_the_whole_import(db_url: str, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "bad.jsonl", PAIR, "{not json", PAIR_2)
    one_error(flywheel_cli("feedback", "import", data, "--db", db_url), f"{data}:2: ")

    assert export(db_url, "dpo", tmp_path / "dpo.jsonl") == []
    assert (tmp_path / "dpo.jsonl").read_bytes() == b""
    assert len(export(db_url, "log", tmp_path / "log.jsonl")) == 1  # the header: no users


def test_an_incomplete_record_names_its_line(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "bad.jsonl", PAIR, PAIR_2, {"prompt": "alone"})
    db = sqlite_url(tmp_path / "f.db")
    one_error(flywheel_cli("feedback", "import", data, "--db", db), f"{data}:3: ")
    assert export(db, "dpo", tmp_path / "dpo.jsonl") == []


def test_skip_invalid_counts_and_continues(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "bad.jsonl", PAIR, "{not json", {"prompt": "alone"}, PAIR_2)
    db = sqlite_url(tmp_path / "f.db")
    summary = ok(flywheel_cli("feedback", "import", data, "--db", db, "--skip-invalid"))
    assert "imported 2 pairs and 0 labels" in summary
    assert "skipped 0 duplicates and 2 invalid lines" in summary
    assert f"{data}:2: " in summary and f"{data}:3: " in summary
    assert len(export(db, "dpo", tmp_path / "dpo.jsonl")) == 2


def test_missing_import_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    one_error(flywheel_cli("feedback", "import", missing, "--db", sqlite_url(tmp_path / "f.db")),
              str(missing))


def test_bad_export_format_is_a_usage_error(tmp_path: Path) -> None:
    result = flywheel_cli("feedback", "export", "--format", "csv", "--out", tmp_path / "x",
                          "--db", sqlite_url(tmp_path / "f.db"))
    usage_error(result, "--format")
    assert not (tmp_path / "x").exists() and not (tmp_path / "f.db").exists()


# -- the store: URLs, environment, defaults -------------------------------------------------


@pytest.mark.parametrize("url", ["nonsense", "postgresql://alice:s3cret@host:port/db"])
def test_malformed_db_url(url: str) -> None:
    line = one_error(flywheel_cli("db", "upgrade", "--db", url), "not a database URL")
    assert "s3cret" not in line


def test_unreachable_postgresql(tmp_path: Path) -> None:
    url = "postgresql+psycopg://flywheel:s3cret@127.0.0.1:1/flywheel"
    out = tmp_path / "x.jsonl"
    line = one_error(flywheel_cli("feedback", "export", "--format", "dpo", "--out", out,
                                  "--db", url), "cannot connect", "127.0.0.1")
    assert "s3cret" not in line
    assert not out.exists()


def test_serve_rejects_a_bad_db_before_serving() -> None:
    one_error(flywheel_cli("serve", "--db", "nonsense"), "not a database URL")


def test_serve_rejects_a_short_secret_key_before_serving(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_SECRET_KEY", "hunter2")
    one_error(flywheel_cli("serve", "--data-dir", tmp_path), "FLYWHEEL_SECRET_KEY has 7 characters")


def test_db_upgrade_prints_the_revision(db_url: str) -> None:
    first = ok(flywheel_cli("db", "upgrade", "--db", db_url))
    engine = open_store(db_url)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    assert revision
    assert first.strip() == f"schema at revision {revision}"
    assert ok(flywheel_cli("db", "upgrade", "--db", db_url)) == first  # idempotent


def test_default_store_is_sqlite_in_the_data_dir(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ok(flywheel_cli("db", "upgrade"))
    assert (tmp_path / "flywheel-data" / "flywheel.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flywheel-data"]


def test_environment_fills_in_absent_options(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "env-data"))
    ok(flywheel_cli("db", "upgrade"))
    assert (tmp_path / "env-data" / "flywheel.db").is_file()

    monkeypatch.setenv("FLYWHEEL_DB", sqlite_url(tmp_path / "env.db"))
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIR)
    ok(flywheel_cli("feedback", "import", data))  # FLYWHEEL_DB beats the data dir's default
    assert (tmp_path / "env.db").is_file()
    assert len(export(sqlite_url(tmp_path / "env.db"), "dpo", tmp_path / "dpo.jsonl")) == 1
    assert not (tmp_path / "flywheel-data").exists()

    monkeypatch.setenv("FLYWHEEL_DB", "nonsense")  # read, so it fails
    one_error(flywheel_cli("users", "create", "alice"), "not a database URL")


def test_options_beat_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLYWHEEL_DB", sqlite_url(tmp_path / "env.db"))
    ok(flywheel_cli("db", "upgrade", "--db", sqlite_url(tmp_path / "option.db")))
    assert (tmp_path / "option.db").is_file() and not (tmp_path / "env.db").exists()

    monkeypatch.delenv("FLYWHEEL_DB")
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "env-data"))
    ok(flywheel_cli("db", "upgrade", "--data-dir", tmp_path / "option-data"))
    assert (tmp_path / "option-data" / "flywheel.db").is_file()
    assert not (tmp_path / "env-data").exists()


# -- users ------------------------------------------------------------------------------


def test_users_create_prints_the_key_once_and_stores_its_hash(db_url: str,
                                                              tmp_path: Path) -> None:
    out = ok(flywheel_cli("users", "create", "alice", "--role", "operator", "--db", db_url))
    lines = out.splitlines()
    assert len(lines) == 2 and "operator alice" in lines[0]
    key = lines[1]
    assert key.startswith("fw-") and len(key) > 40
    assert out.count(key) == 1

    engine = open_store(db_url)
    try:
        with Session(engine) as session:
            user = session.exec(select(User).where(User.handle == "alice")).one()
            assert user.role == "operator"
            assert user.api_key_hash == hash_api_key(key) != key
            assert key not in user.model_dump_json()
    finally:
        engine.dispose()
    if db_url.startswith("sqlite"):  # the key is nowhere in the database's files
        assert all(key.encode() not in p.read_bytes() for p in tmp_path.glob("flywheel.db*"))

    one_error(flywheel_cli("users", "create", "alice", "--db", db_url), "alice",
              "already exists")


def test_users_create_rejects_an_unknown_role(tmp_path: Path) -> None:
    usage_error(flywheel_cli("users", "create", "bob", "--role", "root",
                             "--db", sqlite_url(tmp_path / "f.db")), "--role")


def test_users_create_rejects_an_overlong_handle(db_url: str) -> None:
    one_error(flywheel_cli("users", "create", "x" * 65, "--db", db_url), "handle")


# -- demo model -----------------------------------------------------------------------------


def test_demo_model_writes_a_loadable_model(tmp_path: Path, models_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Writing is tested here; teaching (minutes on CPU) in tests/flywheel/test_demo_model.py.
    monkeypatch.setattr("flywheel.demo_model.TEACHING_STEPS", 2)
    target = tmp_path / "demo"
    out = ok(flywheel_cli("demo-model", "--out", target))
    assert str(target) in out
    loaded = load_model(str(target), models_dir=models_dir, device="cpu")
    assert loaded.is_demo is True


def test_demo_model_refuses_to_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "demo"
    target.mkdir()
    one_error(flywheel_cli("demo-model", "--out", target), str(target), "already exists")
    assert list(target.iterdir()) == []

    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))  # default target
    default = tmp_path / "data" / "models" / "demo"
    default.mkdir(parents=True)
    one_error(flywheel_cli("demo-model"), str(default), "already exists")


# -- the installed console script --------------------------------------------------------


def test_console_script_reports_one_error_line(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "flywheel"
    assert script.is_file(), "the `flywheel` console script is not installed (pip install -e .)"
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLYWHEEL_")}
    env["HF_HUB_OFFLINE"] = "1"

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *map(str, args)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=60)

    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"flywheel {flywheel.__version__}"

    missing = tmp_path / "missing.jsonl"
    failed = run("feedback", "import", missing, "--db", sqlite_url(tmp_path / "f.db"))
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert "Traceback" not in failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {missing}"), failed.stderr


def test_an_error_is_exactly_one_line_of_stderr(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    result = flywheel_cli("feedback", "import", missing, "--db", sqlite_url(tmp_path / "f.db"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")


def test_a_serving_process_gives_torch_the_threads_and_keep_alive_its_settings_say(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import torch
    import uvicorn

    from flywheel.cli.serving import run_until_stopped

    seen, configured = [], {}

    class Server:
        def __init__(self, config):
            self.should_exit = False

        def run(self):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    monkeypatch.setattr(uvicorn, "Server", Server)
    monkeypatch.setattr(uvicorn, "Config", lambda app, **options: configured.update(options))
    app = types.SimpleNamespace(state=types.SimpleNamespace(
        startup=types.SimpleNamespace(on_failure=None, error=None)))
    try:
        run_until_stopped(app, "server", Settings(torch_threads=1, keep_alive_s=30))
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
    assert configured["timeout_keep_alive"] == 30  # uvicorn's own default is 5 s
