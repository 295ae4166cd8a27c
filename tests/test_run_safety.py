"""Nothing lost, every failure named: one run per folder, a resume that cannot change a run, Ctrl-C and a full
disk that stop cleanly, and bad paths and values refused in one line before any work."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

from cegppo_edu.lm import checkpoint as ckpt
from cegppo_edu.lm import models, run_dir
from cegppo_edu.lm.config import apply_overrides
from cegppo_edu.cli import main as cegppo
from cegppo_edu.lm.trainer import Trainer
from cegppo_edu.lm.run_dir import read_metrics, strip_timings
from test_lm_trainer import FAST, fast_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
# FAST's settings without its steps (a --set would win over --steps): each test gives --steps itself.
ARGS = ["--preset", "tiny-arith", "--no-progress"] + [f"--set={k}={v}" for k, v in FAST.items() if k != "steps"]


def train(out, *extra, capsys=None):
    code = cegppo(["train", "--out", str(out), *ARGS, *extra])  # (no --steps: the preset's 150, for failing runs)
    err = capsys.readouterr().err if capsys else ""
    return code, err


# ------------------------------------------------------------------------------ one run per folder
def test_a_fresh_run_into_a_folder_holding_a_run_is_refused(tmp_path, capsys):
    out = tmp_path / "D"
    assert train(out, "--steps", "4")[0] == 0
    before = (out / "metrics.jsonl").read_bytes()
    code, err = train(out, "--steps", "2", capsys=capsys)
    assert code == 2
    assert str(out) in err and "--resume" in err and "--out" in err and "--overwrite" in err
    assert (out / "metrics.jsonl").read_bytes() == before  # the old run is untouched
    assert [os.path.basename(p) for p in ckpt.complete_checkpoints(str(out))] == ["step_000002", "step_000004"]


def test_overwrite_replaces_the_old_run_entirely(tmp_path):
    out = tmp_path / "D"
    assert train(out, "--steps", "4")[0] == 0
    old_id = run_dir.read_run_identity(str(out))["run_id"]
    assert train(out, "--steps", "2", "--overwrite")[0] == 0
    assert [m["step"] for m in read_metrics(str(out))] == [0, 1, 2]
    assert [os.path.basename(p) for p in ckpt.complete_checkpoints(str(out))] == ["step_000002"]
    assert run_dir.read_run_identity(str(out))["run_id"] != old_id


def test_rotation_orders_by_step_and_keeps_other_runs_checkpoints(tmp_path):
    config = fast_config(steps=3, checkpoint_every=1, keep_checkpoints=2)
    trainer = Trainer(config, str(tmp_path), progress=False)
    root = ckpt.checkpoint_root(str(tmp_path))
    os.makedirs(os.path.join(root, "step_1000000"))  # another run's checkpoint, sorting first by name
    with open(os.path.join(root, "step_1000000", ckpt.COMPLETE), "w") as f:
        f.write("1000000 someotherrun")
    trainer.train()
    ours = ckpt.complete_checkpoints(str(tmp_path), trainer.run_id)
    assert [ckpt.checkpoint_step(p) for p in ours] == [2, 3]  # the newest two of this run, by step
    assert os.path.isdir(os.path.join(root, "step_1000000"))  # not this run's: never deleted
    assert ckpt.checkpoint_step(ckpt.complete_checkpoints(str(tmp_path))[-1]) == 1000000  # int order, not text


def test_resume_refuses_a_metrics_log_shorter_than_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "D"
    assert train(out, "--steps", "2")[0] == 0
    (out / "metrics.jsonl").write_text('{"step": 0}\n')  # replaced behind the run's back
    code, err = train(out, "--steps", "4", "--resume", capsys=capsys)
    assert code == 2 and "metrics.jsonl" in err and "replaced or cut" in err
    assert b"\x00" not in (out / "metrics.jsonl").read_bytes()


# ------------------------------------------------------------------------------ a resume cannot change a run
@pytest.mark.parametrize("extra, named", [(["--method", "grpo"], "method='grpo'"),
                                          (["--set", "lr=0.01"], "lr=0.01"),
                                          (["--preset", "r1-distill-1.5b-1gpu"], "--preset")])
def test_resume_refuses_settings_that_differ_from_the_run(tmp_path, capsys, extra, named):
    out = tmp_path / "D"
    assert train(out, "--steps", "2")[0] == 0
    config_before = (out / "config.json").read_text()
    code, err = train(out, "--resume", *extra, capsys=capsys)
    assert code == 2 and named in err and "cannot resume" in err
    assert (out / "config.json").read_text() == config_before
    assert len(read_metrics(str(out))) == 3


def test_resume_may_extend_steps_but_never_shrink_the_record(tmp_path, capsys):
    out = tmp_path / "D"
    assert train(out, "--steps", "4")[0] == 0
    code, err = train(out, "--resume", "--steps", "2", capsys=capsys)
    assert code == 2 and "--steps 2 is below the run's steps=4" in err
    assert json.loads((out / "config.json").read_text())["steps"] == 4
    assert train(out, "--resume", "--steps", "6")[0] == 0
    assert json.loads((out / "config.json").read_text())["steps"] == 6
    assert [m["step"] for m in read_metrics(str(out))] == list(range(7))


# ------------------------------------------------------------------------------ Ctrl-C
@pytest.mark.slow  # processes killed and restarted: seconds each (make test runs it)
def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "D"
    code = "import sys; from cegppo_edu.cli import main; sys.exit(main(['train', *sys.argv[1:]]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    args = ["--out", str(out), *ARGS, "--steps", "30", "--set", "checkpoint_every=0"]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a few steps are logged, then press Ctrl-C
        if (out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err and "continue with: cegppo train" in err
    logged = read_metrics(str(out))
    stopped = logged[-1]["step"]
    assert 2 <= stopped < 30
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(str(out))) == stopped  # nothing since it is lost
    assert cegppo(["train", "--out", str(out), *ARGS, "--steps", "30", "--set", "checkpoint_every=0", "--resume"]) == 0
    straight = tmp_path / "straight"
    assert cegppo(["train", "--out", str(straight), *ARGS, "--steps", "30", "--set", "checkpoint_every=0"]) == 0
    assert strip_timings(read_metrics(str(out))) == strip_timings(read_metrics(str(straight)))


# ------------------------------------------------------------------------------ a full disk
def _try_tmpfs(path, size, options=""):
    """Mount a tmpfs of ``size`` at ``path``; False where this machine does not allow it (not root, no mount)."""
    os.makedirs(path, exist_ok=True)
    opts = f"size={size}" + (f",{options}" if options else "")
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs, smaller than one checkpoint of the tiny preset; None where it cannot be mounted."""
    path = tmp_path / "small"
    mounted = _try_tmpfs(path, "1m")
    yield path if mounted else None
    if mounted:
        subprocess.run(["umount", str(path)], check=False)


