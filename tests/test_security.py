"""Issue 19, "safe to put on the internet, and nothing lost": one test per case of the issue.

    case 1  an open host without --auth still asks for a login      test_case1_...
    case 2  nothing of the inputs (the Hub token) kept by the browser test_case2_...
    case 3  a second upload under the same name keeps the first       test_case3_...
    case 5  a checkpoint's trainer state cannot run code              test_case5_...
    case 6  path-taking endpoints stay inside the served folders      test_case6_...
    case 7  a run whose process died is `interrupted`, Resume offers it test_case7_...
    case 8  damaged newest checkpoint, edited lora_r / learning rate   test_case8_...
    case 9  the reward worker's processes, memory and output          test_case9_...
    case 10 login lock-out, repeated --set, CLI errors as messages    test_case10_...

(Case 4, the column mapping, is tested with the Data tab's work in tests/test_data.py.)
Everything runs on the CPU with the tiny offline model; the app is driven over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import gradio_client  # gradio's own client, installed with gradio (a dependency)
import pytest
import torch

from core.config import Config, DataConfig, ModelConfig
from core.app.messages import ManagerError
from core.app.manager import RunManager

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: dict | None = None) -> tuple[int, str]:
    """(status, body) of a GET, or of a form POST when `data` is given."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def manager_for(tiny_model_dir, runs: Path, **kw) -> RunManager:
    return RunManager(runs, ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=8, lora_alpha=16),
                      device="cpu", **kw)


def launch(manager: RunManager, **kw):
    from ui.studio import build_app, launch_app

    demo = build_app(manager)
    port = free_port()
    launch_app(demo, manager, port=port, prevent_thread_lock=True, quiet=True, **kw)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    """The app in this process, without a login (loopback), over its own runs folder."""
    manager = manager_for(tiny_model_dir, tmp_path_factory.mktemp("sec-runs"))
    demo, url = launch(manager)
    yield manager, url
    demo.close()
    manager.close()


