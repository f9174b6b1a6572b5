"""The custom-reward worker: a spawned process, its time and memory limits, and its errors.

Starting a spawned Python costs ~0.5 s, so most tests share one worker (`worker` below) whose
code holds a function for each way user code can go wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import core.rewards.registry
from core.rewards.base import RewardError
from core.rewards.sandbox import CustomRewardProcess

# Set here, in the test process; the worker must not see it.
PARENT_ONLY_MARKER = "set-by-the-test-process"

USER_CODE = '''
import math
import os
import sys

def _helper(text):
    return len(text)

def not_a_reward(text):
    return 1.0

def lengths(prompts, completions, **kwargs):
    """Minus the length of each completion, in hundreds of characters."""
    return [-_helper(c) / 100 for c in completions]

def uses_column(prompts, completions, answer, **kwargs):
    return [1.0 if c == a else 0.0 for c, a in zip(completions, answer)]

def conversational(prompts, completions, **kwargs):
    return [float(len(c[0]["content"])) for c in completions]

def raises(prompts, completions, **kwargs):
    return [1.0 / (len(c) - len(c)) for c in completions]

def hangs(prompts, completions, **kwargs):
    while True:
        pass

def wrong_length(prompts, completions, **kwargs):
    return [1.0] * (len(completions) + 1)

def nan(prompts, completions, **kwargs):
    return [math.nan for _ in completions]

def a_string(prompts, completions, **kwargs):
    return "1.0"

def a_string_inside(prompts, completions, **kwargs):
    return ["1.0" for _ in completions]

def none_inside(prompts, completions, **kwargs):
    return [None for _ in completions]

def generator(prompts, completions, **kwargs):
    return (0.5 for _ in completions)

def exits(prompts, completions, **kwargs):
    sys.exit(3)

def allocates(prompts, completions, **kwargs):
    block = bytearray(3 * 1024 ** 3)  # 3 GiB, over the 2 GiB default
    return [float(len(block))]

def crashes(prompts, completions, **kwargs):
    os._exit(7)

def identity(prompts, completions, **kwargs):
    parent_test = sys.modules.get("tests.test_sandbox") or sys.modules.get("test_sandbox")
    return [
        float(os.getpid()),
        float(os.getppid()),
        float("PARENT_ONLY_MARKER" in globals() or any(
            getattr(m, "PARENT_ONLY_MARKER", None) is not None for m in list(sys.modules.values()))),
        float(parent_test is not None),
        float(sys.modules["__main__"].__name__ == "__mp_main__"),  # spawn re-ran a main script
        float("torch" in sys.modules),
    ]

def tamper(prompts, completions, **kwargs):
    import core.rewards.registry
    core.rewards.registry.REGISTRY.clear()
    return [float(len(core.rewards.registry.REGISTRY)) for _ in completions]
'''

EXPECTED_NAMES = [
    "lengths", "uses_column", "conversational", "raises", "hangs", "wrong_length", "nan", "a_string",
    "a_string_inside", "none_inside", "generator", "exits", "allocates", "crashes", "identity", "tamper",
]


@pytest.fixture(scope="module")
def worker():
    w = CustomRewardProcess(USER_CODE, timeout_s=1.0)
    yield w
    w.close()


def call(worker, name, completions=("ab", "abcd"), **kwargs):
    return worker.call(name, ["q"] * len(completions), list(completions), kwargs)


# ---------------------------------------------------------------------------
# What runs, and how


def test_discovers_public_trl_style_functions_only(worker):
    assert worker.names == EXPECTED_NAMES  # not _helper, not not_a_reward (no **kwargs), not imports
    assert worker.descriptions["lengths"] == "Minus the length of each completion, in hundreds of characters."


def test_calls_return_values_and_columns_arrive_as_keywords(worker):
    assert call(worker, "lengths") == [-0.02, -0.04]
    assert call(worker, "uses_column", answer=["ab", "xyz"]) == [1.0, 0.0]
    assert call(worker, "conversational", completions=([{"role": "assistant", "content": "abc"}],)) == [3.0]
    assert call(worker, "generator") == [0.5, 0.5]


def test_runs_in_a_separate_process_that_cannot_see_the_parent(worker):
    assert PARENT_ONLY_MARKER  # the marker exists here ...
    pid, ppid, sees_marker, sees_test_module, reran_main, has_torch = call(worker, "identity", completions="abcdef")
    assert int(pid) != os.getpid()
    if sys.platform.startswith("linux"):  # the code runs in the keeper's child; the keeper is ours
        assert int(pid) != worker.pid and int(ppid) == worker.pid
        keeper_parent = int(Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert keeper_parent == os.getpid()  # our grandchild, not a sibling
    else:
        assert int(pid) == worker.pid and int(ppid) == os.getpid()
    assert sees_marker == 0.0  # ... but not there
    assert sees_test_module == 0.0
    assert reran_main == 0.0  # spawn did not re-run the parent's main script
    assert has_torch == 0.0  # the worker stays light


def test_user_code_cannot_change_the_parents_objects(worker):
    before = len(core.rewards.registry.REGISTRY)
    assert call(worker, "tamper") == [0.0, 0.0]  # the worker cleared its own copy ...
    assert len(core.rewards.registry.REGISTRY) == before > 0  # ... not ours


def test_function_wraps_a_custom_reward_with_trls_signature(worker):
    fn = worker.function("uses_column")
    assert fn.__name__ == "uses_column"
    assert fn(prompts=["q", "q"], completions=["ab", "cd"], answer=["ab", "ab"], trainer_state=object()) == [1.0, 0.0]


# ---------------------------------------------------------------------------
# Failures: each a RewardError that says what happened


@pytest.mark.parametrize(
    "name, message",
    [
        ("raises", "custom reward 'raises' raised ZeroDivisionError: float division by zero"),
        ("wrong_length", "reward 'wrong_length' returned 3 values for 2 completions"),
        ("nan", "reward 'nan' returned NaN at index 0"),
        ("a_string", "reward 'a_string' returned a string ('1.0') instead of a list of 2 floats"),
        ("a_string_inside", "reward 'a_string_inside' returned a string ('1.0') at index 0"),
        ("none_inside", "reward 'none_inside' returned None at index 0"),
        ("exits", "custom reward 'exits' raised SystemExit: 3"),
        ("allocates", "custom reward 'allocates' raised MemoryError (the worker may use at most 2048 MiB)"),
    ],
)
def test_bad_user_code_is_a_reward_error_saying_so(worker, name, message):
    pid = worker.pid
    with pytest.raises(RewardError) as info:
        call(worker, name)
    assert message in str(info.value)
    assert info.value.reward_name == name
    assert worker.pid == pid  # the worker survives errors in user code


def test_user_traceback_shows_the_users_line(worker):
    with pytest.raises(RewardError) as info:
        call(worker, "raises")
    tb = info.value.traceback_text
    assert 'File "<custom reward code>"' in tb and "in raises" in tb
    assert "return [1.0 / (len(c) - len(c)) for c in completions]" in tb  # the source line itself
    assert "sandbox.py" not in tb  # the worker's own frames are left out


def test_a_hanging_call_times_out_and_the_worker_restarts(worker):
    old_pid = worker.pid
    t0 = time.perf_counter()
    with pytest.raises(RewardError, match=r"custom reward 'hangs' timed out after 1s") as info:
        call(worker, "hangs")
    assert time.perf_counter() - t0 < 3.0
    assert info.value.reward_name == "hangs"
    assert worker.pid is None  # killed
    assert call(worker, "lengths") == [-0.02, -0.04]  # a fresh worker on the next call
    assert worker.pid not in (None, old_pid)


def test_a_crashed_worker_is_reported_and_restarted(worker):
    with pytest.raises(RewardError, match=r"custom reward 'crashes'.*died with exit code 7"):
        call(worker, "crashes")
    assert call(worker, "lengths") == [-0.02, -0.04]


def test_unknown_function_names_the_known_ones(worker):
    with pytest.raises(RewardError, match="no custom reward 'nope'; the code defines: lengths, uses_column"):
        call(worker, "nope")


def test_kwargs_that_are_not_data_are_left_out(worker):
    assert call(worker, "uses_column", answer=["ab", "x"], trainer_state=object(), log_metric=print) == [1.0, 0.0]


# ---------------------------------------------------------------------------
# Loading, and fixing


def test_syntax_error_then_corrected_code_works():
    broken = "def score(prompts, completions, **kwargs):\n    return [1.0 for c in completions\n"
    with pytest.raises(RewardError) as info:
        CustomRewardProcess(broken, timeout_s=1.0)
    assert "custom reward code failed to load: SyntaxError" in str(info.value)
    assert info.value.reward_name is None
    assert 'File "<custom reward code>", line 2' in info.value.traceback_text

    fixed = broken.replace("completions\n", "completions]\n")
    with CustomRewardProcess(fixed, timeout_s=1.0) as worker:
        assert worker.call("score", ["q"], ["a"], {}) == [1.0]


def test_exception_at_load_time_carries_the_users_traceback():
    code = "import json\nCONFIG = json.loads('{not json')\n\ndef score(prompts, completions, **kwargs):\n    pass\n"
    with pytest.raises(RewardError, match="failed to load: JSONDecodeError") as info:
        CustomRewardProcess(code, timeout_s=1.0)
    assert "CONFIG = json.loads('{not json')" in info.value.traceback_text


def test_code_without_reward_functions_is_refused():
    with pytest.raises(RewardError, match="no reward function found"):
        CustomRewardProcess("def helper(text):\n    return 1\n", timeout_s=1.0)


def test_spawn_does_not_rerun_the_parents_main_script(tmp_path):
    # Run from a script, spawn would normally re-import that script in the worker (as
    # __mp_main__); its top level records whether that happened.
    marker = tmp_path / "main_reran"
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        if __name__ != "__main__":
            Path({str(marker)!r}).write_text(__name__)
        from core.rewards.sandbox import CustomRewardProcess
        if __name__ == "__main__":
            with CustomRewardProcess("def one(prompts, completions, **kwargs):\\n    return [1.0]", timeout_s=5) as w:
                print(w.call("one", ["q"], ["c"], {{}}))
    """))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1.0]"
    assert not marker.exists(), f"the worker re-imported the main script as {marker.read_text()}"


