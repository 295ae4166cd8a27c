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


def test_exits_cleanly_without_a_gpu(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().err
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["status"] == "no-gpu" and "training" not in summary


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
    """A sampler with its own copy of the weights, as vLLM has; ``broken`` makes its sync a no-op."""

    def __init__(self, model, tokenizer, broken=False):
        import copy

        from cegppo_edu.lm.rollout import HFSampler
        self.copy, self.broken = copy.deepcopy(model), broken
        self.inner = HFSampler(self.copy, tokenizer)

    def generate(self, *args, **kwargs):
        return self.inner.generate(*args, **kwargs)

    def sync_weights(self, model):
        if not self.broken:
            self.copy.load_state_dict(model.state_dict())


@pytest.mark.parametrize("broken", [False, True])
def test_weight_sync_check_tells_a_working_sync_from_a_broken_one(gpu_check, broken):
    from cegppo_edu.lm.models import build_tiny_model_and_tokenizer
    from cegppo_edu.lm.rollout import HFSampler

    model, tok = build_tiny_model_and_tokenizer(seed=0, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                                intermediate_size=64)
    prompts = torch.randint(5, len(tok), (12, 6), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = CopySampler(model, tok, broken=broken)
    result = gpu_check.check_weight_sync(model, HFSampler(model, tok), sampler, prompts, new_tokens=8, noise=1.0)
    assert result["agree_before_sync"] < 0.9  # the perturbation changed the greedy answers
    assert result["ok"] is (not broken)
    assert result["agree_after_sync"] == (result["agree_before_sync"] if broken else 1.0)