def dead(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (in a container, pid 1 may not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(predicate, timeout: float, every: float = 0.1):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


# ---------------------------------------------------------------------------
# case 1


def test_case1_open_host_without_auth_refuses_anonymous_clients(tiny_model_dir, tmp_path):
    """The real app.py on 0.0.0.0 without --auth (the Dockerfile without AHA_AUTH): reached
    through 127.0.0.1, an anonymous client is refused; the printed password lets one in."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    env.pop("AHA_AUTH", None)
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--host", "0.0.0.0", "--port", str(port), "--no-preload",
             "--model", str(tiny_model_dir), "--runs-dir", str(tmp_path / "runs")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        def up() -> bool:
            try:
                return proc.poll() is not None or http(url)[0] == 200
            except urllib.error.URLError:  # not listening yet
                return False

        assert wait_for(up, 180, 0.5), log.read_text()[-3000:]
        assert proc.poll() is None, log.read_text()[-3000:]
        from gradio_client.exceptions import AuthenticationError

        with pytest.raises(AuthenticationError):
            gradio_client.Client(url, verbose=False)
        assert http(url + "config")[0] == 401  # the page's config (and every API route) needs the login
        assert http(url + "openapi.json")[0] == 401  # FastAPI's list of routes too
        match = re.search(r"user 'aha', password '([^']+)'", log.read_text())
        assert match, log.read_text()[-2000:]
        client = gradio_client.Client(url, auth=("aha", match.group(1)), verbose=False)
        assert client.predict(api_name="/status")[2]["state"] == "idle"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------------------
# case 2


def test_case2_browser_keeps_no_run_history_of_inputs(app):
    """Gradio's run history kept every input (the Hub token typed into Export too) in the
    browser's localStorage and showed it, under raw i18n keys, on /gradio_api/runs: it is off."""
    manager, url = app
    config = json.loads(http(url + "config")[1])
    assert config["run_history"] is False  # the page records nothing (and clears what it had)
    assert "runs" not in config.get("footer_links", [])
    assert http(url + "gradio_api/runs")[0] == 404  # the page of raw i18n keys and old inputs is gone
    client = gradio_client.Client(url, verbose=False)
    message, token_box = client.predict(path="", repo_id="me/x", hf_token="hf_sEcReT123", use_merged=False,
                                        is_private=True, api_name="/push_to_hub")
    assert "hf_sEcReT123" not in message and token_box == "" and "pick a checkpoint" in message


# ---------------------------------------------------------------------------
# case 3


def test_case3_second_upload_with_the_same_name_keeps_the_first(tiny_model_dir, tmp_path):
    from core.data import load_task_data

    manager = manager_for(tiny_model_dir, tmp_path / "runs")
    try:
        first, second = tmp_path / "a" / "data.csv", tmp_path / "b" / "data.csv"
        for path, answer in ((first, "9.9"), (second, "1.0")):
            path.parent.mkdir()
            path.write_text(f"prompt,answer\n\"Which is bigger, 9.11 or 9.9?\",{answer}\n")
        p1 = manager.store_upload(str(first))
        p2 = manager.store_upload(str(second))  # same name, other content
        assert p1 != p2 and Path(p1).parent == Path(p2).parent == manager.runs_dir / "_uploads"
        assert Path(p1).read_text() == first.read_text() and Path(p2).read_text() == second.read_text()
        # an earlier run's config points to p1: it still trains on the first file's answer
        assert load_task_data(DataConfig(source=p1, eval_size=0)).train[0]["answer"] == "9.9"
        assert manager.store_upload(str(first)) == p1  # the same bytes again: one copy
    finally:
        manager.close()


# ---------------------------------------------------------------------------
# case 4


def test_case4_one_column_is_never_both_question_and_answer(tmp_path):
    from core.data import DataError, guess_columns, load_task_data

    # the old Data-tab guess fell back to the first column for both roles
    assert guess_columns(["text", "value"]) == ("text", "value")
    assert guess_columns(["id", "q", "a"]) == ("q", "a")  # an id column is not a question
    assert guess_columns(["Question", "Answer"]) == ("Question", "Answer")
    assert guess_columns(["only"]) == ("only", None)
    path = tmp_path / "data.csv"
    path.write_text("text,value\nWhich is bigger?,9.9\n")
    with pytest.raises(DataError, match="both column 'text'"):
        load_task_data(DataConfig(source=str(path), prompt_column="text", answer_column="text", eval_size=0))
    rows = load_task_data(DataConfig(source=str(path), prompt_column="text", answer_column="value", eval_size=0))
    assert rows.train[0]["answer"] == "9.9"


# ---------------------------------------------------------------------------
# case 5


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # what a hostile trainer_state.pt holds: code that runs when unpickled
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_case5_trainer_state_from_someone_else_cannot_run_code(tiny_model_dir, tmp_path):
    from test_trainer import make_trainer, tiny_config

    small = dict(num_generations=4, prompts_per_step=2, micro_batch_size=8, max_steps=1)
    trainer = make_trainer(tiny_model_dir, tiny_config(tmp_path, **small))
    assert trainer.train() == "finished"
    state_file = trainer.run.latest_checkpoint() / "trainer_state.pt"
    state = torch.load(state_file, weights_only=False)  # our own file: trusted here
    marker = tmp_path / "payload-ran"
    state["scheduler"]["evil"] = _Payload(marker)
    torch.save(state, state_file)

    resumed = make_trainer(tiny_model_dir, tiny_config(tmp_path, **small), run_dir=trainer.run)
    with pytest.raises(Exception) as refused:
        resumed.resume()
    assert not marker.exists()  # the payload never ran
    assert "could run code" in str(refused.value) and "trainer_state.pt" in str(refused.value)


# ---------------------------------------------------------------------------
# case 6


def test_case6_path_taking_endpoints_stay_inside_the_served_folders(app, tmp_path):
    manager, url = app
    client = gradio_client.Client(url, verbose=False)
    # a data file, and a run folder with a "checkpoint", outside the runs folder
    outside = tmp_path / "outside"
    (outside / "data").mkdir(parents=True)
    (outside / "data" / "d.csv").write_text("prompt,answer\n\"Which is bigger, 9.11 or 9.9?\",9.9\n")
    ckpt = outside / "run" / "checkpoints" / "step-000001"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"x")
    (outside / "run" / "config.yaml").write_text("secret: yes\n")

    # 1) /preview_data reads only uploads, --data-dir folders, built-in tasks and hub ids
    started = time.time()
    for source in (str(outside / "data" / "d.csv"), "/usr", str(manager.runs_dir / ".." / "outside")):
        _, info = client.predict(data_source=source, api_name="/preview_data")
        assert info.startswith("⚠️") and "outside the folders this app may read data from" in info, info
    assert time.time() - started < 30  # refused at once, not after walking /usr
    stored = manager.store_upload(str(outside / "data" / "d.csv"))
    table, info = client.predict(data_source=stored, api_name="/preview_data")
    assert not info.startswith("⚠️") and table["data"][0][0].startswith("Which is bigger")
    # 2) /download_config serves a run's config.yaml from the runs folder only
    for path in (str(ckpt), str(manager.runs_dir / ".." / "outside" / "run" / "checkpoints" / "step-000001")):
        _, note = client.predict(path=path, api_name="/download_config")
        assert note.startswith("⚠️") and "not inside the runs folder" in note, note
    # 3) /export_zip writes nothing next to a folder outside the runs folder
    _, note = client.predict(path=str(ckpt), api_name="/export_zip")
    assert "not inside the runs folder" in note and not (outside / "run" / "exports").exists()
    # 4) an operator's --data-dir is a data root
    with_root = manager_for(Path(manager.default_model.name_or_path), tmp_path / "runs2", data_dirs=[outside / "data"])
    try:
        assert with_root.preview_data(DataConfig(source=str(outside / "data" / "d.csv"), eval_size=0))["train"] == 1
        with pytest.raises(ManagerError, match="outside the folders"):
            with_root.preview_data(DataConfig(source=str(outside / "run" / "config.yaml")))
    finally:
        with_root.close()


# ---------------------------------------------------------------------------
# case 7


def _write_status_from_a_process_that_dies(run_path: Path, **status) -> None:
    """A process writes `running` and dies without a last word, as after kill -9."""
    code = f"from core.runs.folders import RunDir; RunDir({str(run_path)!r}).write_status('running', **{status!r})"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   check=True, timeout=60)


