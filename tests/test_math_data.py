"""Math data loaders (cegppo_edu.gpu.math_data) on the made-up fixtures in each source schema, and the Hub branch
with ``datasets.load_dataset`` replaced by a fake (the real Hub cannot be reached from CI)."""

import json
import sys
import types
from pathlib import Path

import pytest

from cegppo_edu.gpu import math_data
from cegppo_edu.gpu.presets import SMOKE_MATH_DATA
from cegppo_edu.gpu.math_data import MathProblem, load_benchmark, load_problems, normalise_record, parse_benchmarks
from cegppo_edu.gpu.prompts import R1_MATH_INSTRUCTION

FIXTURES = Path(SMOKE_MATH_DATA)


@pytest.mark.parametrize("name, count, index, expected", [
    ("mathsub30k_verl.jsonl", 8, 1, MathProblem("Compute $\\frac{1}{2} + \\frac{1}{4}$.", "\\frac{3}{4}")),
    ("aime24_h4.jsonl", 4, 0, MathProblem("Find the remainder when $3^{100}$ is divided by $10$.", "1")),
    ("aime25_opencompass.jsonl", 4, 2, MathProblem("Let $S$ be the sum of all three-digit multiples of $111$. "
                                                  "Find $S$.", "4995")),
    ("math500_h4.json", 4, 3, MathProblem("Find the point where the lines $y = x$ and $y = 2x - 3$ meet.",
                                          "(3, 3)")),
])
def test_each_source_schema_loads_from_its_fixture(name, count, index, expected):
    problems = load_problems(FIXTURES / name)
    assert len(problems) == count
    assert problems[index] == expected


def test_folder_loads_every_file_in_name_order_and_limit_cuts():
    problems = load_problems(FIXTURES)
    assert len(problems) == 20
    assert problems[0].answer == "1"  # aime24_h4.jsonl sorts first
    assert load_problems(FIXTURES, limit=3) == problems[:3]


def test_json_with_jsonl_content_and_object_wrapper(tmp_path):
    lines = tmp_path / "lines.json"  # the Hub's .json files are often JSON Lines
    lines.write_text('{"problem": "1+1?", "answer": 2}\n{"question": "2+2?", "answer": "4"}\n')
    assert load_problems(lines) == [MathProblem("1+1?", "2"), MathProblem("2+2?", "4")]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [{"problem": "3+3?", "answer": "6"}]}))
    assert load_problems(wrapped) == [MathProblem("3+3?", "6")]


def test_instruction_already_in_the_problem_is_not_kept_twice():
    record = {"prompt": [{"role": "user", "content": "What is 2+3?\n" + R1_MATH_INSTRUCTION}],
              "reward_model": {"ground_truth": "5"}}
    assert normalise_record(record) == MathProblem("What is 2+3?", "5")


@pytest.mark.parametrize("record, message", [
    ({"text": "What is 1+1?", "answer": "2"}, r"no problem text: columns found \['answer', 'text'\]"),
    ({"problem": "What is 1+1?", "solution": "2"}, r"no gold answer: columns found \['problem', 'solution'\]"),
    ({"prompt": [{"role": "system", "content": "hi"}], "reward_model": {"ground_truth": "1"}},
     "no problem text"),
    ({"problem": "What is 1+1?", "answer": "  "}, "no gold answer"),
    ({"prompt": [{"role": "user", "content": "1+1?"}], "reward_model": {"style": "rule"}}, "no gold answer"),
])
def test_records_without_the_fields_name_the_columns_found(record, message):
    with pytest.raises(ValueError, match=message):
        normalise_record(record)