def test_a_disk_too_small_for_one_checkpoint_is_named_before_the_warm_start(tmp_path, small_disk, capsys,
                                                                           monkeypatch):
    if small_disk is None:  # no tmpfs here: the same check against a reported free space of 1 MB
        small_disk = tmp_path / "small"
        real = run_dir.shutil.disk_usage
        monkeypatch.setattr(run_dir.shutil, "disk_usage", lambda p: real(p)._replace(free=2**20))
    started = []
    monkeypatch.setattr("cegppo_edu.lm.trainer.Trainer._warm_start", lambda self: started.append(1))
    code = cegppo(["train", "--out", str(small_disk / "run"), "--preset", "tiny-arith", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and f"no space left on {small_disk / 'run'}" in err and "a checkpoint needs about" in err
    assert " MB" in err and not started


def test_at_most_keep_checkpoints_are_on_disk_even_while_one_is_written(tmp_path, monkeypatch):
    """A 1.5B checkpoint is 21 GB: writing the new one before deleting the oldest would need keep + 1 of them."""
    out, seen = tmp_path / "D", []
    real_save = models.save_model_and_tokenizer

    def counting(model, tokenizer, path):
        seen.append(len(ckpt.complete_checkpoints(str(out))))  # complete ones on disk while this one is written
        real_save(model, tokenizer, path)
    monkeypatch.setattr(models, "save_model_and_tokenizer", counting)
    trainer = Trainer(fast_config(steps=4, checkpoint_every=1, keep_checkpoints=2), str(out), progress=False)
    trainer.train()
    assert seen == [0, 1, 1, 1]  # never 2 + the one being written
    assert [ckpt.checkpoint_step(p) for p in ckpt.complete_checkpoints(str(out))] == [3, 4]
    assert ckpt.checkpoints_at_peak(2) == 2 and ckpt.checkpoints_at_peak(1) == 2 and ckpt.checkpoints_at_peak(3) == 3


def test_room_for_the_runs_peak_of_checkpoints_is_checked_before_any_work(tmp_path, monkeypatch, capsys):
    """Room for one checkpoint is not enough for a run that keeps two: refused at the start, not at step 20."""
    model, _ = models.build_tiny_model_and_tokenizer(seed=0, hidden_size=FAST["tiny_hidden_size"],
                                                     num_layers=FAST["tiny_layers"], num_heads=FAST["tiny_heads"],
                                                     num_kv_heads=FAST["tiny_kv_heads"],
                                                     intermediate_size=FAST["tiny_intermediate_size"])
    one = run_dir.checkpoint_bytes(model)
    real = run_dir.shutil.disk_usage
    monkeypatch.setattr(run_dir.shutil, "disk_usage", lambda p: real(p)._replace(free=int(1.5 * one)))
    started = []
    monkeypatch.setattr("cegppo_edu.lm.trainer.Trainer._warm_start", lambda self: started.append(1))
    code, err = train(tmp_path / "run", "--steps", "4", "--set", "keep_checkpoints=2", capsys=capsys)
    assert code == 1 and "this run will hold 2 more at once" in err and not started
    assert ckpt.room_needed(str(tmp_path / "run"), None, 2, one) == (2 * one, 2)


def test_a_checkpoint_write_that_fills_the_disk_keeps_the_last_complete_one(tmp_path, monkeypatch, capsys):
    out = tmp_path / "D"
    real_save = models.save_model_and_tokenizer
    calls = []

    def fills_the_disk(model, tokenizer, path):
        calls.append(path)
        real_save(model, tokenizer, path)  # the files are written, then the disk is full
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(models, "save_model_and_tokenizer", fills_the_disk)
    code, err = train(out, "--steps", "4", capsys=capsys)
    assert code == 1 and "no space left on" in err and "a checkpoint needs about" in err
    assert "step_000002" in err  # the one it keeps
    root = ckpt.checkpoint_root(str(out))
    assert not [d for d in os.listdir(root) if d.startswith(".tmp-")]
    assert [os.path.basename(p) for p in ckpt.complete_checkpoints(str(out))] == ["step_000002"]
    assert [m["step"] for m in read_metrics(str(out))] == [0, 1, 2, 3, 4]
    monkeypatch.setattr(models, "save_model_and_tokenizer", real_save)
    assert train(out, "--steps", "4", "--resume")[0] == 0  # and the run goes on from there
    assert [m["step"] for m in read_metrics(str(out))] == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------ failures named before any work
def _no_model_building(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("built a model before checking the output folder")
    monkeypatch.setattr("cegppo_edu.lm.setup.build_tiny_model_and_tokenizer", refuse)


def test_out_pointing_at_a_file_is_named_before_any_work(tmp_path, capsys, monkeypatch):
    _no_model_building(monkeypatch)
    target = tmp_path / "afile"
    target.write_text("x")
    code, err = train(target, capsys=capsys)
    assert code == 2 and "is a file, not a folder" in err and str(target) in err
    assert len(err.strip().splitlines()) == 1


def test_out_on_a_read_only_disk_is_named_before_any_work(tmp_path, capsys, monkeypatch):
    _no_model_building(monkeypatch)
    ro = tmp_path / "ro"
    mounted = _try_tmpfs(ro, "1m", "ro")
    try:
        if not mounted:  # no tmpfs here: the same error as the kernel gives, raised by the write probe
            def read_only(*a, **k):
                raise OSError(errno.EROFS, "Read-only file system")
            monkeypatch.setattr(run_dir.tempfile, "mkstemp", read_only)
            ro.mkdir(exist_ok=True)
        code, err = train(ro / "run" if mounted else ro, capsys=capsys)
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=False)
    assert code == 2 and "cannot write to the output folder" in err
    assert ("Read-only file system" in err) and len(err.strip().splitlines()) == 1


def test_an_empty_set_value_is_refused(capsys, tmp_path):
    code, err = train(tmp_path / "r", "--set", "beta1=", capsys=capsys)
    assert code == 2 and "beta1= has no value" in err
    with pytest.raises(ValueError, match="lr= has no value"):
        apply_overrides(fast_config(), ["lr="])


@pytest.mark.parametrize("field, suggestion", [("lerning_rate", "lr"), ("bata1", "beta1"),
                                               ("learning_rate", "lr")])
def test_an_unknown_field_gets_a_suggestion(field, suggestion):
    with pytest.raises(ValueError, match=f"did you mean {suggestion}"):
        apply_overrides(fast_config(), [f"{field}=1"])


def test_an_unknown_field_without_a_close_name_lists_the_fields():
    with pytest.raises(ValueError, match="the fields are: seed, data_seed, steps"):
        apply_overrides(fast_config(), ["zzzz=1"])


# ------------------------------------------------------------------------------ reading what a run wrote
def test_report_names_the_file_and_line_of_a_garbage_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\nnot json at all\n{"step": 1}\n')
    with pytest.raises(ValueError, match=rf"{path}:2: not a JSON line"):
        read_metrics(str(path))


def test_a_cut_off_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "loss": -0.0')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [m["step"] for m in read_metrics(str(path))] == [0, 1]
    assert any(f"{path}:3" in str(w.message) and "cut off" in str(w.message) for w in caught)


def test_cli_report_on_a_garbage_log_is_one_line(tmp_path, capsys):
    from cegppo_edu.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1, "loss": "unterminated\n{"step": 2}\n')
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl:2" in err and len(err.strip().splitlines()) == 1


def test_eval_names_a_missing_model_path(tmp_path, capsys):
    from cegppo_edu.cli import main

    assert main(["eval", "--model", "/no/such/path", "--out", str(tmp_path / "e")]) == 2
    assert "'/no/such/path' does not exist" in capsys.readouterr().err
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    assert main(["eval", "--model", str(empty), "--out", str(tmp_path / "e2")]) == 2
    err = capsys.readouterr().err
    assert "holds no model" in err and "config.json" in err and "sentencepiece" not in err


def test_keep_run_copies_the_kept_keys_whole_and_write_summary_keeps_the_regeneration_times(tmp_path):
    """What the regeneration scripts of notebooks/data/ commit: a run's metrics with only the kept keys and its
    config, as a folder that appears whole; a summary that keeps the times of earlier regenerations."""
    from cegppo_edu.lm.run_dir import keep_run, write_summary

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "metrics.jsonl").write_text('{"step": 1, "time/step": 0.5, "loss": 0.1}\n{"step": 2, "loss": 0.2}\n')
    (scratch / "config.json").write_text('{"seed": 3}')
    dest = tmp_path / "kept" / "run"
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "run.partial").mkdir()  # left by an interrupted copy: replaced, never kept
    keep_run(str(scratch), str(dest), lambda key: not key.startswith("time/"))
    assert (dest / "metrics.jsonl").read_text() == '{"step": 1, "loss": 0.1}\n{"step": 2, "loss": 0.2}\n'
    assert (dest / "config.json").read_text() == '{"seed": 3}' and not (tmp_path / "kept" / "run.partial").exists()
    write_summary(str(tmp_path), ["a", "b"], "regenerated 2 runs in 1 min")
    text = write_summary(str(tmp_path), ["c"], "regenerated 1 run in 1 min")
    assert text == "c\nregenerated 2 runs in 1 min\nregenerated 1 run in 1 min\n"
    assert write_summary(str(tmp_path), ["d"]) == "d\nregenerated 2 runs in 1 min\nregenerated 1 run in 1 min\n"
