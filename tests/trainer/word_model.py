"""A tiny causal LM over a few dozen words, for tests that must see a recipe learn in seconds.

The tiny models of `tests.fixtures.tiny_models` speak the demo's 30,522-token vocabulary with
near-uniform logits: a LoRA update moves them too little, and too slowly on two CPU cores, to
show learning within a test. Over this vocabulary (and with larger initial weights) a few
steps visibly change what the model says.
"""

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from flywheel.demo_model import CHAT_TEMPLATE

WORDS = ("user", "assistant", ":", ",", ".", "tell", "me", "about", "cats", "dogs", "birds",
         "fish", "yes", "no", "maybe", "good", "bad", "red", "blue", "is", "a", "kind", "thing")


def word_tokenizer(words: tuple[str, ...] | list[str] = WORDS) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words` (lower-cased; punctuation splits off), with the
    demo's chat template."""
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="[CLS]", eos_token="[SEP]", pad_token="[PAD]",
        unk_token="[UNK]", model_input_names=["input_ids", "attention_mask"],
        chat_template=CHAT_TEMPLATE, padding_side="left")


def word_model(tokenizer: PreTrainedTokenizerFast, *, seed: int = 0) -> LlamaForCausalLM:
    """A random two-layer Llama over `tokenizer`'s words, deterministic per seed."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, initializer_range=0.1,
                         bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()
