"""The math reward (cegppo_edu.gpu.math_reward): math-verify grading of the text after </think>, +1 / -1, the
per-answer time bound enforced by the parent process, and a clean pool life cycle.

The pool starts once per module (a fixture): worker start-up is the slow part (about 2 s on 2 cores).
"""

import os
import subprocess
import sys
import time

import pytest

from cegppo_edu.gpu.math_reward import (BAD_GOLD, CORRECT, CRASHED, NO_ANSWER, NO_THINK_END, TIMEOUT, WRONG,
                                    MathReward, grade_answer, wrap_gold)

TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def reward():
    with MathReward(timeout_s=TIMEOUT_S, workers=2) as r:
        yield r


def think(answer: str) -> str:
    return "<think>\nLet me work it out. Maybe 7? No.\n</think>\n" + answer


@pytest.mark.parametrize("answer, gold", [
    ("The answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("So $\\boxed{0.5}$.", "\\frac{1}{2}"),
    ("$\\boxed{\\dfrac{1}{2}}$", "1/2"),
    ("$\\boxed{2\\sqrt{2}}$", "\\sqrt{8}"),
    ("$\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt3}{2}"),
    ("$\\boxed{x^2+2x+1}$", "(x+1)^2"),
    ("$\\boxed{204}$", "204"),
    ("$\\boxed{47}$", "047"),  # AIME-style zero padding in the gold answer
    ("$\\boxed{(3, 3)}$", "(3, 3)"),
    ("First $\\boxed{3}$, then on reflection $\\boxed{5}$.", "5"),  # boxed="all": any boxed answer may match
])
def test_equivalent_answers_score_plus_one(reward, answer, gold):
    assert reward([think(answer)], [gold]) == [1.0]
    assert reward.last_outcomes == [CORRECT]


@pytest.mark.parametrize("answer, gold, outcome", [
    ("$\\boxed{205}$", "204", WRONG),
    ("$\\boxed{\\frac{1}{3}}$", "\\frac{1}{2}", WRONG),
    ("$\\boxed{2\\sqrt{3}}$", "\\sqrt{8}", WRONG),
    ("I am not sure.", "204", NO_ANSWER),
    ("$\\boxed{1}$", "\\", BAD_GOLD),  # a gold answer math-verify cannot parse
])
def test_wrong_or_missing_answers_score_minus_one(reward, answer, gold, outcome):
    assert reward([think(answer)], [gold]) == [-1.0]
    assert reward.last_outcomes == [outcome]


def test_only_the_text_after_the_last_think_end_is_graded(reward):
    inside_only = "<think>\nIt is \\boxed{204}.\n</think>\nThe answer is \\boxed{100}."
    truncated = "<think>\nIt is \\boxed{204}, I keep thinking"  # hit the length cap: no </think>
    assert reward([inside_only, truncated], ["204", "204"]) == [-1.0, -1.0]
    assert reward.last_outcomes == [WRONG, NO_THINK_END]
    assert reward.last_stats["no_think_end"] == 1 and reward.last_stats["wrong"] == 1


def test_gold_wrapping():
    assert wrap_gold("\\frac{1}{2}") == "$\\frac{1}{2}$"
    assert wrap_gold(" 12 ") == "$12$"
    assert wrap_gold("$x$") == "$x$" and wrap_gold("\\boxed{3}") == "\\boxed{3}"


def adversarial_answers(marker):
    code = [f"\\boxed{{__import__('os').system('touch {marker}')}}",
            f"$\\boxed{{eval(\"open('{marker}', 'w')\")}}$",
            f"__import__('os').system('touch {marker}')",
            f"$(lambda: open('{marker}', 'w'))()$ \\boxed{{exec('import os')}}"]
    return [
        "\\boxed{" + "9" * 5000 + "}",  # a number with thousands of digits
        "\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}",  # deeply nested braces
        "\\boxed{10^{10^{10}}}",  # an exact power too large to compute
        "\\boxed{9^{9^{9^{9}}}}",
        "x" * 1_000_000,  # a 1 MB string
        "\\boxed{" + "\\frac{1}{" * 500 + "2" + "}" * 500 + "}",
        "\\boxed{\ud800\udfff 3}\udc80",  # lone surrogates: not valid unicode
        "\x00\x01\\boxed{\x00}",
        *code,
    ]


def test_adversarial_outputs_are_bounded_and_never_execute(reward, tmp_path):
    marker = tmp_path / "executed"
    answers = adversarial_answers(marker)
    start = time.monotonic()
    rewards = reward([think(a) for a in answers], ["3"] * len(answers))
    elapsed = time.monotonic() - start
    assert rewards == [-1.0] * len(answers)
    assert not marker.exists()
    # Bound: every answer either finishes or is cut at TIMEOUT_S, two at a time, plus pool restarts.
    restarts = reward.last_stats["pool_restarts"]
    assert elapsed < TIMEOUT_S * len(answers) / reward.workers + 15 * restarts + 10


def _grade_or_misbehave(answer, gold, inner_timeout_s):
    """A stand-in grader for the tests below: hangs or dies on request, grades normally otherwise."""
    if "HANG" in answer:
        time.sleep(600)
    if "DIE" in answer:
        time.sleep(0.3 if "LATE" in answer else 0.0)
        os._exit(3)
    if "SLOW" in answer:
        time.sleep(1.0)
    return grade_answer(answer, gold, inner_timeout_s)


def _worker_pids(reward):
    return [p.pid for p in reward._pool._processes.values()]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(pid, 0): look at its state
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow  # processes killed and restarted: seconds each (make test runs it)
def test_a_hung_grader_is_killed_and_scores_minus_one():
    with MathReward(timeout_s=1.5, workers=2, grade_fn=_grade_or_misbehave) as reward:
        old_pids = _worker_pids(reward)
        responses = [think("\\boxed{4}"), think("HANG"), think("\\boxed{5}"), think("HANG \\boxed{4}"),
                     think("\\boxed{4}")]
        start = time.monotonic()
        rewards = reward(responses, ["4"] * 5)
        elapsed = time.monotonic() - start
        assert rewards == [1.0, -1.0, -1.0, -1.0, 1.0]
        assert reward.last_outcomes == [CORRECT, TIMEOUT, WRONG, TIMEOUT, CORRECT]
        assert reward.last_stats["pool_restarts"] >= 1
        assert elapsed < 30
        assert not any(_alive(pid) for pid in old_pids)  # the hung workers are gone, not leaked
        assert reward([think("\\boxed{4}")], ["4"]) == [1.0]  # the replacement pool works


@pytest.mark.slow  # processes killed and restarted: seconds each (make test runs it)
def test_a_dying_worker_costs_one_retry_then_minus_one():
    with MathReward(timeout_s=5, workers=2, grade_fn=_grade_or_misbehave) as reward:
        rewards = reward([think("DIE"), think("\\boxed{4}")], ["4", "4"])
        assert rewards == [-1.0, 1.0]
        assert reward.last_outcomes == [CRASHED, CORRECT]


@pytest.mark.slow  # processes killed and restarted: seconds each (make test runs it)
def test_an_answer_in_flight_when_another_kills_the_pool_is_not_charged_for_it():
    """The slow right answer is still being graded when its neighbour's worker dies (twice, on the retry too):
    it must be graded again on its own and score +1, not be counted as crashed."""
    with MathReward(timeout_s=10, workers=2, grade_fn=_grade_or_misbehave) as reward:
        rewards = reward([think("DIE LATE"), think("SLOW \\boxed{4}")], ["4", "4"])
        assert reward.last_outcomes == [CRASHED, CORRECT]
        assert rewards == [-1.0, 1.0]


@pytest.mark.slow  # processes killed and restarted: seconds each (make test runs it)
def test_a_worker_killed_while_idle_is_replaced():
    import signal
    with MathReward(timeout_s=5, workers=2) as reward:
        os.kill(_worker_pids(reward)[0], signal.SIGKILL)
        time.sleep(0.5)  # let the pool notice
        assert reward([think("\\boxed{4}"), think("\\boxed{3}")], ["4", "4"]) == [1.0, -1.0]
        assert reward.last_stats["pool_restarts"] == 1


def test_pool_shuts_down_cleanly():
    reward = MathReward(timeout_s=5, workers=2)
    pids = _worker_pids(reward)
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    assert reward([think("\\boxed{1}")], ["1"]) == [1.0]
    reward.close()
    reward.close()  # idempotent
    assert not any(_alive(pid) for pid in pids)


def test_inline_mode_grades_on_the_main_thread():
    reward = MathReward(workers=0)
    assert reward([think("\\boxed{\\frac{2}{4}}"), "no think end"], ["\\frac{1}{2}", "1"]) == [1.0, -1.0]


@pytest.mark.parametrize("kwargs, message", [
    ({"timeout_s": 0}, "timeout_s=0 is outside"),
    ({"workers": -1}, "workers=-1 is outside"),
    ({"max_answer_chars": 0}, "max_answer_chars=0 is outside"),
    ({"inner_timeout_s": 0}, "inner_timeout_s=0 is outside"),
    ({"start_method": "fork"}, "start_method='fork' is not allowed"),
])
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MathReward(**{"workers": 0, **kwargs})


def test_lengths_must_match(reward):
    with pytest.raises(ValueError, match=r"len\(responses\)=2 differs from len\(answers\)=1"):
        reward(["a", "b"], ["1"])


def test_factory_takes_the_reward_values_from_the_config():
    from cegppo_edu.gpu.math_reward import make_math_reward
    from cegppo_edu.lm.config import TrainConfig
    config = TrainConfig(reward_correct=1.0, reward_wrong=-1.0, reward_workers=0)
    reward = make_math_reward(config)
    assert (reward.workers, reward.timeout_s) == (0, 10.0)
    assert reward([think("\\boxed{4}"), think("\\boxed{5}")], ["4", "4"]) == [1.0, -1.0]


# ------------------------------------------------------------------------------ the authors' grading protocol
# What the CE-GPPO authors' reward does (their verl fork, Kwai-Klear/CE-GPPO at 10558fe,
# verl/utils/reward_score/math_dapo.py, compute_score(is_use_math_verify=True)), read from their code: the whole
# response is parsed with math-verify's default extraction (LaTeX and expressions); no </think> is required; fewer
# than two parse results score wrong; else a string match, then verify against \boxed{gold}.
AUTHORS_CASES = [  # (response, gold, theirs, ours under the model-card protocol)
    ("Let me think. So the answer is \\boxed{42}", "42", CORRECT, NO_THINK_END),  # reasoning never closed
    ("<think>hmm</think> The answer is 42.", "42", CORRECT, NO_ANSWER),  # a plain number, no box
    ("<think>x</think> \\boxed{41}", "42", WRONG, WRONG),
    ("<think>x</think> so \\boxed{0.5}", "\\frac{1}{2}", CORRECT, CORRECT),
    ("no answer here", "7", NO_ANSWER, NO_THINK_END),
]


@pytest.mark.parametrize("response, gold, theirs, ours", AUTHORS_CASES)
def test_the_authors_protocol_grades_as_their_code_does(response, gold, theirs, ours):
    with MathReward(workers=0, protocol="authors") as authors, MathReward(workers=0) as model_card:
        assert authors.grade([response], [gold]) == [theirs]
        assert model_card.grade([response], [gold]) == [ours]


def test_an_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="protocol='theirs'.*model-card, authors"):
        MathReward(workers=0, protocol="theirs")


