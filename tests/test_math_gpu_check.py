"""CPU-side logic of benchmarks/gpu_check.py: argument parsing, the card table, the FLOPs arithmetic (checked
against the parameter count written out from the config), the clean exit without a GPU, and the whole code
path on a tiny Qwen2 on the CPU."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.4), ("NVIDIA GH200 480GB", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A10G", 125.0), ("NVIDIA L40S", 362.05), ("NVIDIA L4", 121.0), ("Tesla T4", None),
])
def test_card_table(gpu_check, name, tflops):
    assert gpu_check.peak_bf16_tflops(name) == tflops


def r1_distill_param_count():
    """Parameters of DeepSeek-R1-Distill-Qwen-1.5B written out from its config (q/k/v carry biases)."""
    V, d, ff, L, kv = 151936, 1536, 8960, 28, 2 * 128  # vocab, hidden, MLP, layers, KV width (2 heads x 128)
    attention = (d * d + d) + 2 * (d * kv + kv) + d * d  # q, k, v with bias; o without
    layer = attention + 3 * d * ff + 2 * d  # + gate/up/down + two RMSNorms
    return {"embedding": V * d, "total": 2 * V * d + L * layer + d}  # untied head, final norm


def test_real_architecture_has_the_expected_parameter_count(gpu_check):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    with torch.device("meta"):  # shapes only, no memory
        model = Qwen2ForCausalLM(Qwen2Config(**gpu_check.R1_DISTILL_QWEN_1P5B))
    counts = r1_distill_param_count()
    assert sum(p.numel() for p in model.parameters()) == counts["total"] == 1_777_088_000
    from cegppo_edu.gpu.presets import MODEL_PARAMS, R1_DISTILL_1P5B
    assert MODEL_PARAMS[R1_DISTILL_1P5B] == counts["total"]  # what `cegppo preflight` sizes memory and disk by
    assert gpu_check.matmul_params(model) == counts["total"] - counts["embedding"]
    assert model.config.num_key_value_heads == 2 and not model.config.tie_word_embeddings


def test_flops_and_mfu_arithmetic(gpu_check):
    n = 1_543_714_304  # the 1.5B model without its input embedding
    assert gpu_check.flops_per_token(n, 28, 1536, 8192, attention=False) == 6 * n
    assert gpu_check.flops_per_token(n, 28, 1536, 8192, attention=True) == 6 * n + 6 * 28 * 1536 * 8192
    # 20,000 tokens/s on an H100 SXM: 6 * n * 2e4 / 989.4e12
    assert math.isclose(gpu_check.mfu(2e4, 6 * n, 989.4), 6 * n * 2e4 / 989.4e12)
    assert gpu_check.mfu(2e4, 6 * n, None) is None


def test_argument_parsing(gpu_check):
    args = gpu_check.parse_args([])
    assert args.seq_lens == [8192, 16384] and args.gen_tokens == 256 and args.gen_batch == 8
    tiny = gpu_check.parse_args(["--tiny", "--seq-lens", "16, 32"])
    assert tiny.seq_lens == [16, 32] and tiny.gen_tokens == 16
    for bad in (["--seq-lens", "8k"], ["--seq-lens", "1"], ["--steps", "0"], ["--chunk-size", "-1"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_without_a_gpu_it_says_why_and_fails(gpu_check, monkeypatch, tmp_path, capsys):
    """A renter whose driver is too old must not read "no-gpu" and exit 0 as a pass."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.main([]) == 1
    err = capsys.readouterr().err
    assert "no usable CUDA device" in err and f"torch {torch.__version__}" in err
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["status"] == "no-gpu" and "training" not in summary and summary["problem"]


def test_tiny_run_goes_through_the_whole_code_path(gpu_check, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU path, even on a GPU machine
    out = tmp_path / "check.json"
    argv = ["--tiny", "--seq-lens", "16,32", "--steps", "1", "--gen-batch", "2", "--gen-tokens", "4",
            "--out", str(out)]
    assert gpu_check.main(argv) == 0
    summary = json.loads(out.read_text())
    assert summary["status"] == "ok" and summary["device"] and summary["gradient_checkpointing"]
    assert [t["seq_len"] for t in summary["training"]] == [16, 32]
    for t in summary["training"]:
        assert t["status"] == "ok" and t["tokens_per_s"] > 0 and math.isfinite(t["loss"])
        assert 0 < t["mean_entropy"] <= math.log(512) + 1e-3  # entropy of a 512-way softmax
    assert summary["generation"]["tokens_per_s"] > 0 and summary["generation"]["new_tokens"] == 4


class CopySampler:
    """A sampler with its own bf16 copy of the weights, as vLLM has; ``broken`` makes its sync a no-op."""

    def __init__(self, model, tokenizer, broken=False):
        import copy

        from cegppo_edu.lm.rollout import HFSampler
        self.copy, self.broken = copy.deepcopy(model).to(torch.bfloat16), broken
        self.inner = HFSampler(self.copy, tokenizer)

    def generate(self, *args, **kwargs):
        return self.inner.generate(*args, **kwargs)

    def sync_weights(self, model):
        if not self.broken:
            with torch.no_grad():
                for mine, theirs in zip(self.copy.parameters(), model.parameters(), strict=True):
                    mine.copy_(theirs.to(torch.bfloat16))


def _sync_check(gpu_check, broken, seed):
    from cegppo_edu.lm.models import build_tiny_model_and_tokenizer

    model, tok = build_tiny_model_and_tokenizer(seed=seed, hidden_size=64, num_layers=2, num_heads=4,
                                                num_kv_heads=2, intermediate_size=128)
    prompts = torch.randint(5, len(tok), (8, 12), generator=torch.Generator().manual_seed(seed)).tolist()
    sampler = CopySampler(model, tok, broken=broken)
    return gpu_check.check_weight_sync(model, sampler, prompts, new_tokens=16, pad_id=tok.pad_token_id, noise=0.5,
                                       seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("broken", [False, True])
def test_weight_sync_check_tells_a_working_sync_from_a_broken_one(gpu_check, broken, seed):
    """The stand-in samples with bf16 weights and the trainer scores in fp32 under bf16 autocast, as on a GPU: a
    right sync leaves only rounding (well under the tolerance), a missing one a gap many times larger."""
    result = _sync_check(gpu_check, broken, seed)
    before, after = result["logprob_gap_before_sync"], result["logprob_gap_after_sync"]
    assert result["ok"] is (not broken)
    if broken:  # nothing moved: the gap stays where the perturbation put it
        assert after == before
    else:  # bf16 rounding only: far under the tolerance, and far under the gap before the sync
        assert after < gpu_check.LOGPROB_GAP_TOLERANCE / 10 and before > 20 * after


def test_logprob_gap_is_the_mean_absolute_difference_per_token(gpu_check):
    assert gpu_check.logprob_gap([[-1.0, -2.0], [-0.5]], [[-1.5, -2.0], [-0.0]]) == pytest.approx(1.0 / 3)
    with pytest.raises(ValueError):
        gpu_check.logprob_gap([[-1.0]], [[-1.0, -2.0]])
