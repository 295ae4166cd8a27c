"""The vLLM API that ``cegppo_edu.gpu.vllm_sampler`` relies on, checked against the source of the pinned release.

vLLM cannot be installed on the CPU machines that build this project, so its wheel is downloaded (never
installed) into ``.cache/vllm-wheel`` and its Python files are read straight from the zip with ``ast``; nothing
from vLLM is imported. The pin is the ``gpu`` extra's ``vllm==X`` in pyproject.toml: move it and these tests say
what changed (a renamed method, a dropped keyword, another child-seed rule...). Without network access on a
machine that has no copy of the wheel yet, they fail (they do not skip): put the wheel there by hand.

Everything the sampler uses is in ``USES``; the behaviours its docs describe are in the ``CLAIM_*`` constants.
``test_table_covers_what_the_sampler_calls`` keeps ``USES`` in step with ``cegppo_edu/vllm_sampler.py``.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIR = ROOT / ".cache" / "vllm-wheel"
SAMPLER = ROOT / "cegppo_edu" / "gpu" / "vllm_sampler.py"
# Any platform's wheel carries the same Python files; ask for the Linux x86-64 one so that the download works
# from any machine. Update this if a future release is published under another manylinux tag only.
WHEEL_PLATFORM = "manylinux_2_28_x86_64"
# The tests that read the wheel download it on first use: ``make check`` (offline) leaves them out, ``make test``
# runs them.
NEEDS_WHEEL = pytest.mark.network

# ------------------------------------------------------------------------------ what the sampler uses
# (kind, file inside the wheel, owner, name, detail). Kinds:
#   export     `vllm.<name>` is in vllm/__init__.py's lazy MODULE_ATTRS and resolves to a class in <detail>
#   llm_kwarg  keyword of `vllm.LLM(...)`: an `LLM.__init__` parameter or, via its **kwargs, an EngineArgs field
#   field      class-level annotated field of a dataclass / msgspec.Struct (or an inherited one)
#   method     method of the class (or of a base class defined in the wheel)
#   param      parameter <name> of the method <owner> ("Class.method")
#   attr       instance attribute / property; <detail>, when given, is text in the assigned expression
#   sets       somewhere in <owner> the attribute <name> is set to the string <detail>
#   env        vllm/envs.py reads the variable <name>, default <detail>
USES = (
    # vllm/__init__.py: the two names the sampler imports from the top-level package
    ("export", "vllm/__init__.py", None, "LLM", "vllm/entrypoints/llm.py"),
    ("export", "vllm/__init__.py", None, "SamplingParams", "vllm/sampling_params.py"),
    # vllm/entrypoints/llm.py (LLM) and vllm/engine/arg_utils.py (EngineArgs): VLLMSampler.__init__
    ("llm_kwarg", "vllm/entrypoints/llm.py", "LLM", "model", None),
    ("llm_kwarg", "vllm/entrypoints/llm.py", "LLM", "dtype", None),
    ("llm_kwarg", "vllm/entrypoints/llm.py", "LLM", "gpu_memory_utilization", None),
    ("llm_kwarg", "vllm/entrypoints/llm.py", "LLM", "max_model_len", None),
    ("llm_kwarg", "vllm/entrypoints/llm.py", "LLM", "enable_prefix_caching", None),
    ("llm_kwarg", "vllm/entrypoints/llm.py", "LLM", "enable_sleep_mode", None),
    ("llm_kwarg", "vllm/entrypoints/llm.py", "LLM", "seed", None),
    # vllm/entrypoints/llm.py: the calls on the engine
    ("method", "vllm/entrypoints/llm.py", "LLM", "generate", None),
    ("param", "vllm/entrypoints/llm.py", "LLM.generate", "prompts", None),
    ("param", "vllm/entrypoints/llm.py", "LLM.generate", "sampling_params", None),
    ("param", "vllm/entrypoints/llm.py", "LLM.generate", "use_tqdm", None),
    ("method", "vllm/entrypoints/llm.py", "LLM", "sleep", None),
    ("param", "vllm/entrypoints/llm.py", "LLM.sleep", "level", None),
    ("method", "vllm/entrypoints/llm.py", "LLM", "wake_up", None),
    ("param", "vllm/entrypoints/llm.py", "LLM.wake_up", "tags", None),
    ("method", "vllm/entrypoints/llm.py", "LLM", "reset_prefix_cache", None),
    # vllm/sampling_params.py: VLLMSampler.generate's SamplingParams(...) keywords
    ("field", "vllm/sampling_params.py", "SamplingParams", "n", None),
    ("field", "vllm/sampling_params.py", "SamplingParams", "temperature", None),
    ("field", "vllm/sampling_params.py", "SamplingParams", "top_p", None),
    ("field", "vllm/sampling_params.py", "SamplingParams", "max_tokens", None),
    ("field", "vllm/sampling_params.py", "SamplingParams", "logprobs", None),
    ("field", "vllm/sampling_params.py", "SamplingParams", "seed", None),
    # vllm/outputs.py, vllm/logprobs.py: what request_outputs_to_rollout reads
    ("attr", "vllm/outputs.py", "RequestOutput", "outputs", None),
    ("field", "vllm/outputs.py", "CompletionOutput", "token_ids", None),
    ("field", "vllm/outputs.py", "CompletionOutput", "text", None),
    ("field", "vllm/outputs.py", "CompletionOutput", "logprobs", None),
    ("field", "vllm/outputs.py", "CompletionOutput", "finish_reason", None),
    ("field", "vllm/logprobs.py", "Logprob", "logprob", None),
    # sync_weights: llm.collective_rpc("reload_weights", kwargs={"weights_iterator": ...}), vLLM's maintained
    # in-place reload: LLM -> LLMEngine -> in-process engine core -> UniProcExecutor -> gpu_worker.Worker
    ("method", "vllm/entrypoints/llm.py", "LLM", "collective_rpc", None),
    ("param", "vllm/entrypoints/llm.py", "LLM.collective_rpc", "method", None),
    ("param", "vllm/entrypoints/llm.py", "LLM.collective_rpc", "kwargs", None),
    ("method", "vllm/v1/worker/gpu_worker.py", "Worker", "reload_weights", None),
    ("param", "vllm/v1/worker/gpu_model_runner.py", "GPUModelRunner.reload_weights", "weights_iterator", None),
    ("param", "vllm/v1/worker/gpu/model_runner.py", "GPUModelRunner.reload_weights", "weights_iterator", None),
    ("attr", "vllm/v1/engine/llm_engine.py", "LLMEngine", "model_executor", "engine_core.engine_core.model_executor"),
    ("attr", "vllm/v1/executor/uniproc_executor.py", "UniProcExecutor", "driver_worker", "WorkerWrapperBase("),
    # vllm/config/parallel.py, vllm/platforms/cuda.py: one GPU -> UniProcExecutor running gpu_worker.Worker
    ("sets", "vllm/config/parallel.py", "ParallelConfig", "distributed_executor_backend", "uni"),
    ("sets", "vllm/platforms/cuda.py", None, "worker_cls", "vllm.v1.worker.gpu_worker.Worker"),
    # close(): LLM.llm_engine (LLMEngine) -> engine_core (the in-process client) -> shutdown(), its finaliser's call
    ("attr", "vllm/entrypoints/llm.py", "LLM", "llm_engine", None),
    ("attr", "vllm/v1/engine/llm_engine.py", "LLMEngine", "engine_core", "EngineCoreClient.make_client("),
    ("method", "vllm/v1/engine/core_client.py", "InprocClient", "shutdown", None),
    # vllm/envs.py: import_vllm sets it to "0" so that the engine core (and the tensors it gets) stay in-process
    ("env", "vllm/envs.py", None, "VLLM_ENABLE_V1_MULTIPROCESSING", "1"),
)
# What the sampler's docs say about vLLM's behaviour (checked below, each in its own test).
CLAIM_SLEEP_TAGS = {"weights", "kv_cache"}  # the tags of LLM.wake_up(tags=...) released by a level-1/2 sleep
CLAIM_GREEDY_BELOW = 1e-5  # temperature below this is greedy ...
CLAIM_GREEDY_ERROR = ("VLLMValidationError", "n must be 1 when using greedy sampling")  # ... and refuses n > 1


def rows(kind):
    return [pytest.param(*row, id=f"{row[1].removeprefix('vllm/')}:{row[2] + '.' if row[2] else ''}{row[3]}")
            for row in USES if row[0] == kind]


# ---------------------------------------------------------------------------------- the pinned wheel
def pinned_version() -> str:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    specs = [Requirement(line).specifier for line in extra if Requirement(line).name == "vllm"]
    assert len(specs) == 1, f"the gpu extra of pyproject.toml should name vllm once, it has {extra}"
    (spec,) = specs
    pins = [s.version for s in spec if s.operator == "==" and "*" not in s.version]
    assert len(pins) == 1 and len(spec) == 1, f"the gpu extra should pin vllm exactly (vllm==X), not {spec}"
    return pins[0]


class Wheel:
    """The pinned vLLM wheel, downloaded on first use; ``pytest.fail`` (in the calling test) if impossible."""

    def __init__(self, version: str):
        self.version = version
        self._zip: zipfile.ZipFile | None = None
        self._error: str | None = None

    def _download(self) -> Path:
        found = sorted(WHEEL_DIR.glob(f"vllm-{self.version}-*.whl"))
        if found:
            return found[0]
        cmd = [sys.executable, "-m", "pip", "download", f"vllm=={self.version}", "--no-deps",
               "--only-binary=:all:", "--platform", WHEEL_PLATFORM, "--retries", "2", "-d", str(WHEEL_DIR)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            done = None
        found = sorted(WHEEL_DIR.glob(f"vllm-{self.version}-*.whl"))
        if done is None or done.returncode != 0 or not found:
            tail = "timed out after 30 min" if done is None else (done.stderr or done.stdout).strip()[-1500:]
            raise RuntimeError(
                f"could not download the pinned vLLM wheel (vllm=={self.version}, the gpu extra's pin) into "
                f"{WHEEL_DIR}: no network access, or no such release on the index? These tests read vLLM's "
                f"source from that wheel and cannot run without it. Ran: {' '.join(cmd)}\n{tail}")
        return found[0]

    @property
    def zip(self) -> zipfile.ZipFile:
        if self._zip is None and self._error is None:
            try:
                path = self._download()
                if not zipfile.is_zipfile(path):
                    raise RuntimeError(f"{path} is not a valid wheel (interrupted download?): delete it and rerun")
                self._zip = zipfile.ZipFile(path)
            except RuntimeError as err:
                self._error = str(err)
        if self._error is not None:
            pytest.fail(self._error, pytrace=False)
        return self._zip

    def has(self, path: str) -> bool:
        return path in self._names()

    @functools.cache
    def _names(self) -> frozenset[str]:
        return frozenset(self.zip.namelist())

    @functools.cache
    def tree(self, path: str) -> ast.Module:
        assert self.has(path), f"vllm {self.version} has no file {path}"
        return ast.parse(self.zip.read(path).decode("utf-8"), filename=path)


@pytest.fixture(scope="module")
def wheel() -> Wheel:
    return Wheel(pinned_version())


# ------------------------------------------------------------------------------------- ast helpers
def module_file(wheel: Wheel, module: str) -> str | None:
    base = module.replace(".", "/")
    return next((p for p in (f"{base}.py", f"{base}/__init__.py") if wheel.has(p)), None)


def absolute(path: str, module: str | None, level: int) -> str:
    """The absolute module name of ``from <level dots><module> import ...`` written in the file ``path``."""
    if level == 0:
        return module or ""
    package = path.removesuffix(".py").split("/")[:-1]  # "vllm/a/b.py", "vllm/a/__init__.py" -> vllm.a
    package = package[: len(package) - (level - 1)]
    return ".".join(package + ([module] if module else []))


def find_class(wheel: Wheel, path: str, name: str, depth: int = 0) -> tuple[str, ast.ClassDef]:
    """The class ``name`` as seen from module ``path``: defined there, imported into it, or aliased (``A = B``)."""
    assert depth < 10, f"could not resolve {name} from {path}"
    body = wheel.tree(path).body
    for node in body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return path, node
    for node in body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return find_class(wheel, path, node.value.id, depth + 1)
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = module_file(wheel, absolute(path, node.module, node.level))
                    if source is not None:
                        return find_class(wheel, source, alias.name, depth + 1)
    raise AssertionError(f"vllm has no class {name} in {path}")


def class_chain(wheel: Wheel, path: str, name: str) -> list[tuple[str, ast.ClassDef]]:
    """The class and its base classes that are defined in the wheel (``nn.Module``, ``msgspec.Struct``: skipped)."""
    chain, todo = [], [find_class(wheel, path, name)]
    while todo:
        where, cls = todo.pop(0)
        if all(c is not cls for _, c in chain):
            chain.append((where, cls))
        for base in cls.bases:
            if isinstance(base, ast.Name):
                try:
                    todo.append(find_class(wheel, where, base.id))
                except AssertionError:
                    pass  # a base from outside vLLM (torch, msgspec, typing)
    return chain


def functions(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    """Methods by name; of several ``@overload`` definitions the last (the implementation) wins."""
    return {n.name: n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def method(wheel: Wheel, path: str, owner: str, name: str) -> ast.FunctionDef:
    for _, cls in class_chain(wheel, path, owner):
        if name in functions(cls):
            return functions(cls)[name]
    raise AssertionError(f"vllm's {owner} ({path}) has no method {name}")


def fields(wheel: Wheel, path: str, owner: str) -> set[str]:
    return {n.target.id for _, cls in class_chain(wheel, path, owner) for n in cls.body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            and "ClassVar" not in ast.unparse(n.annotation)}


def parameters(func: ast.FunctionDef) -> list[str]:
    a = func.args
    return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]


def self_assignments(cls: ast.ClassDef, name: str) -> list[ast.AST | None]:
    """The values assigned to ``self.<name>`` in the class's methods (None for a bare ``self.x: T``)."""
    found = []
    for node in ast.walk(cls):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            for t in (target.elts if isinstance(target, ast.Tuple) else [target]):
                if (isinstance(t, ast.Attribute) and t.attr == name and isinstance(t.value, ast.Name)
                        and t.value.id == "self"):
                    found.append(node.value)
    return found