def test_closed_worker_refuses_calls():
    code = "def one(prompts, completions, **kwargs):\n    return [1.0 for _ in completions]"
    worker = CustomRewardProcess(code, timeout_s=1.0)
    pid = worker.pid
    worker.close()
    with pytest.raises(RewardError, match="called after close"):
        worker.call("one", ["q"], ["c"], {})
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone


def test_reward_code_finds_no_secret_in_its_environment(monkeypatch):
    """The worker removes the variables that name a secret (the Hub token, the app's login, an API
    key, a password) before any user code runs; other variables stay. On Linux their values are gone
    from /proc/self/environ too, which shows the environment the process started with, not os.environ
    (the app's own block: test_the_app_hides_its_secrets_from_proc_and_from_reward_code)."""
    for name, value in (("HF_TOKEN", "hf_secret"), ("OPENAI_API_KEY", "sk-secret"), ("AHA_AUTH", "aha:pw-secret"),
                        ("DB_PASS", "db-secret"), ("AHA_HARMLESS", "kept")):
        monkeypatch.setenv(name, value)
    code = ("import os, sys\n"
            "from pathlib import Path\n"
            "SEEN = {k: os.environ.get(k) for k in ('HF_TOKEN', 'OPENAI_API_KEY', 'AHA_AUTH', 'DB_PASS', 'AHA_HARMLESS')}\n"
            "RAW = Path('/proc/self/environ').read_bytes() if sys.platform.startswith('linux') else b''\n"
            "def peek(completions, **kwargs):\n"
            "    return [float(sum(v is not None for v in SEEN.values())), float(SEEN['AHA_HARMLESS'] == 'kept'),\n"
            "            float(any(s in RAW for s in (b'hf_secret', b'sk-secret', b'pw-secret', b'db-secret')))]\n")
    w = CustomRewardProcess(code, timeout_s=5.0)
    try:
        assert w.call("peek", ["q"] * 3, ["a", "b", "c"], {}) == [1.0, 1.0, 0.0]  # only AHA_HARMLESS is left
    finally:
        w.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_the_app_hides_its_secrets_from_proc_and_from_reward_code(tmp_path):
    """app.hide_secrets in a process started with a Hub token, a database password and --auth on
    its command line: its /proc environ and cmdline hold neither, Python still reads the token, a
    child gets the names with empty values, and reward code that reads the app's /proc/<pid>/environ
    and cmdline, and its own sys.argv (spawn copies the app's), finds nothing."""
    repo = Path(__file__).resolve().parents[1]
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent("""
        import json, os, subprocess, sys
        from pathlib import Path
        import app
        done = app.hide_secrets(("alice", "pw-in-argv-123"))
        child = subprocess.run([sys.executable, "-c", "import os; print(repr(os.environ.get('HF_TOKEN')))"],
                               capture_output=True, text=True).stdout.strip()
        from core.rewards.sandbox import CustomRewardProcess
        code = ("import os\\nfrom pathlib import Path\\n"
                "P = Path('/proc/%d' % os.getppid())\\n"
                "import sys\\n"
                "RAW = (P / 'environ').read_bytes() + (P / 'cmdline').read_bytes()\\n"
                "def peek(completions, **kwargs):\\n"
                "    return [float(b'hf_app_secret' in RAW), float(b'pw-in-argv-123' in RAW),\\n"
                "            float(any('pw-in-argv-123' in a for a in sys.argv))]\\n")
        with CustomRewardProcess(code, timeout_s=10) as w:
            seen = w.call("peek", ["q", "q", "q"], ["a", "b", "c"], {})
        print(json.dumps({"done": done, "environ": Path("/proc/self/environ").read_bytes().decode(errors="replace"),
                          "cmdline": Path("/proc/self/cmdline").read_bytes().decode(errors="replace"),
                          "os_environ": os.environ.get("HF_TOKEN"), "argv": sys.argv, "child": child,
                          "reward_saw": seen}))
    """))
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_TOKEN": "hf_app_secret", "DB_PASS": "db-app-secret"}
    out = subprocess.run([sys.executable, str(script), "--auth", "alice:pw-in-argv-123"], capture_output=True,
                         text=True, env=env, timeout=120, cwd=repo)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "hf_app_secret" not in got["environ"] and "db-app-secret" not in got["environ"]
    assert "HF_TOKEN=" in got["environ"] and "PATH=" in got["environ"]  # the names stay, other values too
    assert "pw-in-argv-123" not in got["cmdline"] and "alice:" + "*" * 14 in got["cmdline"]
    assert got["os_environ"] == "hf_app_secret" and "alice:pw-in-argv-123" in got["argv"]
    assert got["child"] == "''"
    assert got["reward_saw"] == [0.0, 0.0, 0.0]
    assert any("HF_TOKEN" in d for d in got["done"]) and any("--auth" in d for d in got["done"])


