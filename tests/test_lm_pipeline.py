"""The LM pipeline's parts: tasks, tokenizer, reward, sampler, config (no training here; see test_lm_trainer)."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from cegppo_edu.lm import config as cfg
from cegppo_edu.lm.models import (
    build_char_tokenizer,
    build_tiny_model_and_tokenizer,
    count_parameters,
    load_model_and_tokenizer,
    save_model_and_tokenizer,
)
from cegppo_edu.lm.rewards import ExactMatchReward
from cegppo_edu.lm.rollout import HFSampler
from cegppo_edu.lm.tasks import Problem, as_problem, encode_chat_prompt, extract_integer, make_addition_task

torch.set_num_threads(1)


# ---------------------------------------------------------------- tasks
def test_addition_task_is_deterministic_disjoint_and_correct():
    a = make_addition_task(300, 50, n_digits=2, seed=3, min_digits=1)
    b = make_addition_task(300, 50, n_digits=2, seed=3, min_digits=1)
    c = make_addition_task(300, 50, n_digits=2, seed=4, min_digits=1)
    assert a == b and a.train != c.train
    assert not {p.question for p in a.train} & {p.question for p in a.heldout}
    for p in a.train + a.heldout:
        x, y = p.question.rstrip("=").split("+")
        assert int(x) + int(y) == int(p.answer) and len(x) <= 2 and len(y) <= 2
    assert any(int(p.answer) >= 100 for p in a.train)  # carries into a third digit happen


@pytest.mark.parametrize("kwargs", [dict(n_digits=0), dict(n_digits=10), dict(min_digits=3, n_digits=2),
                                    dict(n_train=0), dict(n_train=10_000, n_digits=1)])
def test_addition_task_rejects_bad_arguments(kwargs):
    args = dict(n_train=10, n_heldout=5, n_digits=2) | kwargs
    with pytest.raises(ValueError):
        make_addition_task(**args)


def test_data_seed_fixes_the_problems_while_the_seed_varies():
    """Runs over many RL seeds from one warm start need the same problems: ``data_seed`` keeps them, and without
    it the problems follow ``seed`` as they always did."""
    from cegppo_edu.lm.config import apply_overrides, get_preset
    from cegppo_edu.lm.tasks import make_addition_task_from_config

    base = get_preset("tiny-arith")
    def problems(**fields):
        return make_addition_task_from_config(apply_overrides(base, fields)).heldout
    assert problems(seed=3, data_seed=0) == problems(seed=0) == problems(seed=5, data_seed=0)
    assert problems(seed=3) == problems(seed=0, data_seed=3) != problems(seed=0)
    with pytest.raises(ValueError, match="data_seed=-1"):
        apply_overrides(base, {"data_seed": -1})


def test_as_problem_accepts_the_record_shapes_of_math_loaders():
    expected = Problem("1+1=", "2")
    assert as_problem(("1+1=", "2")) == expected
    assert as_problem({"question": "1+1=", "answer": "2"}) == expected
    assert as_problem(dataclasses.make_dataclass("R", ["question", "answer"])("1+1=", "2")) == expected
    with pytest.raises(ValueError):
        as_problem({"answer": "2"})  # no question


# ---------------------------------------------------------------- tokenizer and model
def test_char_tokenizer_round_trips_text_with_newlines(tmp_path):
    tok = build_char_tokenizer()
    text = "12+34=46\n\nline two\tand {braces} <x>\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tok.decode(ids) == text
    model, tok = build_tiny_model_and_tokenizer()
    save_model_and_tokenizer(model, tok, str(tmp_path))
    model2, tok2 = load_model_and_tokenizer(str(tmp_path))
    assert tok2(text, add_special_tokens=False)["input_ids"] == ids and tok2.decode(ids) == text
    assert tok2.eos_token_id == tok.eos_token_id and tok2.pad_token_id == tok.pad_token_id
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_chat_template_prompt_ends_where_the_assistant_starts():
    tok = build_char_tokenizer()
    ids = encode_chat_prompt(tok, "7+8=")
    text = tok.decode(ids)
    assert text == "<|user|>7+8=<|im_end|><|assistant|>"
    assert ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")


def test_tiny_model_has_about_a_million_parameters():
    model, _ = build_tiny_model_and_tokenizer()
    assert 5e5 < count_parameters(model) < 2e6


# ---------------------------------------------------------------- reward
def test_exact_match_reward_grades_integers():
    reward = ExactMatchReward(require_only_answer=True)
    assert reward(["46", "046", " 46 ", "45", "46.", "x46", ""], ["46"] * 7) == [1, 1, 1, 0, 0, 0, 0]
    loose = ExactMatchReward()
    assert loose(["the answer is 46", "46 then 47"], ["46", "46"]) == [1.0, 0.0]
    assert extract_integer("-0") == "0" and extract_integer("a-12b") == "-12" and extract_integer("none") is None


ADVERSARIAL = [
    "9" * 5000,  # beyond Python's 4300-digit int/str limit
    "1" * 200_000 + "+" + "2" * 200_000,
    "{" * 100_000 + "46" + "}" * 100_000,  # deeply nested braces
    "x" * 1_000_000 + "46",  # a megabyte
    "__import__('os').system('touch /tmp/cegppo_pwned')",
    "eval('4'+'6')",
    "\\boxed{\\frac{1}{0}}" * 1000,
    "\ud800\udfff46",  # lone surrogates (invalid unicode)
    "4\x006",
    "٤٦",  # Arabic-Indic digits: \d matches them; they must not crash anything
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_reward_is_fast_and_inert_on_adversarial_outputs(text, tmp_path):
    for reward in (ExactMatchReward(), ExactMatchReward(require_only_answer=True)):
        start = time.perf_counter()
        out = reward([text], ["46"])
        assert time.perf_counter() - start < 1.0  # a bound, not a benchmark: regex scans are linear
        assert out[0] in (0.0, 1.0)
    import os

    assert not os.path.exists("/tmp/cegppo_pwned")


def test_reward_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="answers"):
        ExactMatchReward()(["1", "2"], ["1"])


# ---------------------------------------------------------------- sampler
def test_hf_sampler_is_deterministic_and_prompt_major():
    model, tok = build_tiny_model_and_tokenizer(seed=1)
    sampler = HFSampler(model, tok)
    prompts = [encode_chat_prompt(tok, "1+2="), encode_chat_prompt(tok, "10+20=")]  # different lengths: left padding
    a = sampler.generate(prompts, n=3, max_new_tokens=5, seed=7)
    b = sampler.generate(prompts, n=3, max_new_tokens=5, seed=7)
    c = sampler.generate(prompts, n=3, max_new_tokens=5, seed=8)
    assert a.response_ids == b.response_ids and a.response_ids != c.response_ids
    assert a.prompt_ids == [prompts[0]] * 3 + [prompts[1]] * 3
    for ids, logp, trunc in zip(a.response_ids, a.response_logp, a.truncated):
        assert 1 <= len(ids) <= 5 and len(logp) == len(ids) and all(lp <= 0 for lp in logp)
        assert trunc == (tok.eos_token_id not in ids)
    greedy = [sampler.generate(prompts, n=1, max_new_tokens=5, temperature=0.0, seed=s) for s in (1, 2)]
    assert greedy[0].response_ids == greedy[1].response_ids  # greedy ignores the seed
    with pytest.raises(ValueError, match="greedy"):  # n identical answers: refused for every sampler (as vLLM does)
        sampler.generate(prompts, n=2, max_new_tokens=5, temperature=0.0)


def test_sampler_log_probs_match_the_trainers_scoring():
    from cegppo_edu.lm.batching import collate, logp_entropy_influence

    model, tok = build_tiny_model_and_tokenizer(seed=2)
    prompts = [encode_chat_prompt(tok, "1+2="), encode_chat_prompt(tok, "10+20=")]
    out = HFSampler(model, tok).generate(prompts, n=2, max_new_tokens=6, seed=0)
    batch = collate(out.prompt_ids, out.response_ids, tok.pad_token_id)
    logp, _, _ = logp_entropy_influence(model.eval(), batch)
    for i, lp in enumerate(out.response_logp):
        assert torch.allclose(logp[i, :len(lp)], torch.tensor(lp), atol=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_entropy_with_shared_prompts_equals_the_plain_pass(temperature):
    """Each prompt run once for its responses (KV cache copied to the rows) gives the entropies of the plain
    [prompt | response] pass, up to float rounding, for prompts of different lengths, responses of different
    lengths (one of a single token) and rows of one prompt that are not next to each other."""
    from cegppo_edu.lm.batching import collate, collate_shared, entropy_with_shared_prompts, logp_entropy_influence

    model, tok = build_tiny_model_and_tokenizer(seed=3)
    with torch.no_grad():  # sharper than a fresh model's near-uniform logits, so that a wrong position shows
        for p in model.parameters():
            p.mul_(4.0)
    short, long = encode_chat_prompt(tok, "1+2="), encode_chat_prompt(tok, "10+200=")
    prompts = [short, short, long, short, long]
    responses = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14], [15, 16]]
    plain = collate(prompts, responses, tok.pad_token_id)
    _, expected, _ = logp_entropy_influence(model.eval(), plain, temperature=temperature)
    shared = collate_shared(prompts, responses, tok.pad_token_id)
    assert shared.prompt_ids.shape[0] == 2 and shared.prompt_of_row.tolist() == [0, 0, 1, 0, 1]
    got = entropy_with_shared_prompts(model, shared, temperature=temperature)
    assert torch.equal(shared.mask, plain.mask)
    torch.testing.assert_close(got * shared.mask, expected * plain.mask, rtol=1e-4, atol=2e-5)  # fp32 logits


# ---------------------------------------------------------------- config
BAD_FIELDS = [
    ("steps", 0), ("steps", 1.5), ("steps", "10"), ("seed", -1), ("group_size", 1), ("prompts_per_step", 0),
    ("temperature", 0.0), ("top_p", 1.5), ("lr", 0.0), ("lr", float("nan")), ("weight_decay", -0.1),
    ("max_grad_norm", 0.0), ("mini_batches", 10_000), ("method", "ppo2"), ("loss_agg", "sum"),
    ("eps_low", 1.2), ("eps_high", -0.1), ("beta1", -1.0), ("dual_clip", 0.5), ("device", "tpu"),
    ("dtype", "int8"), ("autocast_dtype", "fp8"), ("prompt_template", "no placeholder"), ("n_digits", 12),
    ("hp_threshold", 1.0), ("eval_temperature", -1.0), ("sampler", "nope"), ("reward", "nope"),
    ("reward_correct", -5.0), ("gradient_checkpointing", "yes"), ("micro_batch_tokens", -1), ("nll_coef", -0.1),
]


@pytest.mark.parametrize("name,value", BAD_FIELDS)
def test_config_rejects_each_kind_of_bad_field(name, value):
    config = cfg.get_preset("tiny-arith")
    with pytest.raises(ValueError, match=name):
        cfg.validate(dataclasses.replace(config, **{name: value}))


def test_every_config_field_is_type_checked():
    base = cfg.get_preset("tiny-arith")
    for f in dataclasses.fields(cfg.TrainConfig):
        wrong = [1] if isinstance(getattr(base, f.name), str) else "wrong"
        with pytest.raises(ValueError, match=f.name):
            cfg.validate(dataclasses.replace(base, **{f.name: wrong}))


def test_method_specific_fields_and_defaults():
    base = cfg.get_preset("tiny-arith")
    with pytest.raises(ValueError, match="beta1"):
        cfg.validate(dataclasses.replace(base, method="grpo", beta1=0.5))
    assert cfg.loss_kwargs(dataclasses.replace(base, method="dapo"))["eps_high"] == 0.28  # DAPO's own default
    assert cfg.loss_kwargs(dataclasses.replace(base, method="ce_gppo")) == dict(
        eps_low=0.2, eps_high=0.2, beta1=0.5, beta2=1.0, dual_clip=None, agg="token-mean")


def test_overrides_parse_types_and_name_unknown_keys():
    base = cfg.get_preset("tiny-arith")
    c = cfg.apply_overrides(base, ["beta1=0.75", "steps=7", "drop_zero_variance=false", "dual_clip=none",
                                   "model_path=/x"])
    assert (c.beta1, c.steps, c.drop_zero_variance, c.dual_clip, c.model_path) == (0.75, 7, False, None, "/x")
    with pytest.raises(ValueError, match="beta_1"):
        cfg.apply_overrides(base, ["beta_1=0.5"])
    with pytest.raises(ValueError, match="steps"):
        cfg.apply_overrides(base, ["steps=ten"])
    with pytest.raises(ValueError, match="key=value"):
        cfg.apply_overrides(base, ["steps"])


def test_presets_validate_and_smoke_mode():
    assert "tiny-arith" in cfg.PRESETS
    smoke = cfg.get_preset("tiny-arith", smoke=True)
    assert smoke.steps < cfg.get_preset("tiny-arith").steps
    with pytest.raises(ValueError, match="unknown preset"):
        cfg.get_preset("nope")


def test_plugins_resolve_by_name_or_module_path():
    assert cfg.resolve("reward", "exact_match").__name__ == "make_exact_match"
    assert cfg.resolve("sampler", "cegppo_edu.lm.rollout:make_hf_sampler").__name__ == "make_hf_sampler"


@pytest.mark.parametrize("device,dtype,capability,amx,expected", [
    ("cpu", torch.bfloat16, "DEFAULT", True, True), ("cpu", torch.float16, "AVX2", True, True),
    ("cpu", torch.bfloat16, "AVX512", True, False), ("cpu", torch.bfloat16, "DEFAULT", False, False),
    ("cpu", torch.float32, "DEFAULT", True, False), ("cpu", None, "AVX2", True, False),
    ("cuda", torch.bfloat16, "DEFAULT", True, False)])
def test_math_attention_only_where_torchs_cpu_flash_kernel_cannot_pack(device, dtype, capability, amx, expected):
    """torch's CPU flash attention packs bf16/fp16 for AMX with AVX-512 code: under a forced lower kernel set on an
    AMX CPU it raises (pack_vnni2); only there does the trainer fall back to the math backend."""
    from cegppo_edu.lm.batching import needs_math_attention

    assert needs_math_attention(device, dtype, capability, amx) is expected


def test_attention_guard_selects_the_math_backend_inside_autocast_where_needed(monkeypatch):
    from cegppo_edu.lm import batching

    monkeypatch.setattr(batching, "needs_math_attention", lambda *a, **k: True)
    with batching.autocast_context(torch.device("cpu"), torch.bfloat16):
        assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled()
    monkeypatch.setattr(batching, "needs_math_attention", lambda *a, **k: False)
    with batching.autocast_context(torch.device("cpu"), torch.bfloat16):
        assert torch.backends.cuda.flash_sdp_enabled() and torch.is_autocast_enabled("cpu")