def is_property(func: ast.FunctionDef) -> bool:
    return any(ast.unparse(d).split(".")[-1] in ("property", "cached_property") for d in func.decorator_list)


def source_of(node: ast.AST) -> str:
    return ast.unparse(node)


# ---------------------------------------------------------------------------------- table-driven tests
@NEEDS_WHEEL
def test_wheel_is_the_pinned_release(wheel):
    metadata = next(n for n in wheel.zip.namelist() if n.endswith(".dist-info/METADATA"))
    lines = wheel.zip.read(metadata).decode().splitlines()
    assert f"Version: {wheel.version}" in lines


@NEEDS_WHEEL
@pytest.mark.parametrize("kind, path, target, name, detail", rows("export"))
def test_top_level_export(wheel, kind, path, target, name, detail):
    exports = next(n.value for n in wheel.tree(path).body if isinstance(n, (ast.Assign, ast.AnnAssign))
                   and "MODULE_ATTRS" in source_of(n.targets[0] if isinstance(n, ast.Assign) else n.target))
    table = ast.literal_eval(exports)
    assert name in table, f"vllm.{name} is no longer exported by {path}"
    module, attr = table[name].split(":")
    where, cls = find_class(wheel, module_file(wheel, absolute(path, module.lstrip("."), len(module) - len(
        module.lstrip(".")))), attr)
    assert (where, cls.name) == (detail, name), f"vllm.{name} is now {where}:{cls.name}, not {detail}:{name}"


