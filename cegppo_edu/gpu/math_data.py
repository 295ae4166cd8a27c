"""Math problems for the GPU chapter: the training set and the three evaluation benchmarks, each normalised to
``MathProblem(question, answer)``.

Sources (public Hugging Face datasets; their columns were read from the dataset cards and from code that loads
them, see book/gpu_recipe.md):

- ``mathsub30k``: Kwai-Klear/KlearReasoner-MathSub-30K, split train; verl schema: ``prompt`` (a list of chat
  messages with one user turn) and ``reward_model.ground_truth``;
- ``aime24``: HuggingFaceH4/aime_2024, split train; ``problem``, ``answer``;
- ``aime25``: opencompass/AIME2025, configs AIME2025-I and AIME2025-II, split test; ``question``, ``answer``;
- ``math500``: HuggingFaceH4/MATH-500, split test; ``problem``, ``answer``.

Every loader takes either such a name (``datasets.load_dataset`` from the Hub: needs internet and the ``data``
or ``gpu`` extra), a Hub repository id, or a local ``.json`` / ``.jsonl`` / ``.parquet`` file or a folder of
them (no network, no ``datasets`` needed; parquet needs ``pyarrow``). The record schema is recognised per
record, so a local copy of any of the four sources loads the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .prompts import R1_MATH_INSTRUCTION
from ..validation import Range


@dataclass(frozen=True)
class MathProblem:
    question: str  # the problem statement, without any instruction (the prompt adds it)
    answer: str  # the gold final answer, as the dataset writes it (LaTeX or plain)


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    configs: tuple[str | None, ...]  # several configs are concatenated in this order
    split: str


HUB_SOURCES: dict[str, HubSource] = {
    "mathsub30k": HubSource("Kwai-Klear/KlearReasoner-MathSub-30K", (None,), "train"),
    "aime24": HubSource("HuggingFaceH4/aime_2024", (None,), "train"),
    "aime25": HubSource("opencompass/AIME2025", ("AIME2025-I", "AIME2025-II"), "test"),
    "math500": HubSource("HuggingFaceH4/MATH-500", (None,), "test"),
}
TRAIN_SET = "mathsub30k"
BENCHMARKS = ("aime24", "aime25", "math500")
LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")
# What to run for the optional readers, said for both ways of installing: from PyPI/a wheel, or from a checkout.
INSTALL_DATA_EXTRA = "pip install 'cegppo-edu[data]' (from a checkout: pip install -e '.[data]')"

_PROBLEM_FIELDS = ("problem", "question")
_ANSWER_FIELDS = ("answer", "ground_truth")


# ------------------------------------------------------------------------------------------ one record
def _user_turn(messages: Any) -> str | None:
    """The content of the last user message of a chat-format ``prompt`` column (verl schema)."""
    if not isinstance(messages, (list, tuple)):
        return None
    contents = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return contents[-1] if contents else None


def _strip_instruction(problem: str) -> str:
    """Remove our own instruction if a dataset already appended it, so the prompt never carries it twice."""
    problem = problem.strip()
    if problem.endswith(R1_MATH_INSTRUCTION):
        problem = problem[: -len(R1_MATH_INSTRUCTION)].rstrip()
    return problem


def normalise_record(record: dict, where: str = "record") -> MathProblem:
    """One record of any supported schema -> ``MathProblem``. ``ValueError`` names the columns found."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} is a {type(record).__name__}, not a mapping of columns")
    problem = next((record[k] for k in _PROBLEM_FIELDS if isinstance(record.get(k), str)), None)
    if problem is None:
        problem = _user_turn(record.get("prompt"))
    answer = next((record[k] for k in _ANSWER_FIELDS if record.get(k) not in (None, "")), None)
    if answer is None and isinstance(record.get("reward_model"), dict):
        answer = record["reward_model"].get("ground_truth")
    columns = sorted(record)
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"{where} has no problem text: columns found {columns}; expected 'problem', "
                         "'question', or 'prompt' as a list of chat messages with a user turn")
    if answer is None or not str(answer).strip():
        raise ValueError(f"{where} has no gold answer: columns found {columns}; expected 'answer' or "
                         "'reward_model' with a 'ground_truth' entry")
    return MathProblem(question=_strip_instruction(problem), answer=str(answer).strip())


def normalise_records(records: Iterable[dict], source: str) -> list[MathProblem]:
    return [normalise_record(r, where=f"record {i} of {source}") for i, r in enumerate(records)]


