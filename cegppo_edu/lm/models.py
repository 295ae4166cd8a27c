"""Models and tokenizers for the LM trainer: a tiny Qwen2 built locally, and any HF causal LM by path.

- ``build_char_tokenizer``: a character-level tokenizer (one token per character, newlines included) made
  with the ``tokenizers`` library and wrapped in ``PreTrainedTokenizerFast``, with a compact chat template
  (``<|user|>...<|im_end|><|assistant|>``). No download.
- ``build_tiny_qwen2``: ``Qwen2ForCausalLM(Qwen2Config(...))`` with random weights, about 0.8M parameters by
  default — the same architecture family as DeepSeek-R1-Distill-Qwen-1.5B, scaled down.
- ``save_model_and_tokenizer`` / ``load_model_and_tokenizer``: ``save_pretrained`` / ``from_pretrained``. A
  directory holding our char tokenizer is reloaded with ``PreTrainedTokenizerFast`` (``AutoTokenizer`` next to
  a Qwen2 config would return a Qwen2 tokenizer that silently drops newline tokens: DESIGN.md).
"""

from __future__ import annotations

import json
import os
import string

import torch

from ..validation import POSITIVE_INT, check_choice

PAD, EOS, IM_END, UNK = "<|pad|>", "<|endoftext|>", "<|im_end|>", "<|unk|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")  # one token per role keeps prompts short
SPECIAL_TOKENS = (PAD, EOS, IM_END, UNK) + ROLE_TOKENS
# Every printable ASCII character plus newline and tab: enough for arithmetic prompts and chat markup.
CHARACTERS = sorted(set(string.printable) - set("\r\x0b\x0c"))
# A compact chat format, one special token per role (Qwen2's ``<|im_start|>user\n`` spelled out in characters
# would triple the prompt length of a char-level model). Generation stops at <|im_end|>, the tokenizer's EOS.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
CHAR_TOKENIZER_MARK = "cegppo_char_tokenizer.json"  # written next to the tokenizer so loading knows its kind