def test_case7_dead_run_is_interrupted_and_resume_offers_it(tiny_model_dir, tmp_path):
    from core.rl.algorithms import make_trainer
    from core.runs.folders import RunDir

    runs = tmp_path / "runs"
    cfg = Config()
    cfg.model = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=8, lora_alpha=16)
    cfg.data.train_size, cfg.data.eval_size = 40, 4
    a = cfg.algorithm
    a.num_generations, a.prompts_per_step, a.micro_batch_size, a.max_completion_length, a.max_steps = 4, 2, 8, 12, 4
    cfg.run.output_dir, cfg.run.run_name, cfg.run.save_steps, cfg.run.engine = str(runs), "crashed", 2, "hf"
    trainer = make_trainer(cfg, device="cpu")
    trainer.train(max_steps=2)  # step 2 and its checkpoint are on disk; then the process "dies"
    trainer.rewards.close()
    _write_status_from_a_process_that_dies(trainer.run.path, step=2, max_steps=4)
    dead = RunDir(trainer.run.path)
    assert dead.read_status()["state"] == "running"
    died_at = dead.read_status()["time"]
    for p in (dead.config_path, dead.metrics_path):  # written before it died
        os.utime(p, (died_at - 60, died_at - 60))

    # the app starts again: the run is interrupted, the Train tab shows it with Resume ready
    manager = manager_for(tiny_model_dir, runs)
    try:
        assert [(r["run"], r["state"], r["step"]) for r in manager.list_runs()] == [("crashed", "interrupted", 2)]
        # its last activity is the dead process's last status, not the start-up's rewrite of it
        assert dead.read_status()["time"] > died_at and dead.last_written() == died_at
        s = manager.status()
        assert (s["state"], s["run_name"], s["step"], s["max_steps"]) == ("interrupted", "crashed", 2, 4)
        assert "Resume" in s["note"]
        assert s["checkpoint"] == "step-000002"  # read from the folder: no trainer holds this run
        manager.resume()  # no name: the run the status shows
        assert manager.wait(timeout=180) == "finished"
        assert [m["step"] for m in RunDir(trainer.run.path).read_metrics()] == [1, 2, 3, 4]
    finally:
        manager.close()

    # a status that cannot be written atomically (full disk, read-only folder) still keeps the error
    other = RunDir.create(runs, "full-disk")
    other.write_status("running", step=1)
    (other.path / ".status.json.tmp").mkdir()  # the atomic write's temporary file cannot be made
    other.write_status("failed", step=1, error="OSError: [Errno 28] No space left on device", traceback="...")
    after_restart = RunDir(other.path).read_status()
    assert after_restart["state"] == "failed" and "No space left" in after_restart["error"]


