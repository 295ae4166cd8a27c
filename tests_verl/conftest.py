"""Fixtures for the verl plugin tests: a tiny local Qwen2 + tokenizer and small parquet files, built in tmp.

These tests run in the separate verl environment (`make test-verl`, .venv-verl) with their own pytest.ini;
the main suite (testpaths tests, notebooks) never collects them.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # the machine is shared; every tensor here is tiny

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
SPECIAL_TOKENS = ["<pad>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>"]
CHARACTERS = list("0123456789+-*/=()^., ?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\\{}$\n")


def build_tiny_model(path) -> str:
    """Save a ~0.1M-parameter Qwen2 and a character-level tokenizer with a chat template to ``path``."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="?"))  # no merges: one token per character
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                        additional_special_tokens=SPECIAL_TOKENS[2:])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=vocab["<pad>"], eos_token_id=vocab["<eos>"], bos_token_id=vocab["<eos>"],
                         tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return str(path)


def build_math_parquet(path, n: int = 8) -> str:
    """A verl RL dataset of ``n`` sums, written by the plugin's own converter."""
    from cegppo_edu.integrations.verl import write_verl_dataset
    from cegppo_edu.gpu.math_data import MathProblem

    problems = [MathProblem(question=f"What is {i + 1}+{2 * i + 3}?", answer=str(3 * i + 4)) for i in range(n)]
    return write_verl_dataset(problems, path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def parquet_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return build_math_parquet(folder / "train.parquet"), build_math_parquet(folder / "val.parquet", n=4)
