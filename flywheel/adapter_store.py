"""Versioned, immutable LoRA adapters on disk, in the `save_pretrained` layout.

`root/<version>/` holds `adapter_model.safetensors` and `adapter_config.json` exactly as
`PeftModel.save_pretrained` writes them (so `PeftModel.from_pretrained` and vLLM read them as
they are), plus `manifest.json`: version, parent, base model, creation time, the sha256 and
size of every file, and the shape of every tensor. A version is written in a hidden temporary
directory inside `root`, fsynced, then renamed into place, so it appears complete or not at all,
and it is never rewritten.

A manifest only proves the files agree with each other: whoever replaces the weights can
rewrite it to match. What is served is checked against the checksum the registry recorded
when the version was registered (`verify(version, sha256=...)`).
"""

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers.pytorch_utils import Conv1D

from feedback.private import private_dirs
from flywheel import generation
from flywheel.errors import FlywheelError

VERSION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MANIFEST = "manifest.json"
WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
TMP_PREFIX = ".tmp-"
MANIFEST_FORMAT = 1


class AdapterIntegrityError(FlywheelError):
    """An adapter's files do not match its manifest (corrupted, truncated, missing or added)
    or the registry's checksum (replaced), or its weights are unreadable or not finite."""


class AdapterShapeError(FlywheelError):
    """An adapter's tensors do not fit the base model it is being loaded into."""


@dataclass(frozen=True)
class StoredAdapter:
    version: str
    path: Path
    sha256: str  # sha256 of the manifest's file table: one checksum for the whole adapter