def build_char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` with the special tokens above and a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char, "\n" too
    core.decoder = decoders.Fuse()  # join characters without inserting spaces
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=IM_END, unk_token=UNK,
                                  bos_token=None, clean_up_tokenization_spaces=False)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_qwen2(vocab_size: int, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                     num_kv_heads: int = 2, intermediate_size: int = 384, max_positions: int = 256,
                     seed: int = 0, pad_token_id: int | None = None, eos_token_id: int | None = None):
    """A randomly initialised ``Qwen2ForCausalLM``: grouped-query attention, RoPE, SwiGLU, RMSNorm.

    Defaults give ≈0.8M parameters (4 layers × 128 hidden): big enough to learn 2-3 digit addition in a few
    hundred supervised steps on a CPU, small enough that an RL step takes a fraction of a second.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size), ("num_layers", num_layers),
                        ("num_heads", num_heads), ("num_kv_heads", num_kv_heads),
                        ("intermediate_size", intermediate_size), ("max_positions", max_positions)):
        POSITIVE_INT.check(name, value)
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(f"hidden_size={hidden_size} must be a multiple of num_heads={num_heads}, "
                         f"itself a multiple of num_kv_heads={num_kv_heads}")
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                         intermediate_size=intermediate_size, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, pad_token_id=pad_token_id, eos_token_id=eos_token_id,
                         bos_token_id=None, attention_dropout=0.0)
    with torch.random.fork_rng(devices=[]):  # same seed -> same weights, without touching the global RNG
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.bos_token_id = None
    return model


def build_tiny_model_and_tokenizer(seed: int = 0, **model_kwargs):
    """The chapter-4 pair: a char tokenizer and a tiny Qwen2 sized to its vocabulary."""
    tok = build_char_tokenizer()
    model = build_tiny_qwen2(len(tok), seed=seed, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             **model_kwargs)
    return model, tok


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model_and_tokenizer(model, tokenizer, path: str) -> None:
    """``save_pretrained`` both, plus a marker file when the tokenizer is our char tokenizer."""
    from transformers.utils import logging as hf_logging

    os.makedirs(path, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint
    try:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if getattr(tokenizer, "chat_template", None) == CHAT_TEMPLATE:
        with open(os.path.join(path, CHAR_TOKENIZER_MARK), "w") as f:
            json.dump({"kind": "char", "chat_template": CHAT_TEMPLATE}, f)


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


# Model folders that a command of this package installs (``pretrained.smollm2``): folder -> the command. A missing
# folder is named with its command; an installed one carries a manifest (``write_manifest``) checked before loading.
INSTALL_COMMANDS: dict[str, str] = {}
MANIFEST_FILE = "cegppo_manifest.json"


def file_sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str, source: str, fix: str) -> None:
    """Record every file of ``folder`` (size, SHA-256), where it came from and the command that rebuilds it."""
    files = {name: {"bytes": os.path.getsize(os.path.join(folder, name)),
                    "sha256": file_sha256(os.path.join(folder, name))}
             for name in sorted(os.listdir(folder)) if name != MANIFEST_FILE}
    with open(os.path.join(folder, MANIFEST_FILE), "w") as f:
        json.dump({"source": source, "fix": fix, "files": files}, f, indent=1)


def verify_manifest(folder: str) -> None:
    """Raise ``ValueError`` naming the file and the fixing command when a file of an installed model folder is
    missing, has another size or another SHA-256 than its manifest says (a torn download, a damaged disk)."""
    path = os.path.join(folder, MANIFEST_FILE)
    fix = INSTALL_COMMANDS.get(os.path.abspath(folder), "reinstalling the model")
    if not os.path.exists(path):
        raise ValueError(f"{folder} has no {MANIFEST_FILE} (an interrupted install?); run: {fix}")
    with open(path) as f:
        manifest = json.load(f)
    fix = manifest.get("fix", fix)
    for name, expected in manifest["files"].items():
        file = os.path.join(folder, name)
        if not os.path.exists(file):
            raise ValueError(f"{file} is missing; run: {fix}")
        if os.path.getsize(file) != expected["bytes"]:
            raise ValueError(f"{file} has {os.path.getsize(file):,} bytes, its manifest says "
                             f"{expected['bytes']:,} (damaged); run: {fix} --force")
        if file_sha256(file) != expected["sha256"]:
            raise ValueError(f"{file} differs from the installed file (SHA-256 mismatch: damaged); run: {fix} --force")


def looks_like_local_path(path: str) -> bool:
    """A path rather than a Hub id ("org/name"): absolute, ./ ../ ~, more than two parts, or existing here."""
    return (os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or os.path.exists(path))


def check_model_source(path: str, what: str = "model") -> None:
    """Raise ``ValueError`` naming ``path`` when it is meant as a local folder but is missing or holds no model
    (config.json, weights, a tokenizer); a Hub id is left to ``from_pretrained``."""
    if not looks_like_local_path(path):
        return
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        if os.path.abspath(path) in INSTALL_COMMANDS:
            raise ValueError(f"{what} {path!r} is not installed yet; run: {INSTALL_COMMANDS[os.path.abspath(path)]}")
        raise ValueError(f"{what} {path!r} does not exist: give a model folder, a run directory of cegppo train or "
                         f"a Hub id such as deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    if not os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a file; give the folder that holds the model")
    import glob

    if os.path.exists(os.path.join(path, MANIFEST_FILE)) or os.path.abspath(path) in INSTALL_COMMANDS:
        verify_manifest(path)  # an installed model: a damaged file is named with the command that fixes it
    missing = []
    if not os.path.exists(os.path.join(path, "config.json")):
        missing.append("config.json")
    if not any(glob.glob(os.path.join(path, pattern)) for pattern in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if not any(os.path.exists(os.path.join(path, name)) for name in TOKENIZER_FILES):
        missing.append(f"a tokenizer ({' or '.join(TOKENIZER_FILES)})")
    if missing:
        raise ValueError(f"{what} {path!r} holds no model: it lacks {', '.join(missing)}")


def load_tokenizer(path: str):
    """Our char tokenizer via ``PreTrainedTokenizerFast`` when the marker is there, else ``AutoTokenizer``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if os.path.exists(os.path.join(path, CHAR_TOKENIZER_MARK)):
        tok = PreTrainedTokenizerFast.from_pretrained(path)
        tok.chat_template = CHAT_TEMPLATE
        return tok
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:  # many causal LMs ship without one; padding positions are masked anyway
        tok.pad_token = tok.eos_token
    return tok


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model_and_tokenizer(path: str, dtype: str = "float32", device: str = "cpu",
                             attn_implementation: str | None = None):
    """Any HF causal LM and its tokenizer from a local directory or a hub id (hub needs a network).

    ``dtype`` is the dtype of the weights: keep ``float32`` for training with AdamW (fp32 master weights;
    use bf16 *autocast* for speed — DESIGN.md: bf16 weights with lr 1e-6 silently lose most updates).
    """
    from transformers import AutoModelForCausalLM

    check_choice("dtype", dtype, DTYPES)
    check_model_source(path)
    path = os.path.expanduser(path) if looks_like_local_path(path) else path
    tok = load_tokenizer(path)
    from transformers.utils import logging as hf_logging

    kwargs = {"dtype": DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(device)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
