"""The reward models' store: saved as the next version, registered current only if not
worse than the current one on the held-out pairs (else rejected), and a store made before
the registry (a `CURRENT` file) imported once."""

import json
import shutil
from pathlib import Path

import pytest

from feedback.db import open_store, session_scope
from feedback.queries import reward_models as rq
from trainer.reward import (
    RewardModel,
    current_reward_model,
    evaluate_reward_model,
    register_reward_model,
    registered_version,
    reward_models_dir,
)
from trainer.reward.model import CONFIG_FILE
from trainer.reward.store import import_legacy_reward_models
from trainer.reward.train import HELDOUT_FIGURES

WINDOW = {"since": None, "until": "2026-01-02T03:04:05+00:00", "pairs": 48,
          "heldout_pairs": 32}


@pytest.fixture
def engine(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'flywheel.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def untrained():
    return RewardModel.create(max_length=32, device="cpu")


def _register(engine, data_dir, model, pairs, **kw):
    return register_reward_model(engine, model, data_dir=data_dir, validation_pairs=pairs,
                                 data_window=WINDOW, actor="scheduler", **kw)


def test_a_worse_model_is_registered_rejected(engine, tmp_path, trained, untrained):
    model, _, heldout = trained
    assert current_reward_model(engine, tmp_path) is None
    good = _register(engine, tmp_path, model, heldout)
    assert good.version == "rm-0001" and good.kept and good.in_use == good.path
    assert good.path == reward_models_dir(tmp_path) / "rm-0001"
    assert current_reward_model(engine, tmp_path) == good.path.resolve()
    assert evaluate_reward_model(untrained, heldout)["accuracy"] < 0.9

    worse = _register(engine, tmp_path, untrained, heldout)
    assert (worse.version, worse.kept, worse.in_use) == ("rm-0002", False, good.path.resolve())
    assert current_reward_model(engine, tmp_path) == good.path.resolve()
    anything_goes = _register(engine, tmp_path, untrained, heldout, tolerance=1.0)
    assert anything_goes.kept and anything_goes.version == "rm-0003"

    with session_scope(engine) as session:
        rows = {r.version: r for r in rq.list_reward_models(session)}
        verdict = rq.reward_model_audit_events(session, version="rm-0002")[0]
    assert {v: r.status for v, r in rows.items()} == {
        "rm-0001": "retired", "rm-0002": "rejected", "rm-0003": "current"}
    assert [rows[v].parent_version for v in ("rm-0001", "rm-0002", "rm-0003")] == [
        None, "rm-0001", "rm-0001"]  # the one current when each was trained
    first = rows["rm-0001"]
    assert first.backbone == "minilm" and first.data_window == WINDOW
    assert first.path == str(good.path.resolve())
    assert first.heldout == {k: model.metrics["heldout"][k] for k in HELDOUT_FIGURES}
    # what each registration reports in use: the kept model's figures, else the current's
    assert good.heldout == worse.heldout == first.heldout
    assert good.heldout["margin_low"] > 0
    assert verdict.action == "rejected" and verdict.actor == "scheduler"
    assert verdict.detail["compared_with"] == "rm-0001" and verdict.detail["pairs"] == 32
    assert verdict.detail["accuracy"] < verdict.detail["current_accuracy"]


def test_without_heldout_pairs_the_new_model_is_kept(engine, tmp_path, untrained):
    _register(engine, tmp_path, untrained, [])
    second = _register(engine, tmp_path, untrained, [])
    assert second.kept and second.version == "rm-0002"
    assert second.heldout["pairs"] == 0 and second.heldout["margin_low"] is None
    with session_scope(engine) as session:
        row = rq.get_reward_model(session, version="rm-0002")
        made_current = rq.reward_model_audit_events(session, version="rm-0002")[0]
    assert row.heldout == {**dict.fromkeys(HELDOUT_FIGURES), "pairs": 0}
    assert made_current.detail == {"compared_with": None, "reason": "no held-out pairs"}


def test_versions_skip_directories_left_on_disk(engine, tmp_path, untrained):
    (reward_models_dir(tmp_path) / "rm-0007").mkdir(parents=True)  # a crashed save
    assert _register(engine, tmp_path, untrained, []).version == "rm-0008"


def test_a_moved_data_directory_still_finds_its_models(engine, tmp_path, untrained):
    registered = _register(engine, tmp_path / "old", untrained, [])
    shutil.move(tmp_path / "old", tmp_path / "new")
    found = current_reward_model(engine, tmp_path / "new")
    assert found == reward_models_dir(tmp_path / "new") / "rm-0001"
    assert registered_version(engine, tmp_path / "new", found) == registered.version
    assert registered_version(engine, tmp_path / "new", tmp_path) is None
    shutil.rmtree(found)
    assert current_reward_model(engine, tmp_path / "new") is None  # its files are gone


def _legacy_store(data_dir: Path, pointer: str | None) -> Path:
    """A data directory as the loop left it before the registry: rm-0001..rm-0003 and a
    `CURRENT` file (the directories hold only their config: nothing here loads them)."""
    root = reward_models_dir(data_dir)
    for n, accuracy in ((1, 0.6), (2, 0.7), (3, 0.65)):
        (root / f"rm-000{n}").mkdir(parents=True)
        (root / f"rm-000{n}" / CONFIG_FILE).write_text(json.dumps({
            "backbone": "minilm", "metrics": {"heldout": {
                "accuracy": accuracy, "loss": 0.6, "ece": 0.1, "pairs": 20}}}))
    (root / "rm-0009").mkdir()  # not a model: no config
    if pointer is not None:
        (root / "CURRENT").write_text(pointer + "\n")
    return root


def test_a_store_made_before_the_registry_is_imported_once(engine, tmp_path):
    root = _legacy_store(tmp_path, "rm-0002")
    assert current_reward_model(engine, tmp_path) == root / "rm-0002"
    assert not (root / "CURRENT").exists() and (root / "CURRENT.imported").is_file()
    with session_scope(engine) as session:
        rows = {r.version: r for r in rq.list_reward_models(session)}
        trail = rq.reward_model_audit_events(session, version="rm-0002")
    assert {v: r.status for v, r in rows.items()} == {
        "rm-0001": "retired", "rm-0002": "current", "rm-0003": "rejected"}
    assert rows["rm-0002"].heldout == {"accuracy": 0.7, "loss": 0.6, "ece": 0.1, "pairs": 20}
    assert rows["rm-0002"].path == str((root / "rm-0002").resolve())
    assert [(e.action, e.actor) for e in trail] == [("made_current", "import"),
                                                    ("registered", "import")]
    assert trail[0].detail == {"imported_from": str(root / "CURRENT")}
    (root / "CURRENT").write_text("rm-0001\n")  # an old process wrote it again: ignored
    assert import_legacy_reward_models(engine, tmp_path) == 0
    assert current_reward_model(engine, tmp_path) == root / "rm-0002"


def test_without_a_current_file_nothing_is_imported(engine, tmp_path):
    _legacy_store(tmp_path, None)
    assert import_legacy_reward_models(engine, tmp_path) == 0
    assert current_reward_model(engine, tmp_path) is None
