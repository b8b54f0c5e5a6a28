import json
import stat
from pathlib import Path

import peft.peft_model
import pytest
import torch
from peft import PeftModel, get_peft_model

from flywheel import adapter_store
from flywheel.adapter_store import (
    AdapterIntegrityError,
    AdapterShapeError,
    AdapterStore,
    files_sha256,
)
from flywheel.errors import FlywheelError
from flywheel.model_loading import lora_config
from tests.fixtures.tiny_models import build_tiny_model

IDS = torch.tensor([[5310, 1024, 7592, 2045, 3353, 1024]])


def make_peft_model(
    kind: str = "llama", *, seed: int = 1, r: int = 4, hidden_size: int = 32, name="default"
) -> PeftModel:
    """A tiny model with a LoRA adapter drawn from `seed`, B non-zero (so it changes outputs)."""
    base = build_tiny_model(kind, hidden_size=hidden_size)
    model = get_peft_model(base, lora_config(base, r=r, dropout=0.0), adapter_name=name)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "lora_" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model.eval()


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.fixture
def store(tmp_path: Path) -> AdapterStore:
    return AdapterStore(tmp_path / "adapters")


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_save_then_load_gives_identical_outputs(store, kind) -> None:
    trained = make_peft_model(kind)
    stored = store.save(trained, "policy-v1", base_model="tiny")

    fresh_base = build_tiny_model(kind)
    base_logits = logits(fresh_base)
    loaded = store.load(fresh_base, "policy-v1")

    assert isinstance(loaded, PeftModel) and loaded.active_adapter == "policy-v1"
    assert torch.equal(logits(loaded), logits(trained))
    assert not torch.allclose(logits(loaded), base_logits)  # the adapter really is applied
    assert stored.path == store.root / "policy-v1"
    assert store.manifest("policy-v1")["base_model"] == "tiny"


def test_the_store_directory_it_creates_is_private(tmp_path) -> None:
    store = AdapterStore(tmp_path / "data" / "adapters")
    store.save(make_peft_model(), "policy-v1")
    for made in (store.root, store.root.parent):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made


def test_layout_is_plain_save_pretrained_with_a_manifest(store) -> None:
    trained = make_peft_model(name="candidate")  # peft nests non-default names: stored flat
    stored = store.save(trained, "policy-v3", adapter_name="candidate", parent="policy-v2")
    names = {p.name for p in stored.path.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "manifest.json"} <= names

    # peft reads the directory as it is, with no help from the store.
    plain = PeftModel.from_pretrained(build_tiny_model("llama"), str(stored.path))
    assert torch.equal(logits(plain), logits(trained))

    manifest = store.manifest("policy-v3")
    assert (manifest["version"], manifest["parent"]) == ("policy-v3", "policy-v2")
    assert manifest["sha256"] == stored.sha256 == files_sha256(manifest["files"])
    assert {f["path"] for f in manifest["files"]} == names - {"manifest.json"}
    weights = next(f for f in manifest["files"] if f["path"] == "adapter_model.safetensors")
    assert weights["size"] == (stored.path / "adapter_model.safetensors").stat().st_size
    key = "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"
    assert manifest["tensors"][key] == [16, 4]  # 2 kv heads x head_dim 8, rank 4
    assert store.verify("policy-v3") == stored


def test_load_beside_a_live_adapter_leaves_it_active(store) -> None:
    store.save(make_peft_model(seed=2), "policy-v2")
    live = make_peft_model(seed=1)
    live_logits = logits(live)

    same = store.load(live, "policy-v2")

    assert same is live and set(live.peft_config) == {"default", "policy-v2"}
    assert live.active_adapter == "default" and torch.equal(logits(live), live_logits)
    live.set_adapter("policy-v2")
    assert torch.equal(logits(live), logits(make_peft_model(seed=2)))


def test_stored_adapters_serve_a_mixed_batch(store) -> None:
    store.save(make_peft_model(seed=1), "policy-v1")
    store.save(make_peft_model(seed=2), "policy-v2")
    served = store.load(build_tiny_model("llama"), "policy-v1")
    store.load(served, "policy-v2")
    batch = IDS.repeat(3, 1)
    with torch.no_grad():
        mixed = served(input_ids=batch, adapter_names=["policy-v1", "__base__", "policy-v2"]).logits
    assert torch.allclose(mixed[0], logits(make_peft_model(seed=1))[0], atol=1e-5)
    assert torch.allclose(mixed[1], logits(build_tiny_model("llama"))[0], atol=1e-5)
    assert torch.allclose(mixed[2], logits(make_peft_model(seed=2))[0], atol=1e-5)


