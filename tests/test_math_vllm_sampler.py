"""What of the vLLM sampler can be checked without vLLM (it cannot be installed on a CPU machine): the version
check, the output conversion, the wake/sleep bookkeeping and weight hand-over against stand-in objects, the
error when vLLM is absent, and that nothing imports vLLM by accident. The real engine path is untested here."""

import importlib.metadata
import math
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from cegppo_edu import vllm_sampler
from cegppo_edu.vllm_sampler import (VLLMSampler, VLLMVersionError, check_vllm_version, hf_named_weights,
                                     pinned_vllm_spec, request_outputs_to_rollout, sampled_logprob)


def test_importing_the_package_and_module_does_not_import_vllm():
    code = ("import sys, cegppo_edu, cegppo_edu.vllm_sampler; "
            "assert not any(m == 'vllm' or m.startswith('vllm.') for m in sys.modules), 'vllm imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pin_is_read_from_the_gpu_extra_of_the_installed_metadata():
    assert pinned_vllm_spec() == "==0.33.0"


def test_pin_reading_ignores_other_extras(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: [
        'vllm==0.1.0; extra == "other"', 'torch>=2', 'vllm==0.33.0; extra == "gpu"'])
    assert pinned_vllm_spec() == "==0.33.0"
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: ['torch>=2'])
    with pytest.raises(VLLMVersionError, match="pins no vllm version"):
        pinned_vllm_spec()


def test_version_check_accepts_the_pin_and_names_both_versions_otherwise(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.33.0")
    assert check_vllm_version() == "0.33.0"
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.34.1")
    with pytest.raises(VLLMVersionError, match=r"vllm 0.34.1 is installed.*vllm==0.33.0"):
        check_vllm_version()
    assert check_vllm_version(installed="1.2.3", pinned=">=1.2,<2") == "1.2.3"


def test_missing_vllm_gives_install_instructions(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[gpu\]"'):
        check_vllm_version()
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(ImportError, match="HF generate sampler"):
        vllm_sampler.import_vllm()


def completion(ids, text, finish="stop", logprobs=True):
    positions = [{t: SimpleNamespace(logprob=-0.5 * (k + 1))} for k, t in enumerate(ids)] if logprobs else None
    return SimpleNamespace(token_ids=ids, text=text, logprobs=positions, finish_reason=finish)


def test_request_outputs_become_a_prompt_major_rollout():
    outputs = [SimpleNamespace(outputs=[completion([5, 6, 2], "ab"), completion([7], "c", "length")]),
               SimpleNamespace(outputs=[completion([8, 2], "d"), completion([9, 9], "ee", "length", False)])]
    rollout = request_outputs_to_rollout(outputs, [[1, 1], [3]], n=2)
    assert rollout.prompt_ids == [[1, 1], [1, 1], [3], [3]]
    assert rollout.response_ids == [[5, 6, 2], [7], [8, 2], [9, 9]]
    assert rollout.texts == ["ab", "c", "d", "ee"]
    assert rollout.truncated == [False, True, False, True]
    assert rollout.response_logp[0] == [-0.5, -1.0, -1.5]
    assert all(math.isnan(v) for v in rollout.response_logp[3]) and len(rollout.response_logp[3]) == 2


def test_conversion_rejects_mismatched_counts():
    outputs = [SimpleNamespace(outputs=[completion([1], "a")])]
    with pytest.raises(ValueError, match="1 request outputs for 2 prompts"):
        request_outputs_to_rollout(outputs, [[1], [2]], n=1)
    with pytest.raises(ValueError, match="prompt 0 has 1 completions, expected n=2"):
        request_outputs_to_rollout(outputs, [[1]], n=2)


def test_sampled_logprob_reads_objects_and_floats():
    assert sampled_logprob({4: SimpleNamespace(logprob=-1.25)}, 4) == -1.25
    assert sampled_logprob({4: -0.75}, 4) == -0.75
    assert math.isnan(sampled_logprob({3: -0.1}, 4)) and math.isnan(sampled_logprob(None, 4))


def test_named_weights_strip_wrapper_prefixes_and_cast():
    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self._orig_mod = torch.nn.Linear(2, 3)
    pairs = dict(hf_named_weights(Wrapped(), dtype=torch.bfloat16))
    assert sorted(pairs) == ["bias", "weight"]
    assert pairs["weight"].dtype == torch.bfloat16 and not pairs["weight"].requires_grad


class FakeEngine:
    """Records the calls VLLMSampler makes on ``vllm.LLM`` and answers ``generate`` with fixed tokens."""

    def __init__(self):
        self.calls, self.loaded = [], {}
        model = SimpleNamespace(load_weights=self._load)
        runner = SimpleNamespace(get_model=lambda: model)
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(worker=SimpleNamespace(model_runner=runner))))

    def _load(self, weights):
        self.calls.append("load_weights")
        self.loaded = {name: t.clone() for name, t in weights}

    def sleep(self, level):
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags=None):
        self.calls.append(f"wake_up({','.join(tags)})")

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    def generate(self, requests, params, use_tqdm):
        self.calls.append("generate")
        self.params = params
        return [SimpleNamespace(outputs=[completion([10 + k, 2], f"r{k}") for k in range(p.n)]) for p in params]


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=SimpleNamespace))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.33.0")