class AdapterStore:
    """Saves, verifies and loads versioned LoRA adapters under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def list_versions(self) -> list[str]:
        """Every stored version, in natural order (policy-v2 before policy-v10)."""
        if not self.root.is_dir():
            return []
        names = [
            p.name for p in self.root.iterdir() if p.is_dir() and VERSION_PATTERN.fullmatch(p.name)
        ]
        return sorted(names, key=_natural_key)

    def path(self, version: str) -> Path:
        """The directory of a stored version."""
        path = self.root / _checked_version(version)
        if not path.is_dir():
            raise FlywheelError(f"no adapter version {version!r} in {self.root}")
        return path

    def manifest(self, version: str) -> dict[str, Any]:
        """The parsed manifest of a stored version."""
        manifest_path = self.path(version) / MANIFEST
        try:
            return json.loads(manifest_path.read_text())
        except FileNotFoundError as exc:
            raise AdapterIntegrityError(f"adapter {version} has no {MANIFEST}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdapterIntegrityError(f"adapter {version} has an unreadable {MANIFEST}") from exc

    def next_version(self, prefix: str = "policy") -> str:
        """The next free `<prefix>-v<n>` name: one past the highest stored n."""
        _checked_version(f"{prefix}-v1")
        numbered = re.compile(rf"^{re.escape(prefix)}-v(\d+)$")
        found = [int(m.group(1)) for v in self.list_versions() if (m := numbered.match(v))]
        return f"{prefix}-v{max(found, default=0) + 1}"

    def save(
        self,
        model: PeftModel,
        version: str,
        *,
        adapter_name: str = "default",
        parent: str | None = None,
        base_model: str | None = None,
    ) -> StoredAdapter:
        """Store `model`'s adapter `adapter_name` as the new, immutable `version`.

        `base_model` defaults to the `base_model_name_or_path` peft records.
        """
        final = self.root / _checked_version(version)
        if parent is not None:
            _checked_version(parent)
        if final.exists():
            raise self._exists_error(version)
        private_dirs(self.root)
        tmp = self.root / f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        try:
            _save_flat(model, tmp, adapter_name)
            files = _file_table(tmp)
            adapter_config = json.loads((tmp / ADAPTER_CONFIG).read_text())
            manifest = {
                "format": MANIFEST_FORMAT,
                "version": version,
                "parent": parent,
                "base_model": base_model or adapter_config.get("base_model_name_or_path"),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "sha256": files_sha256(files),
                "files": files,
                "tensors": _tensor_shapes(tmp / WEIGHTS),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            for path in tmp.iterdir():
                _fsync(path)
            _fsync(tmp)
            try:
                tmp.rename(final)  # atomic; fails if another writer published this version first
            except OSError as exc:
                if final.exists():
                    raise self._exists_error(version) from exc
                raise
            _fsync(self.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return StoredAdapter(version=version, path=final, sha256=manifest["sha256"])

    def verify(self, version: str, *, sha256: str | None = None) -> StoredAdapter:
        """Re-hash every file against the manifest, and the manifest against `sha256` (the
        checksum the registry holds for `version`), then read every tensor: raise
        AdapterIntegrityError on any mismatch, or on weights unreadable or not finite."""
        path = self.path(version)
        manifest = self.manifest(version)
        try:
            files = manifest["files"]
            listed = {entry["path"]: (entry["size"], entry["sha256"]) for entry in files}
            expected_sha = manifest["sha256"]
        except (KeyError, TypeError) as exc:
            raise AdapterIntegrityError(f"adapter {version} has a malformed {MANIFEST}") from exc
        for required in (WEIGHTS, ADAPTER_CONFIG):
            if required not in listed:
                raise AdapterIntegrityError(f"adapter {version} has no {required} in its manifest")
        for name, (size, file_sha256) in listed.items():
            file = path / name
            if Path(name).name != name or not file.is_file():
                raise AdapterIntegrityError(f"adapter {version}: file {name} is missing")
            if file.stat().st_size != size or _sha256(file) != file_sha256:
                raise AdapterIntegrityError(
                    f"adapter {version}: file {name} does not match its checksum (corrupted)"
                )
        extra = sorted(
            p.name for p in path.iterdir() if p.name not in listed and p.name != MANIFEST
        )
        if extra:
            raise AdapterIntegrityError(f"adapter {version}: unexpected files {', '.join(extra)}")
        if files_sha256(files) != expected_sha:
            raise AdapterIntegrityError(f"adapter {version}: the manifest's checksum was altered")
        if sha256 is not None and expected_sha != sha256:
            raise AdapterIntegrityError(
                f"adapter {version}: its checksum {expected_sha[:12]}… differs from the "
                f"registry's {sha256[:12]}… (its files were replaced)")
        _check_weights(path / WEIGHTS, version=version)
        return StoredAdapter(version=version, path=path, sha256=expected_sha)

    def load(
        self,
        model: nn.Module,
        version: str,
        *,
        adapter_name: str | None = None,
        is_trainable: bool = False,
        sha256: str | None = None,
    ) -> PeftModel:
        """Verify `version` (against the registry's `sha256` when given), check it fits
        `model`, then load it as a named adapter.

        `model` is a plain transformers model (wrapped with PeftModel.from_pretrained) or a
        PeftModel (the adapter is added beside the loaded ones and not activated). The name
        defaults to the version with dots replaced by underscores. A failed load leaves the
        adapters already loaded untouched.
        """
        stored = self.verify(version, sha256=sha256)
        name = adapter_name or generation.adapter_name(version)
        is_peft = isinstance(model, PeftModel)
        if is_peft and name in model.peft_config:
            raise FlywheelError(f"an adapter named {name!r} is already loaded")
        base = model.get_base_model() if is_peft else model
        check_adapter_fits(base, stored.path, version=version)
        device = str(next(base.parameters()).device)
        if not is_peft:
            return PeftModel.from_pretrained(
                model,
                str(stored.path),
                adapter_name=name,
                is_trainable=is_trainable,
                torch_device=device,
            )
        try:
            model.load_adapter(
                str(stored.path), adapter_name=name, is_trainable=is_trainable, torch_device=device
            )
        except Exception:
            if name in model.peft_config:  # half-added: remove it, the others stay as they were
                model.delete_adapter(name)
            raise
        return model

    def cleanup(self, *, older_than_s: float = 3600.0) -> list[Path]:
        """Remove temporary directories left by crashed writers; returns what was removed.

        Only those untouched for `older_than_s` seconds, so a save in progress is left alone.
        """
        if not self.root.is_dir():
            return []
        cutoff = time.time() - older_than_s
        stale = [
            p
            for p in self.root.iterdir()
            if p.name.startswith(TMP_PREFIX) and p.is_dir() and p.stat().st_mtime <= cutoff
        ]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return stale

    def _exists_error(self, version: str) -> FlywheelError:
        return FlywheelError(
            f"adapter version {version!r} already exists in {self.root}; versions are immutable"
        )


def check_adapter_fits(base: nn.Module, adapter_dir: Path, *, version: str) -> None:
    """Raise AdapterShapeError unless every LoRA tensor fits `base`'s layers and the config's rank.

    lora_A must be (rank, in_features) and lora_B (out_features, rank) of the layer it adapts.
    """
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    config_rank = None if config.get("rank_pattern") else config.get("r")
    problems = []
    for key, shape in _tensor_shapes(adapter_dir / WEIGHTS).items():
        match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight", key)
        if match is None:
            continue
        module_path, which = match.groups()
        try:
            layer = base.get_submodule(module_path)
        except AttributeError:
            problems.append(f"tensor {key} adapts layer {module_path}, which the model lacks")
            continue
        features = _in_out_features(layer)
        if features is None or len(shape) != 2:
            continue  # not a linear layer: peft checks these itself
        in_features, out_features = features
        rank = config_rank or (shape[0] if which == "A" else shape[1])
        expected = (rank, in_features) if which == "A" else (out_features, rank)
        if tuple(shape) != expected:
            problems.append(
                f"tensor {key} has shape {tuple(shape)}, the model needs {expected} "
                f"(layer {module_path}: {in_features} in, {out_features} out; LoRA rank {rank})"
            )
    if problems:
        more = f" (and {len(problems) - 1} more tensors)" if len(problems) > 1 else ""
        raise AdapterShapeError(
            f"adapter {version} does not fit this base model: {problems[0]}{more}"
        )


def files_sha256(files: list[dict[str, Any]]) -> str:
    """The adapter's checksum: sha256 of its file table in a canonical JSON form."""
    table = sorted(
        ({"path": f["path"], "sha256": f["sha256"], "size": f["size"]} for f in files),
        key=lambda f: f["path"],
    )
    return hashlib.sha256(
        json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _save_flat(model: PeftModel, directory: Path, adapter_name: str) -> None:
    """save_pretrained one adapter straight into `directory` (peft nests non-default ones)."""
    if not isinstance(model, PeftModel):
        raise TypeError(f"expected a PeftModel, got {type(model).__name__}")
    # Only the LoRA tensors: peft would otherwise save the whole (frozen) embedding matrix
    # beside an adapter of the LM head.
    model.save_pretrained(str(directory), selected_adapters=[adapter_name],
                          save_embedding_layers=False)
    nested = directory / adapter_name
    if adapter_name != "default" and nested.is_dir():
        for path in nested.iterdir():
            path.rename(directory / path.name)
        nested.rmdir()


def _file_table(directory: Path) -> list[dict[str, Any]]:
    return [
        {"path": p.name, "sha256": _sha256(p), "size": p.stat().st_size}
        for p in sorted(directory.iterdir())
        if p.is_file()
    ]


def _tensor_shapes(weights: Path) -> dict[str, list[int]]:
    with safe_open(str(weights), framework="pt") as f:
        return {key: list(f.get_slice(key).get_shape()) for key in sorted(f.keys())}


def _check_weights(weights: Path, *, version: str) -> None:
    """Every tensor readable and finite: one NaN weight would poison every answer."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                if not torch.isfinite(f.get_tensor(key)).all():
                    raise AdapterIntegrityError(
                        f"adapter {version}: tensor {key} holds NaN or infinite values")
    except (SafetensorError, OSError) as exc:
        raise AdapterIntegrityError(
            f"adapter {version}: its weights cannot be read ({exc})") from exc


def _in_out_features(layer: nn.Module) -> tuple[int, int] | None:
    while hasattr(layer, "base_layer"):  # a layer peft already wrapped
        layer = layer.base_layer
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    if isinstance(layer, Conv1D):
        return layer.nx, layer.nf
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checked_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise FlywheelError(
            f"invalid adapter version {version!r}: use 1-64 lowercase letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (e.g. policy-v7)"
        )
    return version


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