def test_bad_record_in_a_file_names_file_and_index(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?"}\n')
    with pytest.raises(ValueError, match=r"record 1 of .*bad.jsonl has no gold answer"):
        load_problems(path)


def test_bad_sources_are_rejected(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="suffix '.txt'"):
        load_problems(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="holds no"):
        load_problems(tmp_path)
    with pytest.raises(ValueError, match="neither an existing path"):
        load_problems("no-such-file.jsonl")
    with pytest.raises(ValueError, match=r"limit=0 is outside"):
        load_problems(FIXTURES, limit=0)


def test_benchmark_names_are_validated():
    assert parse_benchmarks("aime24, aime25,math500") == ["aime24", "aime25", "math500"]
    with pytest.raises(ValueError, match="aime23"):
        parse_benchmarks("aime24,aime23")
    with pytest.raises(ValueError, match="choose from"):
        parse_benchmarks("")
    assert len(load_benchmark("aime25", FIXTURES / "aime25_opencompass.jsonl")) == 4


@pytest.fixture
def fake_datasets(monkeypatch):
    """A stand-in ``datasets`` module that records the calls and serves fixture records."""
    calls = []
    rows = {
        ("Kwai-Klear/KlearReasoner-MathSub-30K", None, "train"): FIXTURES / "mathsub30k_verl.jsonl",
        ("HuggingFaceH4/aime_2024", None, "train"): FIXTURES / "aime24_h4.jsonl",
        ("opencompass/AIME2025", "AIME2025-I", "test"): FIXTURES / "aime25_opencompass.jsonl",
        ("opencompass/AIME2025", "AIME2025-II", "test"): FIXTURES / "aime25_opencompass.jsonl",
        ("HuggingFaceH4/MATH-500", None, "test"): FIXTURES / "math500_h4.json",
    }

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        file = rows[(path, name, split)]
        return (math_data._read_parquet(file) if file.suffix == ".parquet" else math_data._read_json(file))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_branch_calls_load_dataset_with_the_recorded_ids(fake_datasets):
    assert len(math_data.load_train_set()) == 8
    assert len(load_benchmark("aime24")) == 4
    assert len(load_benchmark("aime25")) == 8  # two configs, concatenated
    assert len(load_benchmark("math500")) == 4
    assert fake_datasets == [
        ("Kwai-Klear/KlearReasoner-MathSub-30K", None, "train"),
        ("HuggingFaceH4/aime_2024", None, "train"),
        ("opencompass/AIME2025", "AIME2025-I", "test"),
        ("opencompass/AIME2025", "AIME2025-II", "test"),
        ("HuggingFaceH4/MATH-500", None, "test"),
    ]


def test_bare_repository_id_goes_to_the_hub_with_the_split(fake_datasets):
    assert len(load_problems("HuggingFaceH4/MATH-500", split="test")) == 4
    assert fake_datasets[-1] == ("HuggingFaceH4/MATH-500", None, "test")


def test_missing_datasets_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'cegppo-edu\[data\]'"):
        load_benchmark("aime24")


def test_parquet_loads_like_its_json_copy(tmp_path):
    import pyarrow  # the data extra, which make test installs
    import pyarrow.parquet as pq
    rows = math_data._read_json(FIXTURES / "aime24_h4.jsonl")
    pq.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "aime24.parquet")
    assert load_problems(tmp_path / "aime24.parquet") == load_problems(FIXTURES / "aime24_h4.jsonl")


def test_missing_pyarrow_names_the_install_for_a_wheel_and_a_checkout(monkeypatch, tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"x\.parquet needs pyarrow.*pip install 'cegppo-edu\[data\]'.*-e '\.\[data\]'"):
        load_problems(tmp_path / "x.parquet")


def test_smoke_mode_data_needs_no_optional_reader():
    """A wheel installed without extras has no pyarrow: the smoke presets must read JSON only."""
    from cegppo_edu.lm import config as cfg
    for name in ("r1-distill-1.5b-1gpu", "r1-distill-1.5b-1gpu-48gb"):
        smoke = cfg.get_preset(name, smoke=True)
        for path in (smoke.data_path, smoke.eval_data_path):
            assert Path(path).suffix in (".json", ".jsonl"), path
    assert not list(FIXTURES.glob("*.parquet"))


def test_task_factory_reads_local_paths_and_applies_the_template():
    config = types.SimpleNamespace(data_path=str(FIXTURES / "mathsub30k_verl.jsonl"),
                                   eval_data_path=str(FIXTURES / "math500_h4.json"),
                                   prompt_template="{problem}\n" + R1_MATH_INSTRUCTION)
    task = math_data.make_math_task(config)
    assert len(task.train) == 8 and len(task.heldout) == 4
    assert task.train[0].question == "What is $7 + 5$?\n" + R1_MATH_INSTRUCTION and task.train[0].answer == "12"
    assert task.heldout[2].answer == "\\frac{3}{2}"
