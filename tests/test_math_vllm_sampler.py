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

from cegppo_edu.gpu import vllm_sampler
from cegppo_edu.gpu.vllm_sampler import (VLLMSampler, VLLMVersionError, check_vllm_version, hf_named_weights,
                                     pinned_vllm_spec, request_outputs_to_rollout, sampled_logprob)


def test_importing_the_package_and_module_does_not_import_vllm():
    code = ("import sys, cegppo_edu, cegppo_edu.gpu.vllm_sampler; "
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


class FakeValidationError(Exception):
    """vLLM 0.33's VLLMValidationError derives from Exception, not ValueError (vllm/exceptions.py)."""


class FakeSamplingParams:
    """Like vLLM 0.33's ``SamplingParams`` (vllm/sampling_params.py) for what the sampler relies on: only its own
    fields are accepted, and temperature below 1e-5 (greedy) with n > 1 raises when it is built."""

    FIELDS = ("n", "temperature", "top_p", "max_tokens", "logprobs", "seed")

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        defaults = {"n": 1, "temperature": 1.0, "top_p": 1.0, "max_tokens": 16, "logprobs": None, "seed": None}
        self.__dict__.update({**defaults, **kwargs})
        if self.temperature < 1e-5 and self.n > 1:
            raise FakeValidationError(f"n must be 1 when using greedy sampling, got {self.n}.")


class FakeEngine:
    """Records the calls VLLMSampler makes on ``vllm.LLM`` and behaves as vLLM 0.33.0 does where the sampler
    depends on it:

    - a request with n > 1 and seed t runs as n children, child k with seed t + k, returned in child order
      (v1/engine/llm_engine.py add_request, v1/engine/parallel_sampling.py); here a completion's tokens are a
      function of its child seed, so two responses with one seed are identical;
    - outputs come back in the order of the prompts, and a params list must have one entry per prompt
      (entrypoints/common/offline.py);
    - ``sleep(level >= 1)`` releases the tags "weights" and "kv_cache" and clears the prefix cache;
      ``wake_up(tags)`` wakes those of ``tags`` that are asleep and returns whether nothing is asleep any more;
      the scheduler only runs when fully awake (v1/engine/core.py, v1/executor/abstract.py): here ``generate``
      on a sleeping engine raises instead of waiting forever;
    - ``collective_rpc("reload_weights", kwargs={"weights_iterator": ...})`` loads the weights in place
      (v1/worker/gpu_worker.py); ``reset_prefix_cache()`` returns True when nothing is running (entrypoints/llm.py).
    """

    def __init__(self, wake_up_answers=None):
        self.calls, self.loaded, self.asleep, self.seeds = [], {}, set(), []
        self.wake_up_answers = wake_up_answers  # None: answer as vLLM does; a list: these answers, in turn

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        assert method == "reload_weights" and "weights" not in self.asleep
        self.calls.append("reload_weights")
        self.loaded = {name: t.clone() for name, t in (kwargs or {})["weights_iterator"]}
        return [None]

    def sleep(self, level=1, mode="abort"):
        self.calls.append(f"sleep({level})")
        if level >= 1:
            self.asleep |= {"weights", "kv_cache"}

    def wake_up(self, tags=None):
        tags = ["weights", "kv_cache"] if tags is None else tags
        self.calls.append(f"wake_up({','.join(tags)})")
        self.asleep -= set(tags)
        return self.wake_up_answers.pop(0) if self.wake_up_answers else not self.asleep

    def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        self.calls.append("reset_prefix_cache")
        return True

    def generate(self, requests, params, use_tqdm=True):
        if self.asleep:
            raise RuntimeError("stand-in: the scheduler is paused (vLLM would wait here forever)")
        if len(params) != len(requests):
            raise FakeValidationError(f"The lengths of prompts ({len(requests)}) and params ({len(params)}) "
                                      "must be the same.")
        self.calls.append("generate")
        self.params = params
        outputs = []
        for p in params:
            children = [None if p.seed is None else p.seed + k for k in range(p.n)]
            self.seeds += children
            outputs.append(SimpleNamespace(outputs=[
                completion([100 + (k if s is None else s % 997), 2], f"r{k}") for k, s in enumerate(children)]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=FakeSamplingParams))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.33.0")
    monkeypatch.setenv(vllm_sampler.IN_PROCESS_ENV, "0")


def test_phases_wake_generate_sleep_and_sync_in_order(fake_vllm):
    engine = FakeEngine()
    sampler = VLLMSampler("unused", llm=engine, max_model_len=64)
    rollout = sampler.generate([[1, 2], [3]], n=2, max_new_tokens=8, temperature=0.6, top_p=0.95, seed=7)
    assert rollout.response_ids == [[107, 2], [108, 2], [109, 2], [110, 2]]  # seeds 7, 8 | 9, 10
    assert [p.seed for p in engine.params] == [7, 9]
    assert (engine.params[0].temperature, engine.params[0].top_p, engine.params[0].max_tokens) == (0.6, 0.95, 8)
    model = torch.nn.Linear(2, 2)
    sampler.sync_weights(model)
    sampler.generate([[1]], n=1, max_new_tokens=4)
    # the sleep cleared the prefix cache: no reset after the sync (sleep_level 1)
    assert engine.calls == ["generate", "sleep(1)", "wake_up(weights)", "reload_weights", "wake_up(kv_cache)",
                            "generate", "sleep(1)"]
    assert torch.equal(engine.loaded["weight"], model.weight.detach().to(torch.bfloat16))


def test_no_two_responses_of_a_batch_share_a_seed(fake_vllm):
    """16 prompts × 8 responses, as a training step samples them: 128 distinct seeds (with seed + prompt index,
    prompt 0's second response and prompt 1's first shared one, and with it every random draw)."""
    engine = FakeEngine()
    rollout = VLLMSampler("unused", llm=engine, max_model_len=64).generate(
        [[i] for i in range(16)], n=8, max_new_tokens=4, temperature=1.0, seed=12345)
    assert len(engine.seeds) == 128 and len(set(engine.seeds)) == 128
    assert len({tuple(r) for r in rollout.response_ids}) == 128


def test_without_a_sleep_the_sync_resets_the_prefix_cache(fake_vllm):
    engine = FakeEngine()
    sampler = VLLMSampler("unused", llm=engine, sleep_level=0, max_model_len=64)
    sampler.generate([[1]], n=1, max_new_tokens=4)
    sampler.sync_weights(torch.nn.Linear(2, 2))
    assert engine.calls == ["generate", "reload_weights", "reset_prefix_cache"]


def test_a_half_awake_engine_is_reported_not_waited_on(fake_vllm):
    engine = FakeEngine(wake_up_answers=[False])  # e.g. another tag still asleep inside vLLM
    sampler = VLLMSampler("unused", llm=engine, max_model_len=64)
    sampler.sleep()
    with pytest.raises(RuntimeError, match="did not wake up fully.*wait forever"):
        sampler.generate([[1]], n=1, max_new_tokens=4)
    assert "generate" not in engine.calls


@pytest.mark.parametrize("temperature", [0.0, 1e-6])
def test_greedy_with_several_samples_is_refused_before_vllm_sees_it(fake_vllm, temperature):
    engine = FakeEngine()
    sampler = VLLMSampler("unused", llm=engine, max_model_len=64)
    with pytest.raises(ValueError, match=rf"temperature={temperature!r} \(greedy\) with n=4"):
        sampler.generate([[1]], n=4, max_new_tokens=4, temperature=temperature)
    assert "generate" not in engine.calls
    assert sampler.generate([[1]], n=1, max_new_tokens=4, temperature=0.0).texts == ["r0"]  # n = 1 is fine
    with pytest.raises(FakeValidationError, match="n must be 1"):  # what vLLM itself would have raised
        FakeSamplingParams(n=4, temperature=temperature)


def test_greedy_with_several_samples_is_refused_for_every_sampler_and_setting(tmp_path, capsys):
    from cegppo_edu.cli import main as cegppo
    from cegppo_edu.lm.config import apply_overrides, get_preset
    from cegppo_edu.lm.models import build_tiny_model_and_tokenizer
    from cegppo_edu.lm.rollout import HFSampler

    with pytest.raises(ValueError, match=r"eval_temperature=0.0 \(greedy\) with eval_samples=4"):
        apply_overrides(get_preset("r1-distill-1.5b-1gpu"), {"eval_temperature": 0.0})
    assert cegppo(["eval", "--smoke", "--temperature", "0", "--samples", "4", "--out", str(tmp_path / "e")]) == 2
    assert "temperature=0.0 (greedy) with samples=4" in capsys.readouterr().err
    model, tok = build_tiny_model_and_tokenizer(seed=0, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                                                intermediate_size=32)
    with pytest.raises(ValueError, match=r"temperature=0.0 \(greedy\) with n=2"):
        HFSampler(model, tok).generate([[5, 6]], n=2, max_new_tokens=2, temperature=0.0)


def test_level_two_sleep_requires_a_sync_before_generating(fake_vllm):
    sampler = VLLMSampler("unused", llm=FakeEngine(), sleep_level=2, max_model_len=64)
    sampler.generate([[1]], n=1, max_new_tokens=4)
    with pytest.raises(RuntimeError, match="call sync_weights"):
        sampler.generate([[1]], n=1, max_new_tokens=4)
    sampler.sync_weights(torch.nn.Linear(2, 2))
    assert sampler.generate([[1]], n=1, max_new_tokens=4).texts == ["r0"]


def test_sync_refuses_another_vllm_version(fake_vllm, monkeypatch):
    engine = FakeEngine()
    sampler = VLLMSampler("unused", llm=engine, max_model_len=64)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.32.0")
    with pytest.raises(VLLMVersionError, match="vllm 0.32.0 is installed"):
        sampler.sync_weights(torch.nn.Linear(2, 2))
    assert "reload_weights" not in engine.calls


def test_sync_needs_the_in_process_engine_core(fake_vllm, monkeypatch):
    engine = FakeEngine()
    monkeypatch.setenv(vllm_sampler.IN_PROCESS_ENV, "1")  # a separate engine process: tensors cannot be handed over
    with pytest.raises(VLLMVersionError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0"):
        VLLMSampler("unused", llm=engine, max_model_len=64).sync_weights(torch.nn.Linear(2, 2))
    assert "reload_weights" not in engine.calls


def test_bad_settings_and_too_long_requests(fake_vllm):
    with pytest.raises(ValueError, match="gpu_memory_utilization=0.99 is outside"):
        VLLMSampler("unused", gpu_memory_utilization=0.99, llm=FakeEngine(), max_model_len=64)
    with pytest.raises(ValueError, match="sleep_level=3"):
        VLLMSampler("unused", sleep_level=3, llm=FakeEngine(), max_model_len=64)
    sampler = VLLMSampler("unused", llm=FakeEngine(), max_model_len=16)
    with pytest.raises(ValueError, match="exceeds max_model_len=16"):
        sampler.generate([[1] * 10], n=1, max_new_tokens=8)


def test_factory_refuses_clearly_without_vllm(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    from cegppo_edu.lm.config import TrainConfig
    config = TrainConfig(model_path="some/model", max_new_tokens=8192, seed=0)
    with pytest.raises(ImportError, match="VLLMSampler needs vLLM"):
        vllm_sampler.make_vllm_sampler(config)
