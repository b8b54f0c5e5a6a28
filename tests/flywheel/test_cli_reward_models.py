"""`flywheel reward-models list | show`: the registry's reward models, as lines or JSON,
and the models of a data directory made before the registry imported first."""

import json
from pathlib import Path

import pytest

from feedback.db import open_store, session_scope
from feedback.queries import reward_models as rq
from flywheel.settings import Settings
from tests.flywheel.test_cli import flywheel_cli, ok, one_error, sqlite_url

HELDOUT = {"accuracy": 0.715, "loss": 0.58, "ece": 0.05, "pairs": 120}
MARGINS = {"rm-0001": {},  # registered before margins were kept
           "rm-0002": {"margin": 0.61, "margin_low": 0.2, "margin_high": 1.06},
           "rm-0003": {"margin": 0.1, "margin_low": -0.05, "margin_high": 0.25}}


@pytest.fixture(autouse=True)
def _no_flywheel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"FLYWHEEL_{name.upper()}", raising=False)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A store with three reward models: rm-0001 retired, rm-0002 current, rm-0003
    rejected."""
    url = sqlite_url(tmp_path / "store.db")
    engine = open_store(url)
    with session_scope(engine) as session:
        for version, status in (("rm-0001", "current"), ("rm-0002", "current"),
                                ("rm-0003", "rejected")):
            rq.register_reward_model(
                session, version=version, path=f"/data/reward_models/{version}",
                backbone="minilm", actor="scheduler", status=status,
                parent_version=None if version == "rm-0001" else "rm-0001",
                data_window={"since": None, "until": "2026-01-02T03:04:05+00:00",
                             "pairs": 900, "heldout_pairs": 120},
                heldout={**HELDOUT, **MARGINS[version]},
                detail={"accuracy": 0.6, "current_accuracy": 0.715}
                if status == "rejected" else None)
    engine.dispose()
    return url


def test_list_shows_every_reward_model_newest_first(db, tmp_path):
    lines = ok(flywheel_cli("reward-models", "list", "--db", db, "--data-dir",
                            tmp_path)).splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["rm-0003", "rejected"], ["rm-0002", "current"], ["rm-0001", "retired"]]
    assert "accuracy 0.715 on 120 pairs" in lines[0] and "parent rm-0001" in lines[0]
    assert "margin +0.10 (-0.05 to +0.25)  no better than chance" in lines[0]
    assert "margin +0.61 (+0.20 to +1.06) " in lines[1] and "chance" not in lines[1]
    assert "margin" not in lines[2]  # rm-0001 has none
    current = ok(flywheel_cli("reward-models", "list", "--status", "current", "--db", db,
                              "--data-dir", tmp_path))
    assert current.split()[:2] == ["rm-0002", "current"] and len(current.splitlines()) == 1
    rows = [json.loads(line) for line in ok(flywheel_cli(
        "reward-models", "list", "--json", "--db", db, "--data-dir", tmp_path)).splitlines()]
    assert [r["version"] for r in rows] == ["rm-0003", "rm-0002", "rm-0001"]
    assert rows[0]["heldout"] == {**HELDOUT, **MARGINS["rm-0003"]}
    assert rows[0]["data_window"]["pairs"] == 900


def test_show_gives_the_data_window_figures_and_audit_trail(db, tmp_path):
    out = ok(flywheel_cli("reward-models", "show", "rm-0003", "--db", db, "--data-dir",
                          tmp_path))
    assert "path /data/reward_models/rm-0003" in out and "backbone minilm" in out
    assert '"heldout_pairs": 120' in out and '"accuracy": 0.715' in out
    assert "rejected     by scheduler" in out and '"current_accuracy": 0.715' in out
    shown = json.loads(ok(flywheel_cli("reward-models", "show", "rm-0001", "--json", "--db",
                                       db, "--data-dir", tmp_path)))
    assert shown["status"] == "retired"
    assert [e["action"] for e in shown["audit"]] == ["retired", "made_current", "registered"]
    assert shown["audit"][0]["detail"] == {"replaced_by": "rm-0002"}
    one_error(flywheel_cli("reward-models", "show", "rm-0009", "--db", db, "--data-dir",
                           tmp_path), "reward model rm-0009 not found")


def test_an_empty_registry_says_so(tmp_path):
    assert ok(flywheel_cli("reward-models", "list", "--db", sqlite_url(tmp_path / "e.db"),
                           "--data-dir", tmp_path)) == "no reward models yet\n"


def test_a_data_directory_made_before_the_registry_is_imported(tmp_path):
    root = tmp_path / "reward_models"
    (root / "rm-0001").mkdir(parents=True)
    (root / "rm-0001" / "reward_config.json").write_text(json.dumps({"backbone": "minilm"}))
    (root / "CURRENT").write_text("rm-0001\n")
    out = ok(flywheel_cli("reward-models", "list", "--db", sqlite_url(tmp_path / "s.db"),
                          "--data-dir", tmp_path))
    assert out.split()[:3] == ["rm-0001", "current", "accuracy"]
    assert (root / "CURRENT.imported").is_file()


def test_help_lists_the_commands():
    out = ok(flywheel_cli("reward-models", "--help"))
    assert "list" in out and "show" in out
    assert "reward-models" in ok(flywheel_cli("--help"))