# ---------------------------------------------------------------------------
# case 8


def test_case8_resume_survives_damaged_checkpoints_and_edited_settings(tiny_model_dir, tmp_path):
    from test_trainer import make_trainer, tiny_config

    small = dict(num_generations=4, prompts_per_step=2, micro_batch_size=8, max_steps=4)

    def config(**changes):
        cfg = tiny_config(tmp_path, **{**small, **changes})
        cfg.run.save_steps = 2
        return cfg

    trainer = make_trainer(tiny_model_dir, config())
    assert trainer.train() == "finished"
    run, checkpoints = trainer.run, trainer.run.path / "checkpoints"
    assert [p.name for p in run.checkpoints()] == ["step-000002", "step-000004"]

    # 1) a truncated trainer_state.pt in the newest checkpoint, and a half-written checkpoint folder
    state = checkpoints / "step-000004" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    (checkpoints / ".tmp-step-000005").mkdir()
    (checkpoints / ".tmp-step-000005" / "adapter_model.safetensors").write_bytes(b"half")
    resumed = make_trainer(tiny_model_dir, config(), run_dir=run)
    assert resumed.resume() and resumed.step == 2
    note = " ".join(resumed.resume_notes)
    assert "step-000002" in note and "step-000004" in note and "trainer_state.pt" in note
    assert not (checkpoints / ".tmp-step-000005").exists()
    assert [m["step"] for m in run.read_metrics()] == [1, 2]

    # 2) the newest checkpoint's adapter file is missing
    assert resumed.train() == "finished"  # writes step-000004 again
    (checkpoints / "step-000004" / "adapter_model.safetensors").unlink()
    again = make_trainer(tiny_model_dir, config(), run_dir=run)
    assert again.resume() and again.step == 2
    assert "adapter_model.safetensors is missing" in " ".join(again.resume_notes)

    # 3) an edited lora_r: a message that says what to change, not a size mismatch
    from core.runs.checkpoints import CheckpointError

    edited = config()
    edited.model.lora_r, edited.model.lora_alpha = 4, 16
    with pytest.raises(CheckpointError, match=r"model.lora_r = 8.*now says 4.*set model.lora_r back to 8"):
        make_trainer(tiny_model_dir, edited, run_dir=run).resume()

    # 4) an edited learning rate applies from the resumed step on, and is said
    faster = make_trainer(tiny_model_dir, config(learning_rate=4e-2), run_dir=run)  # was 2e-2
    assert faster.resume() and faster.step == 2
    assert faster.optimizer.param_groups[0]["lr"] == pytest.approx(4e-2)
    assert "learning rate changed from 0.02 to 0.04" in " ".join(faster.resume_notes)
    faster.train_step()
    assert faster.scheduler.get_last_lr()[0] == pytest.approx(4e-2)


# ---------------------------------------------------------------------------
# case 9


