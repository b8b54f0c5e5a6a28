import hashlib
import random
import re
import stat
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from flywheel import demo_model
from flywheel.demo_corpus import ADJECTIVES, user_prompt
from flywheel.demo_model import (
    build_demo_tokenizer,
    demo_model_path,
    ensure_demo_model,
    write_demo_model,
)
from flywheel.errors import FlywheelError

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello there!"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "How are you?"},
]


def _weights_sha(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_demo_model_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = write_demo_model(tmp_path / "a", seed=0, teaching_steps=2)
    again = write_demo_model(tmp_path / "b", seed=0, teaching_steps=2)
    other = write_demo_model(tmp_path / "c", seed=1, teaching_steps=2)
    assert _weights_sha(first) == _weights_sha(again)
    assert _weights_sha(first) != _weights_sha(other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp dirs left


def test_demo_model_loads_with_plain_auto_classes(models_dir: Path) -> None:
    path = demo_model_path(models_dir)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)

    assert isinstance(model, LlamaForCausalLM)
    assert model.config.flywheel_demo is True
    assert len(tokenizer) == model.config.vocab_size == 30522
    assert tokenizer.eos_token == "[SEP]" and tokenizer.bos_token == "[CLS]"
    assert tokenizer.pad_token == "[PAD]"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.bos_token_id == tokenizer.bos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id

    inputs = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt")
    assert "token_type_ids" not in inputs  # generate() rejects them
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)


def test_chat_template_renders_roles_and_marks_assistant_tokens() -> None:
    tokenizer = build_demo_tokenizer()
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text == (
        "system: Be brief.\nuser: Hello there!\nassistant: Hi.[SEP]\nuser: How are you?\nassistant:"
    )
    # Encoding adds no special tokens, so text and template paths give the same ids.
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True)["input_ids"]
    assert tokenizer(text)["input_ids"] == ids
    assert tokenizer.convert_ids_to_tokens(ids[-2:]) == ["assistant", ":"]

    masked = tokenizer.apply_chat_template(CHAT[:3], return_assistant_tokens_mask=True)
    tokens = tokenizer.convert_ids_to_tokens(masked["input_ids"])
    assistant = [t for t, m in zip(tokens, masked["assistant_masks"], strict=True) if m]
    assert assistant == ["hi", ".", "[SEP]"]


def test_write_refuses_an_existing_directory_unless_overwrite(tmp_path: Path) -> None:
    path = write_demo_model(tmp_path / "demo", seed=0, teaching_steps=0)
    with pytest.raises(FlywheelError, match="already exists"):
        write_demo_model(path, seed=1, teaching_steps=0)
    write_demo_model(path, seed=1, overwrite=True, teaching_steps=0)
    again = write_demo_model(tmp_path / "seed1", seed=1, teaching_steps=0)
    assert _weights_sha(path) == _weights_sha(again)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_demo_model(tmp_path / "demo", teaching_steps=0)
    assert list(tmp_path.iterdir()) == []


def test_the_data_directory_it_creates_is_private(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo_model, "teach_demo_language", lambda *args, **kwargs: None)
    ensure_demo_model(tmp_path / "data" / "models")
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_ensure_demo_model_writes_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo_model, "teach_demo_language", lambda *args, **kwargs: None)
    path = ensure_demo_model(tmp_path)
    assert path == demo_model_path(tmp_path)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(tmp_path) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_the_built_demo_model_speaks_its_little_language(tmp_path: Path) -> None:
    path = write_demo_model(tmp_path / "demo")  # taught, as `flywheel up` builds it
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    rng = random.Random(0)
    chats = [[{"role": "user", "content": user_prompt(rng)}] for _ in range(32)]
    texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
             for c in chats]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    out = model.generate(**batch, do_sample=True, temperature=0.7, max_new_tokens=24,
                         pad_token_id=tokenizer.pad_token_id)
    answers = tokenizer.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
    shape = re.compile(r"it is (\w+) and (\w+), that is what i think about [\w ]+\.")
    matches = [m for a in answers if (m := shape.fullmatch(a))]
    assert len(matches) >= 0.75 * len(answers), answers
    assert all(word in ADJECTIVES for m in matches for word in m.groups()), answers