# -------------------------------------------------------------------------------------------- local files
def _read_json(path: Path) -> list[dict]:
    """A JSON array (or an object holding one list), or JSON Lines: the Hub's ``.json`` files are often JSONL.
    An unreadable file (not UTF-8 text, a broken line, no record at all) is named with the line at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start} is {err.object[err.start:err.start + 1]!r}): "
                         f"a data file must be JSON, JSON Lines or parquet") from None
    records = _parse_json_text(path, text)
    if not records:
        raise ValueError(f"{path} holds no record (an empty file?)")
    return records


def _parse_json_text(path: Path, text: str) -> list:
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # more than one top-level value: JSON Lines under a .json name
        if isinstance(data, list):
            return data
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) == 1:
                return lists[0]
            return [data]
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON line ({err.msg} at column {err.colno}): "
                                 f"{line[:60]!r}") from None
    return records


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"reading {path} needs pyarrow, which is not installed: {INSTALL_DATA_EXTRA} (or give "
                          f"a .json/.jsonl copy)") from err
    return pq.read_table(path).to_pylist()


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in LOCAL_SUFFIXES)
        if not files:
            raise ValueError(f"folder {path} holds no {'/'.join(LOCAL_SUFFIXES)} file")
        return files
    if path.suffix not in LOCAL_SUFFIXES:
        raise ValueError(f"file {path} has suffix {path.suffix!r}; allowed: {', '.join(LOCAL_SUFFIXES)}")
    return [path]


def load_local(path: str | os.PathLike) -> list[MathProblem]:
    """Problems from a local file or folder (files in name order)."""
    problems = []
    for file in _local_files(Path(path)):
        records = _read_parquet(file) if file.suffix == ".parquet" else _read_json(file)
        problems += normalise_records(records, source=str(file))
    return problems


# ------------------------------------------------------------------------------------------------- Hub
def load_hub(source: HubSource) -> list[MathProblem]:
    """Problems from the Hugging Face Hub through ``datasets.load_dataset`` (needs internet)."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(f"loading from the Hub needs the datasets package, which is not installed: "
                          f"{INSTALL_DATA_EXTRA} (or pass a local .json/.jsonl/.parquet path)") from err
    problems = []
    for config in source.configs:
        table = datasets.load_dataset(source.repo_id, config, split=source.split)
        name = source.repo_id + (f" ({config})" if config else "") + f" split {source.split}"
        problems += normalise_records(table, source=name)
    return problems


# ------------------------------------------------------------------------------------------ entry points
def load_problems(source: str | os.PathLike, split: str = "train", limit: int | None = None) -> list[MathProblem]:
    """Problems from a name in ``HUB_SOURCES``, an existing local path, or a Hub repository id ``owner/name``
    (``split`` applies to a bare repository id only). ``limit`` keeps the first ``limit`` problems."""
    Range(1, integer=True, none=True).check("limit", limit)
    if os.path.exists(source):
        problems = load_local(source)
    elif str(source) in HUB_SOURCES:
        problems = load_hub(HUB_SOURCES[str(source)])
    elif str(source).count("/") == 1 and not str(source).startswith((".", "/")):
        problems = load_hub(HubSource(str(source), (None,), split))
    else:
        raise ValueError(f"source={str(source)!r} is neither an existing path nor one of "
                         f"{sorted(HUB_SOURCES)} nor a Hub repository id 'owner/name'")
    return problems[:limit] if limit else problems


def load_train_set(path: str | os.PathLike | None = None, limit: int | None = None) -> list[MathProblem]:
    """The training set: KlearReasoner-MathSub-30K from the Hub, or a local copy at ``path``."""
    return load_problems(path or TRAIN_SET, limit=limit)


def parse_benchmarks(spec: str | Iterable[str]) -> list[str]:
    """``"aime24,aime25"`` -> ``["aime24", "aime25"]``, each checked against ``BENCHMARKS``."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [n for n in names if n not in BENCHMARKS]
    if bad or not names:
        raise ValueError(f"benchmarks {bad or names!r} are not allowed; choose from {', '.join(BENCHMARKS)}")
    return names


def load_benchmark(name: str, path: str | os.PathLike | None = None) -> list[MathProblem]:
    """One evaluation benchmark by name (``aime24``, ``aime25``, ``math500``), from the Hub or a local copy."""
    parse_benchmarks([name])
    return load_problems(path or name)


def make_math_task(config):
    """Factory for the trainer's task registry (``config.task = "cegppo_edu.gpu.math_data:make_math_task"``):
    training problems from ``config.data_path`` (default: the Hub's KlearReasoner-MathSub-30K), held-out
    problems from ``config.eval_data_path`` (default: AIME24), each problem passed through
    ``config.prompt_template``."""
    from ..lm.tasks import Problem, TaskData, apply_prompt_template

    def as_problems(items):
        return [Problem(apply_prompt_template(p.question, config.prompt_template), p.answer) for p in items]
    return TaskData(train=as_problems(load_train_set(config.data_path or None)),
                    heldout=as_problems(load_problems(config.eval_data_path or "aime24")))