def test_phases_wake_generate_sleep_and_sync_in_order(fake_vllm):
    engine = FakeEngine()
    sampler = VLLMSampler("unused", llm=engine, max_model_len=64)
    rollout = sampler.generate([[1, 2], [3]], n=2, max_new_tokens=8, temperature=0.6, top_p=0.95, seed=7)
    assert rollout.response_ids == [[10, 2], [11, 2], [10, 2], [11, 2]]
    assert [p.seed for p in engine.params] == [7, 8]
    assert (engine.params[0].temperature, engine.params[0].top_p, engine.params[0].max_tokens) == (0.6, 0.95, 8)
    model = torch.nn.Linear(2, 2)
    sampler.sync_weights(model)
    sampler.generate([[1]], n=1, max_new_tokens=4)
    assert engine.calls == ["generate", "sleep(1)", "wake_up(weights)", "load_weights", "reset_prefix_cache",
                            "wake_up(kv_cache)", "generate", "sleep(1)"]
    assert torch.equal(engine.loaded["weight"], model.weight.detach().to(torch.bfloat16))


def test_level_two_sleep_requires_a_sync_before_generating(fake_vllm):
    sampler = VLLMSampler("unused", llm=FakeEngine(), sleep_level=2, max_model_len=64)
    sampler.generate([[1]], n=1, max_new_tokens=4)
    with pytest.raises(RuntimeError, match="call sync_weights"):
        sampler.generate([[1]], n=1, max_new_tokens=4)
    sampler.sync_weights(torch.nn.Linear(2, 2))
    assert sampler.generate([[1]], n=1, max_new_tokens=4).texts == ["r0"]


def test_sync_refuses_another_vllm_version(fake_vllm, monkeypatch):
    engine = FakeEngine()
    sampler = VLLMSampler("unused", llm=engine)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.32.0")
    with pytest.raises(VLLMVersionError, match="vllm 0.32.0 is installed"):
        sampler.sync_weights(torch.nn.Linear(2, 2))
    assert "load_weights" not in engine.calls


def test_sync_reports_a_moved_model_path(fake_vllm):
    engine = FakeEngine()
    engine.llm_engine = SimpleNamespace()  # e.g. the engine core runs in another process
    with pytest.raises(VLLMVersionError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0"):
        VLLMSampler("unused", llm=engine).sync_weights(torch.nn.Linear(2, 2))


def test_bad_settings_and_too_long_requests(fake_vllm):
    with pytest.raises(ValueError, match="gpu_memory_utilization=0.99 is outside"):
        VLLMSampler("unused", gpu_memory_utilization=0.99, llm=FakeEngine())
    with pytest.raises(ValueError, match="sleep_level=3"):
        VLLMSampler("unused", sleep_level=3, llm=FakeEngine())
    sampler = VLLMSampler("unused", llm=FakeEngine(), max_model_len=16)
    with pytest.raises(ValueError, match="exceeds max_model_len=16"):
        sampler.generate([[1] * 10], n=1, max_new_tokens=8)


def test_factory_refuses_clearly_without_vllm(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    config = SimpleNamespace(model_path="some/model", max_new_tokens=8192, seed=0)
    with pytest.raises(ImportError, match="VLLMSampler needs vLLM"):
        vllm_sampler.make_vllm_sampler(config)