@NEEDS_WHEEL
@pytest.mark.parametrize("kind, path, owner, name, detail", rows("llm_kwarg"))
def test_llm_keyword_is_accepted(wheel, kind, path, owner, name, detail):
    init = method(wheel, path, owner, "__init__")
    if name in parameters(init):
        return
    assert init.args.kwarg is not None, f"LLM.__init__ takes no {name} and no **kwargs"
    spread = init.args.kwarg.arg
    forwards = [c for c in ast.walk(init) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                and c.func.id == "EngineArgs" and any(k.arg is None and source_of(k.value) == spread
                                                       for k in c.keywords)]
    assert forwards, f"LLM.__init__ no longer forwards **{spread} to EngineArgs(...), so {name} is refused"
    engine_args = find_class(wheel, path, "EngineArgs")
    assert any("dataclass" in source_of(d) for d in engine_args[1].decorator_list)
    assert name in fields(wheel, engine_args[0], "EngineArgs"), (
        f"{name} is neither an LLM.__init__ parameter nor an EngineArgs field ({engine_args[0]})")


@NEEDS_WHEEL
@pytest.mark.parametrize("kind, path, owner, name, detail", rows("field"))
def test_field_exists(wheel, kind, path, owner, name, detail):
    assert name in fields(wheel, path, owner), f"vllm's {owner} ({path}) has no field {name}"