def test_a_version_is_never_overwritten(store) -> None:
    first = store.save(make_peft_model(seed=1), "policy-v1")
    with pytest.raises(FlywheelError, match="already exists"):
        store.save(make_peft_model(seed=2), "policy-v1")
    assert store.verify("policy-v1").sha256 == first.sha256
    assert store.list_versions() == ["policy-v1"]


def test_concurrent_writers_of_one_version_cannot_both_publish(store, monkeypatch) -> None:
    real_file_table = adapter_store._file_table
    rival = make_peft_model(seed=2)

    def rival_publishes_first(directory):
        monkeypatch.setattr(adapter_store, "_file_table", real_file_table)
        store.save(rival, "policy-v1")  # lands between our existence check and our rename
        return real_file_table(directory)

    monkeypatch.setattr(adapter_store, "_file_table", rival_publishes_first)
    with pytest.raises(FlywheelError, match="already exists"):
        store.save(make_peft_model(seed=1), "policy-v1")
    assert [p.name for p in store.root.iterdir()] == ["policy-v1"]  # no temp dir left
    loaded = store.load(build_tiny_model("llama"), "policy-v1")
    assert torch.equal(logits(loaded), logits(rival))


def test_crash_mid_write_leaves_no_version(store, monkeypatch) -> None:
    def crash(self, save_directory, **kwargs):
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / "adapter_model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(PeftModel, "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save(make_peft_model(), "policy-v1")
    assert store.list_versions() == []
    assert list(store.root.iterdir()) == []


def test_a_killed_writer_leaves_only_a_hidden_temp_dir_that_cleanup_removes(store) -> None:
    stale = store.root / ".tmp-policy-v1-deadbeef"  # what a killed `save` leaves behind
    stale.mkdir(parents=True)
    (stale / "adapter_model.safetensors").write_bytes(b"partial")

    assert store.list_versions() == [] and store.next_version() == "policy-v1"
    store.save(make_peft_model(), "policy-v1")
    assert store.list_versions() == ["policy-v1"]
    assert store.cleanup() == []  # too recent: could be a save in progress
    assert store.cleanup(older_than_s=0) == [stale]
    assert not stale.exists() and store.list_versions() == ["policy-v1"]


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _flip_a_byte(p / "adapter_model.safetensors"), "adapter_model.safetensors"),
        (lambda p: (p / "adapter_config.json").unlink(), "adapter_config.json is missing"),
        (lambda p: (p / "manifest.json").unlink(), "no manifest.json"),
        (lambda p: (p / "extra.bin").write_bytes(b"x"), "unexpected files extra.bin"),
    ],
    ids=["flipped-byte", "missing-file", "missing-manifest", "extra-file"],
)
def test_damaged_adapter_is_refused(store, damage, message) -> None:
    store.save(make_peft_model(seed=2), "policy-v2")
    damage(store.path("policy-v2"))
    live = make_peft_model(seed=1)
    live_logits = logits(live)

    with pytest.raises(AdapterIntegrityError, match=message):
        store.verify("policy-v2")
    with pytest.raises(AdapterIntegrityError):
        store.load(live, "policy-v2")
    assert set(live.peft_config) == {"default"} and torch.equal(logits(live), live_logits)


