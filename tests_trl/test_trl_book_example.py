"""The code of the book page "CE-GPPO in your own TRL script" (book/trl.md) runs as printed, with the Hub model and
data set swapped for the tiny local ones and the run cut to two optimizer steps of tiny responses."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import build_model_and_tokenizer

ROOT = Path(__file__).resolve().parents[1]
# What the test swaps: each must appear exactly once in the page's code
HUB_DATA = 'load_dataset("trl-lib/DeepMath-103K", split="train")'
HUB_MODEL = '"Qwen/Qwen2.5-0.5B-Instruct"'
CONFIG_CALL = "CEGPPOConfig("
SMALL = dict(use_cpu=True, report_to=[], max_steps=2, max_completion_length=4, disable_tqdm=True, seed=0)


def page_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "book" / "trl.md").read_text(), re.S)
    assert len(blocks) == 1, f"book/trl.md has {len(blocks)} python blocks; this test runs exactly one"
    return blocks[0]


def test_the_pages_example_trains(tmp_path, monkeypatch):
    from datasets import Dataset

    from cegppo_edu.lm.models import save_model_and_tokenizer

    model_dir = tmp_path / "tiny"
    save_model_and_tokenizer(*build_model_and_tokenizer(), str(model_dir))
    code = page_code()
    for old, new in ((HUB_DATA, "tiny_data"), (HUB_MODEL, repr(str(model_dir))), (CONFIG_CALL, "CEGPPOConfig(**small, ")):
        assert code.count(old) == 1, f"the page's code no longer has {old!r} once"
        code = code.replace(old, new)
    tiny_data = Dataset.from_list([{"prompt": [{"role": "user", "content": f"{i}+1="}], "solution": f"${i + 1}$"}
                                   for i in range(16)])
    monkeypatch.chdir(tmp_path)  # the example's output_dir is relative
    namespace = {"tiny_data": tiny_data, "small": SMALL}
    exec(compile(code, "book/trl.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 2
    assert (trainer.args.beta1, trainer.args.beta2, trainer.args.steps_per_generation) == (0.5, 1.0, 8)