@NEEDS_WHEEL
@pytest.mark.parametrize("kind, path, owner, name, detail", rows("method"))
def test_method_exists(wheel, kind, path, owner, name, detail):
    assert not is_property(method(wheel, path, owner, name)), f"{owner}.{name} is a property, not a method"


@NEEDS_WHEEL
@pytest.mark.parametrize("kind, path, owner, name, detail", rows("param"))
def test_method_parameter_exists(wheel, kind, path, owner, name, detail):
    cls, func = owner.split(".")
    assert name in parameters(method(wheel, path, cls, func)), f"vllm's {owner} ({path}) takes no {name}"


@NEEDS_WHEEL
@pytest.mark.parametrize("kind, path, owner, name, detail", rows("attr"))
def test_attribute_is_set(wheel, kind, path, owner, name, detail):
    values = [v for _, cls in class_chain(wheel, path, owner) for v in self_assignments(cls, name)]
    props = [f for _, cls in class_chain(wheel, path, owner) for f in functions(cls).values()
             if f.name == name and is_property(f)]
    assert values or props, f"vllm's {owner} ({path}) never sets self.{name}"
    if detail is not None:
        texts = [source_of(v) for v in values if v is not None]
        assert any(detail in t for t in texts), f"self.{name} of {owner} is now set from {texts}, not {detail}"


