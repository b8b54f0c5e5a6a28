"""`flywheel train dpo`: preference pairs in, an adapter saved and registered as training,
the run recorded as a dpo run; a file without pairs is one error line. (`train ppo` is
tested in tests/trainer/test_ppo_cli.py; `--processes` in test_cli_training.py.)"""

import json

from feedback.db import open_store, session_scope
from feedback.queries import adapters, runs
from tests.flywheel.test_cli import flywheel_cli, ok, one_error, write_jsonl
from tests.trainer.synthetic import synthetic_rows


def test_train_dpo_saves_and_registers_an_adapter(tmp_path, tiny_model_dirs):
    data = write_jsonl(tmp_path / "prefs.jsonl", *synthetic_rows(6))
    output = ok(flywheel_cli("train", "dpo", "--data", data, "--data-dir", tmp_path / "data",
                             "--model", tiny_model_dirs["llama"], "--batch-size", 2,
                             "--max-length", 48, "--lr", 1e-2, "--seed", 1))
    lines = output.strip().splitlines()
    assert lines[0].startswith("DPO on ") and lines[0].endswith(", fresh LoRA")
    assert lines[1].startswith("step 0: loss ") and "margin" in lines[1]
    summary = json.loads(lines[-1])
    assert summary["adapter"] == "policy-v1" and summary["steps"] == len(lines) - 3 == 3
    assert (tmp_path / "data" / "adapters" / "policy-v1" / "adapter_model.safetensors").is_file()
    engine = open_store(f"sqlite:///{tmp_path / 'data' / 'flywheel.db'}")
    with session_scope(engine) as session:
        adapter = adapters.get_adapter(session, version="policy-v1")
        (run,) = runs.list_runs(session, kind="dpo")
        assert adapter.status == "training" and adapter.parent_version is None
        assert run.status == "succeeded" and run.adapter_version == "policy-v1"
        assert run.config["beta"] == 0.1 and run.data_window["source"] == str(data)
    engine.dispose()


def test_train_dpo_without_pairs_says_so(tmp_path):
    empty = write_jsonl(tmp_path / "empty.jsonl")
    one_error(flywheel_cli("train", "dpo", "--data", empty, "--data-dir", tmp_path),
              "no preference pairs")
