"""Nothing lost under pre-emption, concurrency, corruption and hostile files (issue 27): each numbered item of the
issue has its test here (the grading pool's, item 7, is in test_math_reward.py)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest

from cegppo_edu.cli import main as cegppo
from cegppo_edu.lm import checkpoint as ckpt
from cegppo_edu.lm import run_dir
from cegppo_edu.lm.config import apply_overrides, from_dict, get_preset, to_dict
from cegppo_edu.lm.rewards import ExactMatchReward
from cegppo_edu.lm.run_dir import read_metrics, strip_timings
from test_run_safety import ARGS, ROOT, TESTS, train

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, ROOT, os.environ.get("PYTHONPATH", "")])}
CLI = "import sys; from cegppo_edu.cli import main; sys.exit(main(['train', *sys.argv[1:]]))"


def start(out, *extra) -> subprocess.Popen:
    """``cegppo train`` in its own process (so that signals reach it as they would a real run)."""
    return subprocess.Popen([sys.executable, "-c", CLI, "--out", str(out), *ARGS, *extra], cwd=ROOT, env=ENV,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def logged_lines(out) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def four_steps(tmp_path):
    """A finished 4-step run with checkpoints at steps 2 and 4."""
    out = tmp_path / "D"
    assert train(out, "--steps", "4")[0] == 0
    return out, [os.path.basename(p) for p in ckpt.complete_checkpoints(str(out))]


# ------------------------------------------------------------------------------ 1. a checkpoint cannot run code
class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = ""


def _plant_payload(checkpoint: str, marker) -> None:
    global MARKER
    MARKER = str(marker)
    with open(os.path.join(checkpoint, ckpt.STATE_FILE), "wb") as f:
        pickle.dump({"step": 4, "evil": _Payload()}, f)


def test_a_pickle_payload_in_a_checkpoint_is_refused_and_never_runs(tmp_path, capsys):
    out, names = four_steps(tmp_path)
    newest = os.path.join(ckpt.checkpoint_root(str(out)), names[-1])
    marker = tmp_path / "pwned"
    _plant_payload(newest, marker)
    with pytest.raises(ckpt.CheckpointError, match="refused to load"):
        ckpt.load_state(newest)
    assert not marker.exists()
    ckpt._write_manifest(newest)  # an attacker who also rewrites the manifest: verification passes, loading refuses
    code, err = train(out, "--steps", "4", "--resume", capsys=capsys)
    assert code == 2 and "refused to load" in err and not marker.exists()


def test_a_genuine_state_loads_with_weights_only(tmp_path):
    out, names = four_steps(tmp_path)
    state = ckpt.load_state(os.path.join(ckpt.checkpoint_root(str(out)), names[-1]))
    assert state["step"] == 4 and set(state["rng"]) >= {"python", "numpy", "torch"}


# ------------------------------------------------------------------------------ 2. no writing through links
def test_a_symlinked_metrics_log_is_refused_and_its_target_untouched(tmp_path, capsys):
    out, _ = four_steps(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n" * 1000)
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to(victim)
    code, err = train(out, "--steps", "6", "--resume", capsys=capsys)
    assert code == 2 and "symbolic link" in err and "metrics.jsonl" in err
    assert victim.read_text() == "precious\n" * 1000


def test_a_link_swapped_in_after_the_check_is_still_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "m").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        run_dir.open_no_follow(str(tmp_path / "m"), os.O_WRONLY | os.O_APPEND)
    assert victim.read_text() == "keep"


# ------------------------------------------------------------------------------ 3. SIGTERM and SIGHUP
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_finish_the_step_checkpoint_and_exit_with_the_signals_code(tmp_path, sig):
    out = tmp_path / "D"
    proc = start(out, "--steps", "30", "--set", "checkpoint_every=0")
    wait_for(lambda: logged_lines(out) >= 3, "three logged steps")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and "continue with: cegppo train" in err
    stopped = read_metrics(str(out))[-1]["step"]
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(str(out))) == stopped  # nothing since the last step lost
    assert train(out, "--steps", "30", "--set", "checkpoint_every=0", "--resume")[0] == 0
    straight = tmp_path / "straight"
    assert train(straight, "--steps", "30", "--set", "checkpoint_every=0")[0] == 0
    assert strip_timings(read_metrics(str(out))) == strip_timings(read_metrics(str(straight)))


@pytest.mark.slow
def test_sigterm_during_the_warm_start_leaves_a_folder_that_resume_starts_afresh(tmp_path, capsys):
    out = tmp_path / "D"
    proc = start(out, "--steps", "2", "--set", "warm_start_steps=5000")
    wait_for(lambda: (out / "warm_start.jsonl").exists() and (out / "warm_start.jsonl").read_text().count("\n") >= 2,
             "the warm start to begin")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err and "nothing to keep" in err, err
    code, err = train(out, "--steps", "2", "--resume", capsys=capsys)
    assert code == 0 and "starting it afresh" in err
    assert [m["step"] for m in read_metrics(str(out))] == [0, 1, 2]


# ------------------------------------------------------------------------------ 4. one live writer per folder
@pytest.mark.slow
def test_a_second_run_into_a_live_runs_folder_is_refused_and_the_lock_dies_with_its_process(tmp_path, capsys):
    out = tmp_path / "D"
    first = start(out, "--steps", "500", "--set", "checkpoint_every=1")
    wait_for(lambda: ckpt.latest_checkpoint(str(out)) is not None, "the first checkpoint")
    for extra in ([], ["--overwrite"], ["--resume"]):
        code, err = train(out, "--steps", "500", "--set", "checkpoint_every=1", *extra, capsys=capsys)
        assert code == 2 and f"pid {first.pid}" in err and "one run per folder" in err, (extra, err)
    first.send_signal(signal.SIGKILL)  # a crash: no clean-up runs, the kernel drops the lock
    first.wait()
    code, err = train(out, "--steps", "2", "--set", "checkpoint_every=1", "--resume", capsys=capsys)
    assert code == 2 and "another cegppo run" not in err and "below the run's steps=500" in err  # the lock is gone
    lines = read_metrics(str(out))
    assert len({m["step"] for m in lines}) == len(lines)  # every step logged once


# ------------------------------------------------------------------------------ 5. damaged checkpoints are skipped
def _damage(path, how: str) -> None:
    if how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif how == "flip":
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            chunk = f.read(16)
            f.seek(os.path.getsize(path) // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))
    else:
        os.remove(path)


@pytest.mark.parametrize("file, how", [("model.safetensors", "truncate"), ("model.safetensors", "flip"),
                                       (ckpt.STATE_FILE, "truncate"), (ckpt.STATE_FILE, "flip"),
                                       (ckpt.STATE_FILE, "delete"), ("config.json", "delete")])
def test_a_damaged_newest_checkpoint_is_named_and_skipped_for_the_good_one_before_it(tmp_path, capsys, file, how):
    out, names = four_steps(tmp_path)
    assert names == ["step_000002", "step_000004"]
    _damage(os.path.join(ckpt.checkpoint_root(str(out)), "step_000004", file), how)
    code, err = train(out, "--steps", "4", "--resume", capsys=capsys)
    assert code == 0, err
    assert "step_000004 is damaged" in err and "resumed from" in err and "step_000002" in err
    assert [m["step"] for m in read_metrics(str(out))] == [0, 1, 2, 3, 4]  # steps 3-4 run again, logged once


def test_with_every_checkpoint_damaged_resume_refuses_without_advising_overwrite(tmp_path, capsys):
    out, names = four_steps(tmp_path)
    for name in names:
        _damage(os.path.join(ckpt.checkpoint_root(str(out)), name, "model.safetensors"), "flip")
    code, err = train(out, "--steps", "4", "--resume", capsys=capsys)
    assert code == 2 and "no usable checkpoint" in err and "Copy them away before any --overwrite" in err


# ------------------------------------------------------------------------------ 6. a lost run.json
def test_a_lost_run_json_resumes_from_the_checkpoints_own_run_id(tmp_path, capsys):
    out, _ = four_steps(tmp_path)
    run_id = run_dir.read_run_identity(str(out))["run_id"]
    (out / "run.json").unlink()
    code, err = train(out, "--steps", "6", "--resume", capsys=capsys)
    assert code == 0 and "step_000004" in err
    assert run_dir.read_run_identity(str(out))["run_id"] == run_id
    assert [m["step"] for m in read_metrics(str(out))] == list(range(7))


# ------------------------------------------------------------------------------ 8-10. wrong results without a word
def test_a_data_path_for_a_task_that_reads_none_is_refused(tmp_path, capsys):
    code, err = train(tmp_path / "D", "--steps", "2", "--set", "data_path=/nonexistent/file.jsonl", capsys=capsys)
    assert code == 2 and "data_path='/nonexistent/file.jsonl' is not read by task 'arith'" in err
    assert not (tmp_path / "D" / "run.json").exists()


def test_only_the_answer_means_the_whole_response():
    reward = ExactMatchReward(require_only_answer=True)
    assert reward(["7 or 12" + " " * 9_998 + "12", " 12 ", "12"], ["12", "12", "12"]) == [0.0, 1.0, 1.0]


def test_report_keeps_each_runs_evaluation_and_marks_an_edited_config(tmp_path):
    from cegppo_edu.plots import report
    runs = []
    for name, score in (("a", 0.25), ("b", 0.75)):
        out = tmp_path / name
        assert train(out, "--steps", "2")[0] == 0
        (out / "eval.json").write_text(json.dumps({
            "model": str(out), "sampler": "hf", "device": "cpu", "samples": 4, "temperature": 0.6, "top_p": 0.95,
            "max_new_tokens": 16, "benchmarks": {"aime24": {"avg": score}}}))
        runs.append(str(out))
    evals = report.load_evals(runs, None)
    assert sorted(e["benchmarks"]["aime24"]["avg"] for e in evals.values()) == [0.25, 0.75]
    assert list(evals) == list(report.load_runs(runs))  # a run's curves and its row carry one label
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**config, "method": "dapo"}))
    assert report.run_label(runs[1]) == "ce_gppo [config.json edited after the run]"


# ------------------------------------------------------------------------------ 11. refused in one line, before work
@pytest.mark.parametrize("override, message", [
    ("sampler=os:system", "sampler='os:system' is not a sampler plug-in"),
    ("task=nosuchmod:f", "task='nosuchmod:f' cannot be loaded: ModuleNotFoundError"),
    ("reward=cegppo_edu.lm.rewards:nosuch", "reward='cegppo_edu.lm.rewards:nosuch' cannot be loaded"),
])
def test_plug_in_strings_are_checked_before_anything_is_written(tmp_path, capsys, override, message):
    code, err = train(tmp_path / "D", "--steps", "2", "--set", override, capsys=capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "D" / "run.json").exists()


def test_a_saved_config_with_a_field_this_version_lacks_is_named():
    values = {**to_dict(get_preset("tiny-arith")), "flux_capacitor": 1}
    with pytest.raises(ValueError, match="does not know: flux_capacitor"):
        from_dict(values)


def test_an_entropy_target_above_log_v_is_refused_before_the_warm_start(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr("cegppo_edu.lm.trainer.Trainer._warm_start", lambda self: started.append(1))
    code, err = train(tmp_path / "D", "--steps", "2", "--set", "beta_controller=pi", "--set", "entropy_target=50",
                      capsys=capsys)
    assert code == 2 and "entropy_target=50" in err and not started


def test_a_rollout_batch_too_large_for_the_machine_is_refused_before_the_warm_start(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr("cegppo_edu.lm.trainer.Trainer._warm_start", lambda self: started.append(1))
    code, err = train(tmp_path / "D", "--steps", "2", "--set", "prompts_per_step=1000000", "--set",
                      "max_new_tokens=64", capsys=capsys)
    assert code == 2 and "prompts_per_step=1000000 is outside the allowed range on this machine" in err
    assert "sampler_batch_sequences" in err and not started


def test_a_huge_line_in_a_data_file_is_skipped_without_being_tokenised():
    from cegppo_edu.lm.models import build_tiny_model_and_tokenizer
    from cegppo_edu.lm.setup import MAX_CHARS_PER_TOKEN, Prompts
    config = apply_overrides(get_preset("tiny-arith"), {"max_prompt_tokens": 64})
    prompts = Prompts(config, build_tiny_model_and_tokenizer(seed=0, hidden_size=32, num_layers=1, num_heads=2,
                                                            num_kv_heads=1, intermediate_size=64)[1])
    encode, encoded = prompts.encode, []
    prompts.encode = lambda text: encoded.append(len(text)) or encode(text)
    huge = {"question": "1" * (MAX_CHARS_PER_TOKEN * 64 + 1), "answer": "1"}
    kept = prompts.fitting([huge, {"question": "2+2", "answer": "4"}])
    assert [p.question for p in kept] == ["2+2"] and encoded == [3]  # the huge one was never tokenised


def test_report_names_a_metrics_line_whose_step_is_not_a_number(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": "x"}\n')
    assert cegppo(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "metrics.jsonl:1" in capsys.readouterr().err


def test_a_bandit_too_long_for_the_machine_is_refused_before_it_allocates(tmp_path, capsys):
    assert cegppo(["bandit", "--steps", "100000000", "--out", str(tmp_path)]) == 2
    assert "steps=100000000 is outside the allowed range on this machine" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--reward-workers", "-1"], "reward_workers=-1 is outside the allowed range"),
    (["--out", "AFILE"], "is a file, not a folder"),
])
def test_eval_names_bad_settings_before_building_a_model(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr("cegppo_edu.gpu.evaluate.build_hf", lambda *a, **k: pytest.fail("built a model first"))
    (tmp_path / "AFILE").write_text("")
    argv = [str(tmp_path / a) if a == "AFILE" else a for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "e")]
    assert cegppo(["eval", "--smoke", "--bench", "aime24", *out, *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (b"", "holds no record"),
    (b'{"problem": "1+1", "answer": "2"}\n{"problem": broken\n', ":2: not a JSON line"),
    (b"\xff\xfe\x00binary garbage", "is not UTF-8 text"),
])
def test_data_file_errors_name_the_file_and_line(tmp_path, content, message):
    from cegppo_edu.gpu.math_data import load_problems
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_problems(path)
    assert str(path) in str(info.value)


def test_a_full_disk_while_logging_says_what_could_not_be_written(tmp_path):
    err = run_dir.NoSpaceError(str(tmp_path / "metrics.jsonl"), 120, what="a metrics line")
    assert "to write a metrics line (120 bytes)" in str(err) and "checkpoint" not in str(err)


def test_nothing_lost_readme_paragraph_names_each_promise_and_its_test():
    text = open(os.path.join(ROOT, "README.md")).read()
    start = text.index("**Nothing is lost.**")
    paragraph = text[start:text.index("\n\n", start)]
    for promise in ("SIGTERM", "One run per folder", "damaged", "symbolic link", "pickle"):
        assert promise in paragraph, promise
    assert "tests/test_nothing_lost.py" in paragraph