@NEEDS_WHEEL
@pytest.mark.parametrize("kind, path, owner, name, detail", rows("sets"))
def test_attribute_is_set_to(wheel, kind, path, owner, name, detail):
    scope = find_class(wheel, path, owner)[1] if owner else wheel.tree(path)
    values = [n.value.value for n in ast.walk(scope) if isinstance(n, ast.Assign)
              and isinstance(n.value, ast.Constant) and any(isinstance(t, ast.Attribute) and t.attr == name
                                                            for t in n.targets)]
    assert detail in values, f"{owner or path} never sets .{name} = {detail!r} (it sets {values})"


@NEEDS_WHEEL
@pytest.mark.parametrize("kind, path, owner, name, detail", rows("env"))
def test_environment_variable_is_read(wheel, kind, path, owner, name, detail):
    table = next(n.value for n in wheel.tree(path).body if isinstance(n, (ast.Assign, ast.AnnAssign))
                 and "environment_variables" == source_of(n.targets[0] if isinstance(n, ast.Assign) else n.target))
    getters = {k.value: v for k, v in zip(table.keys, table.values, strict=True) if isinstance(k, ast.Constant)}
    assert name in getters, f"{path} no longer knows {name}"
    reads = [c for c in ast.walk(getters[name]) if isinstance(c, ast.Call)
             and source_of(c.func) in ("os.getenv", "os.environ.get") and c.args
             and isinstance(c.args[0], ast.Constant) and c.args[0].value == name]
    assert reads, f"{path} maps {name} but reads another variable: {source_of(getters[name])}"
    assert [ast.literal_eval(c.args[1]) for c in reads if len(c.args) > 1] == [detail]