def test_case9_reward_worker_processes_memory_and_output_are_bounded(tmp_path):
    from core.rewards.base import RewardError
    from core.rewards.sandbox import CustomRewardProcess

    pids_file = tmp_path / "pids"
    code = textwrap.dedent(f'''
        import subprocess, sys, time

        def _start(n, script):
            open({str(pids_file)!r}, "w").close()
            for _ in range(n):
                p = subprocess.Popen([sys.executable, "-c", script])
                with open({str(pids_file)!r}, "a") as fh:
                    fh.write(f"{{p.pid}} ")

        def spawn_and_hang(prompts, completions, **kwargs):
            _start(2, "import time; time.sleep(120)")
            time.sleep(120)

        def many_processes(prompts, completions, **kwargs):
            _start(5, "import time; time.sleep(120)")
            time.sleep(120)

        def memory_in_children(prompts, completions, **kwargs):
            _start(3, "b = b'x' * (250 << 20); import time; time.sleep(120)")
            time.sleep(120)
    ''')

    def children() -> list[int]:
        return [int(p) for p in pids_file.read_text().split()]

    with CustomRewardProcess(code, timeout_s=3, memory_mb=600) as worker:
        # 1) a call that times out takes the processes it started with it
        with pytest.raises(RewardError, match="timed out"):
            worker.call("spawn_and_hang", ["q"], ["a"], {})
        assert wait_for(lambda: all(dead(p) for p in children()), 5), children()
        # 2) memory is counted over the worker and its children (3 x 250 MB > 600 MB, each < 600)
        with pytest.raises(RewardError, match=r"MiB together, more than the 600 MiB allowed"):
            worker.call("memory_in_children", ["q"], ["a"], {})
        assert wait_for(lambda: all(dead(p) for p in children()), 5)
    # 3) more processes than allowed
    with CustomRewardProcess(code, timeout_s=3, max_processes=3) as worker:
        with pytest.raises(RewardError, match="started [45] processes, more than the 3 allowed"):
            worker.call("many_processes", ["q"], ["a"], {})
        assert wait_for(lambda: all(dead(p) for p in children()), 5)

    # 4) the app killed while the worker is busy in user code: the worker dies too, and so do the
    # processes the code started, a detached one (its own session, its parent gone) among them;
    # 5) a reward that prints without end puts at most 64 KiB into the app's log
    detached_file = tmp_path / "detached"
    app = textwrap.dedent('''
        import sys, threading, time
        from core.rewards.sandbox import CustomRewardProcess
        code = (
            "import subprocess, sys\\n"
            "def loud(prompts, completions, **kwargs):\\n"
            "    for _ in range(200):\\n"
            "        print('x' * 10000)\\n"
            "    return [0.0 for _ in completions]\\n"
            "def busy(prompts, completions, **kwargs):\\n"
            "    s = 'import os, subprocess, sys, time; '\\n"
            "    s += 'p = subprocess.Popen([sys.executable, \\"-c\\", \\"import time; time.sleep(300)\\"], start_new_session=True); '\\n"
            "    s += 'open(sys.argv[1], \\"w\\").write(str(p.pid))'\\n"
            "    subprocess.run([sys.executable, '-c', s, DETACHED_FILE])\\n"
            "    while True:\\n"
            "        pass\\n")
        worker = CustomRewardProcess(code, timeout_s=600)
        worker.call("loud", ["q"], ["a"], {})
        threading.Thread(target=worker.call, args=("busy", ["q"], ["a"], {}), daemon=True).start()
        time.sleep(0.5)
        print("WORKER", worker.pid, file=sys.__stderr__, flush=True)
        time.sleep(600)
    ''').replace("DETACHED_FILE", repr(str(detached_file)))
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", app], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker_pid = detached = None
    try:
        assert wait_for(lambda: (b"WORKER" in log.read_bytes() and detached_file.exists()
                                 and detached_file.read_text()) or proc.poll() is not None, 120, 0.2)
        worker_pid = int(re.search(rb"WORKER (\d+)", log.read_bytes()).group(1))
        detached = int(detached_file.read_text())
        assert not dead(worker_pid) and not dead(detached)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_for(lambda: dead(worker_pid), 10), "the worker outlived the app"
        assert wait_for(lambda: dead(detached), 10), "a process the reward code started outlived the app"
        output = log.read_bytes()
        assert 60_000 <= output.count(b"x") <= 64 * 1024, output.count(b"x")  # not 2 MB
        assert b"[custom reward output cut after 65536 bytes]" in output
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in (worker_pid, detached):
            if pid and not dead(pid):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------