@pytest.mark.slow  # a forkserver pool whose __main__ maps 6 GiB: ~10 s
def test_workers_grade_when_main_maps_more_than_the_memory_cap(tmp_path):
    """Under the `cegppo` command, forkserver workers import __main__, which imports torch; the CUDA build maps
    several GB. An absolute 4 GiB cap then breaks the pool at start-up (reproduced here by mapping 6 GiB of
    untouched anonymous memory at import); the cap is relative to what the worker has mapped."""
    script = tmp_path / "main_maps_6gib.py"
    script.write_text(
        "import mmap\n"
        "BIG = mmap.mmap(-1, 6 << 30)  # mapped, never touched: VmSize grows as with CUDA libraries\n"
        "if __name__ == '__main__':\n"
        "    from cegppo_edu.gpu.math_reward import MathReward, _address_space_limit\n"
        "    with MathReward(workers=2, start_method='forkserver', memory_limit_mb=4096) as reward:\n"
        "        print(reward(['<think>x</think> \\\\boxed{4}', '<think>x</think> \\\\boxed{5}'], ['4', '4']))\n"
        "        limit = reward._pool.submit(_address_space_limit).result()\n"
        "        print('limit_gib', limit / 2**30)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "[1.0, -1.0]"
    assert float(lines[1].split()[1]) > 6 + 4  # the 6 GiB the worker inherited, plus the 4 GiB to grade in


def test_the_cap_is_what_is_mapped_plus_the_headroom():
    from cegppo_edu.gpu.math_reward import address_space_bytes, address_space_cap
    assert address_space_cap(4096, 10 * 2**30) == 14 * 2**30
    assert address_space_cap(4096, None) is None
    mapped = address_space_bytes()
    assert mapped is None or mapped > 2**20  # this process maps at least a MB (None off Linux)


@pytest.mark.slow  # a pool started, its owner killed: ~10 s
def test_workers_end_when_their_owner_is_killed(tmp_path):
    """SIGKILL runs no clean-up: the workers notice their owner is gone and end within seconds."""
    import signal
    script = tmp_path / "owner.py"
    script.write_text(
        "import sys, time\n"
        "from cegppo_edu.gpu.math_reward import MathReward\n"
        "if __name__ == '__main__':\n"
        "    reward = MathReward(workers=2)\n"
        "    print(' '.join(str(p.pid) for p in reward._pool._processes.values()), flush=True)\n"
        "    time.sleep(600)\n")
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
    workers = [int(p) for p in owner.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)