def test_edited_manifest_checksum_is_refused(store) -> None:
    stored = store.save(make_peft_model(), "policy-v1")
    manifest = json.loads((stored.path / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = "0" * 64
    (stored.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterIntegrityError):
        store.verify("policy-v1")


def test_files_replaced_with_a_matching_manifest_are_refused_by_the_registry_s_checksum(
        store) -> None:
    """Another adapter's weights and a manifest rewritten to match are consistent on disk:
    only the checksum the registry recorded tells them apart."""
    registered = store.save(make_peft_model(seed=1), "policy-v1").sha256
    other = store.save(make_peft_model(seed=2), "policy-v2")
    for path in other.path.iterdir():
        (store.path("policy-v1") / path.name).write_bytes(path.read_bytes())
    assert store.verify("policy-v1").sha256 == other.sha256  # consistent with itself
    live = make_peft_model(seed=3)
    live_logits = logits(live)

    for attempt in (lambda: store.verify("policy-v1", sha256=registered),
                    lambda: store.load(live, "policy-v1", sha256=registered)):
        with pytest.raises(AdapterIntegrityError, match="differs from the registry's"):
            attempt()
    assert set(live.peft_config) == {"default"} and torch.equal(logits(live), live_logits)
    assert store.verify("policy-v2", sha256=other.sha256) == other


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(store, value) -> None:
    trained = make_peft_model()
    with torch.no_grad():
        next(p for n, p in trained.named_parameters() if "lora_B" in n)[0, 0] = value
    stored = store.save(trained, "policy-v1")  # its checksums are right: it was saved so
    with pytest.raises(AdapterIntegrityError, match="NaN or infinite"):
        store.verify("policy-v1", sha256=stored.sha256)


def test_unreadable_weights_are_refused(store) -> None:
    """Weights that are not safetensors at all, under a manifest that matches them."""
    stored = store.save(make_peft_model(), "policy-v1")
    (stored.path / "adapter_model.safetensors").write_bytes(b"not safetensors")
    manifest = json.loads((stored.path / "manifest.json").read_text())
    manifest["files"] = adapter_store._file_table(stored.path)
    manifest["files"] = [f for f in manifest["files"] if f["path"] != "manifest.json"]
    manifest["sha256"] = files_sha256(manifest["files"])
    (stored.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterIntegrityError, match="cannot be read"):
        store.verify("policy-v1")


def test_adapter_from_a_different_sized_model_is_refused_before_loading(store) -> None:
    store.save(make_peft_model(hidden_size=48), "policy-v2")
    live = make_peft_model(seed=1)
    live_logits = logits(live)

    with pytest.raises(AdapterShapeError) as excinfo:
        store.load(live, "policy-v2")

    message = str(excinfo.value)
    assert message.startswith("adapter policy-v2 does not fit this base model: tensor ")
    assert "down_proj.lora_A.weight has shape (4, 96), the model needs (4, 64)" in message
    assert message.endswith("(and 27 more tensors)")  # all 2 layers x 7 targets x (A, B)
    assert set(live.peft_config) == {"default"} and live.active_adapter == "default"
    assert torch.equal(logits(live), live_logits)


def test_adapter_for_another_architecture_is_refused(store) -> None:
    store.save(make_peft_model("gpt2"), "policy-v1")
    with pytest.raises(
        AdapterShapeError, match=r"adapts layer transformer\.h\.0\..+ which the model"
    ):
        store.load(build_tiny_model("llama"), "policy-v1")


def test_rank_that_contradicts_adapter_config_is_refused(store) -> None:
    trained = make_peft_model(r=4)
    trained.peft_config["default"].r = 8  # a buggy writer: config says 8, tensors have 4
    store.save(trained, "policy-v1")
    with pytest.raises(AdapterShapeError, match=r"has shape \(4, 64\), the model needs \(8, 64\)"):
        store.load(build_tiny_model("llama"), "policy-v1")


def test_failed_load_removes_the_half_added_adapter(store, monkeypatch) -> None:
    store.save(make_peft_model(seed=2), "policy-v2")
    live = make_peft_model(seed=1)
    live_logits = logits(live)

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(peft.peft_model, "set_peft_model_state_dict", fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        store.load(live, "policy-v2")
    assert set(live.peft_config) == {"default"} and live.active_adapter == "default"
    assert torch.equal(logits(live), live_logits)


def test_adapter_name_already_loaded_is_refused(store) -> None:
    store.save(make_peft_model(), "policy-v1")
    live = make_peft_model()
    with pytest.raises(FlywheelError, match="already loaded"):
        store.load(live, "policy-v1", adapter_name="default")


@pytest.mark.parametrize(
    "version", ["Policy-v1", "-v1", ".tmp-x", "a/b", "", "x" * 65, "policy v1", "../up", "v1\n"]
)
def test_bad_version_names_are_refused(store, version) -> None:
    with pytest.raises(FlywheelError, match="invalid adapter version"):
        store.save(make_peft_model(), version)
    assert not store.root.exists() or list(store.root.iterdir()) == []


def test_unknown_version_is_a_clear_error(store) -> None:
    with pytest.raises(FlywheelError, match="no adapter version 'policy-v9'"):
        store.load(build_tiny_model("llama"), "policy-v9")


def test_versions_are_listed_in_natural_order_and_numbered_on(store) -> None:
    assert store.next_version() == "policy-v1"
    model = make_peft_model()
    for version in ["policy-v2", "policy-v10", "policy-v1", "rm-v1", "x.y_z"]:
        store.save(model, version)
    assert store.list_versions() == ["policy-v1", "policy-v2", "policy-v10", "rm-v1", "x.y_z"]
    assert store.next_version() == "policy-v11"
    assert store.next_version("rm") == "rm-v2"
    assert store.next_version("reward") == "reward-v1"
    with pytest.raises(FlywheelError):
        store.next_version("Bad Prefix")


def test_loaded_name_replaces_dots(store) -> None:
    store.save(make_peft_model(), "x.y_z")
    loaded = store.load(build_tiny_model("llama"), "x.y_z")
    assert loaded.active_adapter == "x_y_z"