def test_table_covers_what_the_sampler_calls():
    """Every vLLM import, LLM/SamplingParams keyword, environment variable and ``self._llm.<...>`` name of the
    sampler has a row in USES."""
    tree = ast.parse(SAMPLER.read_text())
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}

    def value(node):
        return constants.get(node.id) if isinstance(node, ast.Name) else ast.literal_eval(node)
    named = {(row[2], row[3]) for row in USES}
    attrs = {row[3] for row in USES if row[0] in ("attr", "method")}
    worker_methods = {row[3] for row in USES if row[0] == "method" and row[2] == "Worker"}
    reload_params = {row[3] for row in USES if row[0] == "param" and row[2] == "GPUModelRunner.reload_weights"}
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and source_of(node.func).endswith("collective_rpc"):
            if value(node.args[0]) not in worker_methods:
                missing.append(f"collective_rpc({value(node.args[0])!r})")
            for keyword in node.keywords:
                if keyword.arg == "kwargs" and isinstance(keyword.value, ast.Dict):
                    missing += [f"reload_weights({value(k)}=...)" for k in keyword.value.keys
                                if value(k) not in reload_params]
        if isinstance(node, ast.Call):
            callee = source_of(node.func).split(".")[-1]
            owner = {"LLM": "LLM", "SamplingParams": "SamplingParams"}.get(callee)
            for keyword in node.keywords if owner else []:
                if keyword.arg is not None and (owner, keyword.arg) not in named:
                    missing.append(f"{callee}({keyword.arg}=...)")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm":
            missing += [f"from {node.module} import {a.name}" for a in node.names
                        if node.module != "vllm" or (None, a.name) not in named]
        if isinstance(node, ast.Attribute) and source_of(node.value) == "vllm" and (None, node.attr) not in named:
            missing.append(f"vllm.{node.attr}")
        if isinstance(node, ast.Subscript) and source_of(node.value) == "os.environ":
            env = value(node.slice)
            if (None, env) not in named:
                missing.append(f"os.environ[{env!r}]")
        if isinstance(node, ast.Attribute) and source_of(node).startswith("self._llm."):
            chain = source_of(node).removeprefix("self._llm.").split(".")
            missing += [f"self._llm....{a}" for a in chain if a not in attrs]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert any(source_of(c.func).endswith("LLM") for c in calls), "the sampler no longer calls vllm.LLM(...)?"
    assert any(source_of(c.func).endswith("SamplingParams") for c in calls), "no SamplingParams(...) call?"
    assert not missing, f"the sampler uses vLLM names that USES does not check: {sorted(set(missing))}"


# ------------------------------------------------------------------------------- behaviour the docs claim
def test_multiprocess_engine_core_is_chosen_by_that_variable(wheel):
    path = "vllm/v1/engine/llm_engine.py"
    engine = find_class(wheel, path, "LLMEngine")[1]
    build = source_of(method(wheel, path, "LLMEngine", "from_engine_args"))
    (variable,) = [row[3] for row in USES if row[0] == "env"]
    assert f"if envs.{variable}:" in build and "multiprocess_mode=enable_multiprocessing" in build
    guarded = [n for n in ast.walk(engine) if isinstance(n, ast.If) and source_of(n.test) == "not multiprocess_mode"
               and any("self.model_executor" in source_of(s) for s in n.body)]
    assert guarded, "LLMEngine.model_executor is no longer set (only) for an in-process engine core"