def test_a_worker_killed_with_sigkill_is_reported_as_such():
    """The kernel's OOM killer sends SIGKILL: the app says so ("-9 ... out of memory?"), also with the
    keeper between it and the worker (which passes the worker's end on; a review found exit code 1)."""
    code = ("import os, signal\n"
            "def killed(prompts, completions, **kwargs):\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    with CustomRewardProcess(code, timeout_s=10) as w:
        with pytest.raises(RewardError, match=r"died with exit code -9 \(killed: out of memory\?\)"):
            w.call("killed", ["q"], ["a"], {})


def test_close_leaves_no_process_of_a_fast_forking_reward_behind(tmp_path):
    """A detached process that forks without end (each parent exits at once) escaped a single pass
    of kills (a review); the keeper now sweeps its tree until it is empty."""
    sid_file = tmp_path / "sid"
    code = ("import os, subprocess, sys, time\n"
            "def forker(prompts, completions, **kwargs):\n"
            "    s = 'import os\\nos.setsid()\\nopen(%r, \"w\").write(str(os.getsid(0)))\\n"
            "while True:\\n    if os.fork():\\n        os._exit(0)\\n'\n"
            f"    subprocess.Popen([sys.executable, '-c', s % {str(sid_file)!r}])\n"
            "    time.sleep(1.0)\n"
            "    return [0.0 for _ in completions]\n")
    w = CustomRewardProcess(code, timeout_s=30)
    try:
        assert w.call("forker", ["q"], ["a"], {}) == [0.0]
    finally:
        w.close()
    sid = int(sid_file.read_text())

    def alive_in_session() -> list[int]:
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(stat.parent.name))
        return out

    deadline = time.time() + 5
    while alive_in_session() and time.time() < deadline:
        time.sleep(0.1)
    assert alive_in_session() == []