# case 10


def test_case10_login_lockout_repeated_set_and_cli_messages(app, tiny_model_dir, tmp_path, capsys):
    from scripts import train

    # 1) failed logins: after 5 in a row, attempts from that address are refused for a while
    manager, _ = app
    demo, url = launch(manager, auth=("alice", "s3cret"))
    try:
        codes = [http(url + "login", {"username": "alice", "password": f"guess{i}"})[0] for i in range(8)]
        assert codes == [400] * 5 + [429] * 3, codes  # (it was ~700 tries a second at full speed)
        assert http(url + "login", {"username": "alice", "password": "s3cret"})[0] == 429  # locked, even so
        time.sleep(1.2)  # the lock-out after the 5th failure is 1 s; the refused tries did not count
        assert http(url + "login", {"username": "alice", "password": "s3cret"})[0] == 200
        assert http(url + "login", {"username": "alice", "password": "wrong"})[0] == 400  # the count restarted
    finally:
        demo.close()

    # 2) every --set applies, not only the last one
    cfg = Config()
    cfg.model = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=4, lora_alpha=8)
    cfg.data.train_size, cfg.data.eval_size = 16, 2
    a = cfg.algorithm
    a.num_generations, a.prompts_per_step, a.micro_batch_size, a.max_completion_length, a.max_steps = 2, 1, 2, 8, 2
    cfg.run.output_dir, cfg.run.engine = str(tmp_path / "runs"), "hf"
    path = tmp_path / "run.yaml"
    cfg.save(path)
    assert train.main(["--config", str(path), "--set", "algorithm.max_steps=1", "--set", "run.run_name=two-sets"]) == 0
    saved = Config.load(tmp_path / "runs" / "two-sets" / "config.yaml")
    assert saved.algorithm.max_steps == 1 and saved.run.run_name == "two-sets"
    capsys.readouterr()

    # 3) a bad data file: the message, not a traceback
    (tmp_path / "bad.csv").write_text("text,label\nhello,1\n")
    cfg.data.source = str(tmp_path / "bad.csv")
    cfg.save(path)
    assert train.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "bad.csv: no column 'prompt'" in err and "Traceback" not in err, err


def test_a_run_from_an_upload_is_named_after_the_file_not_its_stored_path(tiny_model_dir, tmp_path):
    """Before: the run folder was named after the whole stored path (`...-_uploads_data-<hash>.csv`)."""
    from core.runs.folders import default_run_name

    manager = manager_for(tiny_model_dir, tmp_path / "runs")
    try:
        src = tmp_path / "Grade school.csv"
        src.write_text("prompt,answer\nWhich is bigger, 9.11 or 9.9?,9.9\n")
        stored = manager.store_upload(str(src))
        name = default_run_name(str(stored), when=0)
        assert name.endswith("-Grade_school") and "/" not in name and "_uploads" not in name, name
        assert default_run_name("builtin:largest", when=0).endswith("-largest")
    finally:
        manager.close()


def test_an_ipv6_host_is_refused_with_a_message_not_a_traceback(capsys):
    """Gradio 6.31 cannot start on an IPv6 address (its start-up check requests http://:::PORT/ and
    httpx rejects the port): app.py says so before loading anything, with what to use instead."""
    import app

    for host in ("::", "::1", "[::]"):
        with pytest.raises(SystemExit) as exit_info:
            app.main(["--host", host, "--no-preload"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "is an IPv6 address" in err and "use 0.0.0.0" in err and "Traceback" not in err