def test_in_process_collective_rpc_calls_the_worker_directly(wheel):
    """With the engine core in this process, ``collective_rpc`` runs the worker method on the driver worker with
    the caller's own objects (no serialisation): an iterator of GPU tensors can be handed over."""
    rpc = source_of(method(wheel, "vllm/v1/executor/uniproc_executor.py", "UniProcExecutor", "collective_rpc"))
    assert "run_method(self.driver_worker, method, args, kwargs)" in rpc
    reload = source_of(method(wheel, "vllm/v1/worker/gpu_worker.py", "Worker", "reload_weights"))
    assert "self.model_runner.reload_weights(*args, **kwargs)" in reload
    for path in ("vllm/v1/worker/gpu_model_runner.py", "vllm/v1/worker/gpu/model_runner.py"):
        runner = method(wheel, path, "GPUModelRunner", "reload_weights")
        defaults = dict(zip([a.arg for a in runner.args.args][-len(runner.args.defaults):], runner.args.defaults))
        assert source_of(defaults["is_checkpoint_format"]) == "True", path  # HF names, as hf_named_weights gives


def test_child_k_of_a_seeded_request_gets_seed_plus_k(wheel):
    path = "vllm/v1/engine/parallel_sampling.py"
    parent = functions(find_class(wheel, path, "ParentRequest")[1])
    rule = []
    for func in parent.values():
        assigns = [n for n in ast.walk(func) if isinstance(n, ast.Assign)]
        seeds = {source_of(t) for n in assigns if source_of(n.value) == "self.sampling_params.seed" for t in n.targets}
        single = any(source_of(n.value) == "1" and source_of(t).endswith(".n") for n in assigns for t in n.targets)
        rule += [func.name for n in assigns if single and any(source_of(t).endswith(".seed") for t in n.targets)
                 and isinstance(n.value, ast.BinOp) and isinstance(n.value.op, ast.Add)
                 and source_of(n.value.left) in seeds and source_of(n.value.right) in parameters(func)[1:]]
    assert rule == ["_get_child_sampling_params"], "a child (n=1) no longer gets the parent's seed + its index"
    info = source_of(parent["get_child_info"])
    assert "self._get_child_sampling_params(index)" in info and "def get_child_info(self, index" in info


def test_engine_makes_one_child_per_index(wheel):
    add = method(wheel, "vllm/v1/engine/llm_engine.py", "LLMEngine", "add_request")
    loops = [n for n in ast.walk(add) if isinstance(n, ast.For) and source_of(n.iter) == "range(n)"
             and f".get_child_info({source_of(n.target)})" in source_of(n)]
    assert loops, "LLMEngine.add_request no longer fans a request with n > 1 out as children 0..n-1"


def test_greedy_threshold(wheel):
    eps = [ast.literal_eval(n.value) for n in wheel.tree("vllm/sampling_params.py").body
           if isinstance(n, ast.Assign) and source_of(n.targets[0]) == "_SAMPLING_EPS"]
    assert eps == [CLAIM_GREEDY_BELOW]
    post = source_of(method(wheel, "vllm/sampling_params.py", "SamplingParams", "__post_init__"))
    assert "if self.temperature < _SAMPLING_EPS:" in post and "self._verify_greedy_sampling()" in post


def test_greedy_with_n_above_one_is_refused(wheel):
    verify = method(wheel, "vllm/sampling_params.py", "SamplingParams", "_verify_greedy_sampling")
    (check,) = [n for n in verify.body if isinstance(n, ast.If)]
    assert source_of(check.test) == "self.n > 1"
    (refusal,) = [n for n in check.body if isinstance(n, ast.Raise)]
    error, message = CLAIM_GREEDY_ERROR
    assert source_of(refusal.exc.func) == error
    text = "".join(v.value for v in ast.walk(refusal.exc.args[0])
                   if isinstance(v, ast.Constant) and isinstance(v.value, str))
    assert text.startswith(message), f"the refusal now reads {text!r}"


def test_greedy_refusal_is_not_a_value_error(wheel):
    """`except ValueError` does not catch it: its bases are vLLM's own error classes, then Exception."""
    chain = class_chain(wheel, "vllm/exceptions.py", CLAIM_GREEDY_ERROR[0])
    outside = {source_of(b) for _, cls in chain for b in cls.bases} - {cls.name for _, cls in chain}
    assert outside == {"Exception"}, f"{CLAIM_GREEDY_ERROR[0]} now also derives from {outside - {'Exception'}}"


def test_wake_up_returns_whether_fully_awake(wheel):
    for path, owner in (("vllm/entrypoints/llm.py", "LLM"), ("vllm/v1/engine/llm_engine.py", "LLMEngine"),
                        ("vllm/v1/engine/core_client.py", "InprocClient"), ("vllm/v1/engine/core.py", "EngineCore")):
        wake = method(wheel, path, owner, "wake_up")
        assert wake.returns is not None and source_of(wake.returns) == "bool", f"{owner}.wake_up returns no bool"
    core = source_of(method(wheel, "vllm/v1/engine/core.py", "EngineCore", "wake_up"))
    assert "fully_awake = not self.model_executor.is_sleeping" in core and "return fully_awake" in core
    resumes = [n for n in ast.walk(method(wheel, "vllm/v1/engine/core.py", "EngineCore", "wake_up"))
               if isinstance(n, ast.If) and source_of(n.test) == "fully_awake"
               and "self.resume_scheduler()" in source_of(n)]
    assert resumes, "the scheduler no longer waits for a full wake-up (requests stay queued until then)"
    asleep = source_of(method(wheel, "vllm/v1/executor/abstract.py", "Executor", "is_sleeping"))
    assert "return bool(self.sleeping_tags)" in asleep


def test_sleep_releases_exactly_the_claimed_tags(wheel):
    tags = [n.value for n in wheel.tree("vllm/v1/executor/abstract.py").body
            if isinstance(n, ast.Assign) and source_of(n.targets[0]) == "SLEEP_TAGS"]
    assert len(tags) == 1 and source_of(tags[0]).startswith("frozenset(")
    assert set(ast.literal_eval(tags[0].args[0])) == CLAIM_SLEEP_TAGS
    sleep = source_of(method(wheel, "vllm/v1/executor/abstract.py", "Executor", "sleep"))
    assert "self.sleeping_tags |= SLEEP_TAGS" in sleep


def test_sleep_from_level_one_clears_the_prefix_cache(wheel):
    core = "vllm/v1/engine/core.py"
    sleep = source_of(method(wheel, core, "EngineCore", "sleep"))
    assert "clear_prefix_cache = level >= 1" in sleep and "clear_cache=clear_prefix_cache" in sleep
    assert "self._reset_caches()" in source_of(method(wheel, core, "EngineCore", "_finish_pause"))
    assert "self.reset_prefix_cache(" in source_of(method(wheel, core, "EngineCore", "_reset_caches"))


def test_outputs_come_back_in_prompt_order(wheel):
    path = "vllm/entrypoints/common/offline.py"
    run = source_of(method(wheel, path, "OfflineInferenceMixin", "_run_engine"))
    assert "return sorted(outputs, key=lambda x: int(x.request_id))" in run
    assert "request_id = str(next(self.request_counter))" in source_of(
        method(wheel, path, "OfflineInferenceMixin", "_add_request"))
    per_prompt = source_of(method(wheel, path, "OfflineInferenceMixin", "_params_to_seq"))
    assert "len(params) != num_requests" in per_prompt  # a list of SamplingParams pairs one per prompt
    children = source_of(method(wheel, "vllm/v1/engine/parallel_sampling.py", "ParentRequest", "get_outputs"))
    assert "self.output_aggregator[completion_output.index] = completion_output" in children
