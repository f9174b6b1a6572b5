"""Issue 29, "safe as a public Space, round 3": one test per case of the issue.

    case 1  anonymous clients cannot hold the app's connections      test_case1_...
    case 2  the login lock-out trusts no forwarded header by default test_case2_...
    case 3  a step too large for the machine, Stop inside rollouts   test_case3_...
    case 4  resume trusts nothing of a copied-in run folder          test_case4_...
    case 5  odd checkpoint folders and counters break no list        test_case5_...
    case 6  SIGTERM checkpoints the run and ends the reward worker   test_case6_...
    case 7  the judge's key goes only where the operator said        test_case7_...
    case 8  the CLI reads configs safely                             test_case8_...
    case 9  uploads quota and the corrected messages                 test_case9_...

Everything runs on the CPU with the tiny offline model; network traffic goes to 127.0.0.1 only,
bounded in count and time.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from core.config import Config, ConfigError, DataConfig, ModelConfig
from core.app.messages import ManagerError
from core.app.manager import RunManager

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manager_for(tiny_model_dir, runs: Path, **kw) -> RunManager:
    return RunManager(runs, ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=8, lora_alpha=16),
                      device="cpu", **kw)


def tiny_run_config(tiny_model_dir, runs: Path, **algorithm) -> Config:
    cfg = Config()
    cfg.model = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", lora_r=8, lora_alpha=16)
    cfg.data.train_size, cfg.data.eval_size = 16, 2
    a = cfg.algorithm
    a.num_generations, a.prompts_per_step, a.micro_batch_size, a.max_completion_length, a.max_steps = 2, 1, 2, 8, 2
    for key, value in algorithm.items():
        setattr(a, key, value)
    cfg.run.output_dir, cfg.run.engine = str(runs), "hf"
    return cfg


def wait_for(predicate, timeout: float, every: float = 0.1):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


# ---------------------------------------------------------------------------
# case 8


def test_case8_cli_reads_configs_safely(tiny_model_dir, tmp_path, capsys):
    from core import config_text
    from scripts import train

    def run(*argv) -> tuple[int, str]:
        code = train.main(list(argv))
        return code, capsys.readouterr().err

    # 1) an empty file trains nothing (it trained the defaults); a file holding 42 is no config
    (tmp_path / "empty.yaml").write_text("# nothing here\n")
    code, err = run("--config", str(tmp_path / "empty.yaml"))
    assert code == 2 and "is empty" in err and "Traceback" not in err, err
    (tmp_path / "42.yaml").write_text("42\n")
    code, err = run("--config", str(tmp_path / "42.yaml"))
    assert code == 2 and "a config is a mapping" in err and "Traceback" not in err, err
    (tmp_path / "broken.yaml").write_text("algorithm: [1, 2\n")
    code, err = run("--config", str(tmp_path / "broken.yaml"))
    assert code == 2 and "not valid YAML" in err and "Traceback" not in err, err

    # 2) a Python tag in --set is a message, not a traceback (and never runs)
    path = tmp_path / "run.yaml"
    tiny_run_config(tiny_model_dir, tmp_path / "runs").save(path)
    code, err = run("--config", str(path), "--set", "run.run_name=!!python/object/apply:os.system ['true']")
    assert code == 2 and "not plain YAML data" in err and "Traceback" not in err, err

    # 3) numbers written as YAML 1.1 reads them as text: "1e-4" is a number for a number field
    cfg = config_text.apply_overrides(Config.load(path), ["algorithm.learning_rate=1e-4", "algorithm.max_steps=1e1"])
    assert cfg.algorithm.learning_rate == pytest.approx(1e-4) and cfg.algorithm.max_steps == 10
    with pytest.raises(ConfigError, match="must be text"):
        config_text.apply_overrides(cfg, ["run.run_name=12"])  # a text field keeps its rule
    with pytest.raises(ConfigError, match="must be a whole number"):
        config_text.apply_overrides(cfg, ["algorithm.max_steps=1.5"])

    # 4) an alias bomb (9 levels of 10 aliases: 10^9 values) is refused at once
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    started = time.time()
    code, err = run("--config", str(bomb))
    assert code == 2 and "expand to more than" in err, err
    assert time.time() - started < 5


# ---------------------------------------------------------------------------
# case 5


def test_case5_odd_checkpoint_folders_and_counters_break_no_list(tiny_model_dir, tmp_path):
    import shutil

    import torch
    from test_trainer import make_trainer, tiny_config

    from core.runs.folders import RunDir
    from ui.views import checkpoint_choices, runs_frame

    small = dict(num_generations=2, prompts_per_step=1, micro_batch_size=2, max_steps=3, max_completion_length=4)

    def config():
        cfg = tiny_config(tmp_path, **small)
        cfg.run.save_steps = 1
        return cfg

    trainer = make_trainer(tiny_model_dir, config())
    assert trainer.train() == "finished"
    run, checkpoints = trainer.run, trainer.run.path / "checkpoints"
    # a copied folder, a crafted name, a crafted step, a crafted micro-batch of 0
    shutil.copytree(checkpoints / "step-000002", checkpoints / "step-000002 copy")
    shutil.copytree(checkpoints / "step-000001", checkpoints / "step--00005")
    state = json.loads((checkpoints / "step-000003" / "state.json").read_text())
    (checkpoints / "step-000003" / "state.json").write_text(json.dumps({**state, "step": -5}))
    trainer_state = checkpoints / "step-000002" / "trainer_state.pt"
    saved = torch.load(trainer_state, weights_only=True)
    torch.save({**saved, "micro_batch_size": 0}, trainer_state)
    # a status and a log line edited by hand
    run.status_path.write_text(json.dumps({"state": "finished", "step": "abc", "max_steps": -1}))
    with open(run.metrics_path, "a") as fh:
        fh.write(json.dumps({"step": "x", "reward": "lots"}) + "\n" + "[1, 2]\n")

    # 1) the lists of every tab: only the real checkpoints, no exception
    manager = manager_for(tiny_model_dir, tmp_path / "runs")
    try:
        names = [Path(p).name for p in manager.checkpoints(run.name)]
        assert names == ["step-000001", "step-000002", "step-000003"], names
        runs = manager.list_runs()
        assert runs[0]["run"] == run.name and runs[0]["reward"] is None
        assert len(runs_frame(runs)) == 1
        assert len(checkpoint_choices(runs, manager.checkpoints)) == 3
    finally:
        manager.close()

    # 2) resume skips the crafted step (-5) and the 0 micro-batch, and says so
    resumed = make_trainer(tiny_model_dir, config(), run_dir=RunDir(run.path))
    assert resumed.resume() and resumed.step == 1
    note = " ".join(resumed.resume_notes)
    assert "step -5" in note and "micro_batch_size = 0" in note, note
    resumed.train(max_steps=2)
    assert not any("--" in p.name for p in run.checkpoints())


# ---------------------------------------------------------------------------
# case 7


def test_case7_judge_key_goes_only_to_an_address_the_operator_named(monkeypatch):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from core.rl.judges import make_judge

    seen: list[str | None] = []

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.headers.get("Authorization"))
            body = json.dumps({"choices": [{"message": {"content": "B"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-operator-secret")
        monkeypatch.delenv("AHA_JUDGE_KEY_URLS", raising=False)
        cfg = Config()
        cfg.algorithm.algorithm, cfg.algorithm.judge = "online_dpo", url
        judge = make_judge(cfg, engine=None, tokenizer=None)
        # 1) a URL any logged-in user typed: asked, but without the operator's key
        assert judge.compare(["q"], ["a"], ["b"]) == [1]
        assert seen == [None]
        # 2) the operator lists the address: the key goes there
        monkeypatch.setenv("AHA_JUDGE_KEY_URLS", f"https://judge.example/v1, {url}")
        assert judge.compare(["q"], ["a"], ["b"]) == [1]
        assert seen[-1] == "Bearer sk-operator-secret"
        # 3) the same host on another port, or a path outside the listed one, is another address
        monkeypatch.setenv("AHA_JUDGE_KEY_URLS", url.replace("/v1", "/other"))
        assert judge.compare(["q"], ["a"], ["b"]) == [1]
        assert seen[-1] is None and len(seen) == 3
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------
# cases 1 and 2: the real app.py, reached over 127.0.0.1


def status_line(port: int, request: bytes, timeout: float = 15.0) -> tuple[int, socket.socket]:
    """Send a raw request; (HTTP status, the open socket) once the status line is in."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(request)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), sock


def get(port: int, path: str, cookie: str = "", headers: str = "") -> tuple[int, socket.socket]:
    extra = (f"Cookie: {cookie}\r\n" if cookie else "") + headers
    return status_line(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())


def login(port: int, password: str, forwarded_for: str = "") -> tuple[int, str]:
    """(status, the session cookie 'name=value' or '') of POST /login."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    conn.request("POST", "/login", urllib.parse.urlencode({"username": "alice", "password": password}), headers)
    response = conn.getresponse()
    response.read()
    cookies = [c.split(";", 1)[0] for c in response.headers.get_all("set-cookie") or []]
    conn.close()
    return response.status, next((c for c in cookies if c.startswith("access-token")), "")


@pytest.fixture(scope="module")
def app_process(tiny_model_dir, tmp_path_factory):
    """app.py with a login, started as the issue's attacker found it: 1,024 open files."""
    import resource

    tmp = tmp_path_factory.mktemp("app29")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT),
           "AHA_AUTH": "alice:s3cret"}
    env.pop("AHA_TRUSTED_PROXIES", None)
    env.pop("FORWARDED_ALLOW_IPS", None)

    def low_file_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    log = tmp / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), "--no-preload", "--model", str(tiny_model_dir),
             "--runs-dir", str(tmp / "runs")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=low_file_limit)

    def up() -> bool:
        try:
            return proc.poll() is not None or get(port, "/")[0] == 200
        except OSError:
            return False

    assert wait_for(up, 180, 0.5), log.read_text()[-3000:]
    assert proc.poll() is None, log.read_text()[-3000:]
    yield port, proc, log
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_case1_anonymous_clients_cannot_hold_the_apps_connections(app_process):
    port, proc, log = app_process
    # 1) every /gradio_api/* route needs the login, the heartbeat stream too
    for path in ("/gradio_api/heartbeat/abc123", "/gradio_api/info", "/gradio_api/token",
                 "/gradio_api/app_id", "/gradio_api/queue/data?session_hash=x"):
        code, sock = get(port, path)
        sock.close()
        assert code == 401, (path, code)
    # 2) 1,100 half-sent requests (more than the 1,024 files it was started with): the page still opens
    held = []
    try:
        for _ in range(1100):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            held.append(sock)
        started = time.time()
        code, sock = get(port, "/")
        sock.close()
        assert code == 200 and time.time() - started < 10
    finally:
        for sock in held:
            sock.close()
    assert b"Too many open files" not in log.read_bytes()
    # 3) a logged-in client holds at most 64 requests open; the 65th is answered 503 at once
    code, cookie = login(port, "s3cret")
    assert code == 200 and cookie
    streams = []
    try:
        for _ in range(64):
            code, sock = get(port, "/gradio_api/heartbeat/abc123", cookie)
            streams.append(sock)
            assert code == 200
        code, sock = get(port, "/gradio_api/heartbeat/abc123", cookie)
        sock.close()
        assert code == 503
    finally:
        for sock in streams:
            sock.close()
    assert wait_for(lambda: get(port, "/gradio_api/info", cookie)[0] == 200, 10, 0.5)


def test_case2_forwarded_addresses_are_not_believed_and_failures_have_a_global_budget(app_process):
    import asyncio

    from ui.login_guard import LoginGuard

    port, _, _ = app_process
    # 1) a new X-Forwarded-For on each attempt is the same client: locked out after 5
    codes = [login(port, f"guess{i}", forwarded_for=f"203.0.113.{i}")[0] for i in range(8)]
    assert codes == [400] * 5 + [429] * 3, codes
    # 2) ... and cannot lock out a victim's address: a header naming it changes nothing for it
    #    (here the victim is the connection's own address, which is locked above: it waits it out)
    time.sleep(1.2)
    assert login(port, "s3cret", forwarded_for="198.51.100.7")[0] == 200

    # 3) the global budget: many addresses together fail at most `global_failures` times a window
    async def wrong_password(scope, receive, send):
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = LoginGuard(wrong_password, max_failures=5, global_failures=10, global_window_s=60)

    async def attempt(address: str) -> int:
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/login", "client": (address, 1234)}
        await guard(scope, None, send)
        return sent[0]["status"]

    async def many() -> list[int]:
        return await asyncio.gather(*[attempt(f"10.0.0.{i}") for i in range(30)])

    codes = asyncio.run(asyncio.wait_for(many(), 10))
    assert codes.count(400) == 10 and codes.count(429) == 20, codes


# ---------------------------------------------------------------------------
# case 4


def test_case4_resume_trusts_nothing_of_a_copied_in_run_folder(tiny_model_dir, tmp_path):
    import shutil

    from core.rl.algorithms import make_trainer
    from core.runs.folders import RunDir

    runs = tmp_path / "runs"
    cfg = tiny_run_config(tiny_model_dir, runs, max_steps=2)
    cfg.run.run_name, cfg.run.save_steps, cfg.run.keep_checkpoints = "copied", 1, 1
    trainer = make_trainer(cfg, device="cpu")
    assert trainer.train(max_steps=1) == "finished"
    trainer.rewards.close()
    run = RunDir(trainer.run.path)
    run.write_status("stopped", step=1, max_steps=2)  # as a Stop leaves it
    config_text = run.config_path.read_text()
    outside = tmp_path / "outside"
    outside.mkdir()

    def with_config(**changes) -> None:
        edited = Config.load(tmp_path / "original.yaml")
        for key, value in changes.items():
            section, name = key.split(".")
            setattr(getattr(edited, section), name, value)
        edited.save(run.config_path)

    run.config_path.rename(tmp_path / "original.yaml")
    run.config_path.write_text(config_text)
    manager = manager_for(tiny_model_dir, runs)
    try:
        # 1) a data source and a model folder outside the allowed folders are refused on resume
        (outside / "secret.csv").write_text("prompt,answer\nthe secret question,42\n" * 20)
        with_config(**{"data.source": str(outside / "secret.csv")})
        with pytest.raises(ManagerError, match="outside the folders this app may read data from"):
            manager.resume("copied")
        shutil.copytree(tiny_model_dir, outside / "model")
        with_config(**{"model.name_or_path": str(outside / "model")})
        with pytest.raises(ManagerError, match="outside the folders this app may load models from"):
            manager.resume("copied")
        with_config()

        # 2) a `checkpoints` link to an outside folder: refused, nothing there deleted
        precious = outside / "precious"
        shutil.copytree(run.path / "checkpoints", precious)
        (precious / "step-000000").mkdir()
        (precious / "step-000000" / "state.json").write_text('{"step": 0}')
        shutil.rmtree(run.path / "checkpoints")
        (run.path / "checkpoints").symlink_to(precious)
        with pytest.raises(ManagerError, match="links in its folder lead outside it"):
            manager.resume("copied")
        assert sorted(p.name for p in precious.iterdir()) == ["step-000000", "step-000001"]
        (run.path / "checkpoints").unlink()
        shutil.copytree(precious, run.path / "checkpoints")
        shutil.rmtree(run.path / "checkpoints" / "step-000000")

        # 3) a `metrics.jsonl` link: resume refused, and the log is never written through a link
        home = outside / "home"
        home.mkdir()
        run.metrics_path.rename(tmp_path / "metrics.jsonl")
        run.metrics_path.symlink_to(home / ".profile")
        with pytest.raises(ManagerError, match="metrics.jsonl"):
            manager.resume("copied")
        with pytest.raises(OSError):
            run.append_metrics({"step": 9})
        assert not (home / ".profile").exists()
        run.metrics_path.unlink()
        (tmp_path / "metrics.jsonl").rename(run.metrics_path)

        # 4) reward code this app did not write: a question first, then it runs
        marker = outside / "reward-code-ran"
        code = textwrap.dedent(f'''
            open({str(marker)!r}, "w").write("ran")

            def brevity(prompts, completions, **kwargs):
                return [0.0 for _ in completions]
        ''')
        edited = Config.load(tmp_path / "original.yaml")
        edited.rewards.custom_code = code
        edited.save(run.config_path)
        with pytest.raises(ManagerError, match="custom reward code this app has not run"):
            manager.resume("copied")
        assert not marker.exists()
        manager.resume("copied", run_code=True)
        assert manager.wait(timeout=180) == "finished" and marker.exists()
        assert [m["step"] for m in run.read_metrics()] == [1, 2]
    finally:
        manager.close()


# ---------------------------------------------------------------------------
# case 6


def test_case6_sigterm_checkpoints_the_run_and_ends_the_reward_workers_tree(tiny_model_dir, tmp_path):
    from core.runs.folders import RunDir

    runs, pids = tmp_path / "runs", tmp_path / "pids"
    cfg = tiny_run_config(tiny_model_dir, runs, max_steps=10_000)
    cfg.run.run_name, cfg.run.save_steps = "term", 1000
    cfg.rewards.custom_code = textwrap.dedent(f'''
        import subprocess, sys
        _child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open({str(pids)!r}, "w").write(str(_child.pid))

        def brevity(prompts, completions, **kwargs):
            return [0.0 for _ in completions]
    ''')
    cfg.save(tmp_path / "run.yaml")
    script = textwrap.dedent(f'''
        import sys, time
        from core.config import Config
        from core.app.manager import RunManager, stop_on_sigterm

        def leave():
            raise SystemExit(0)

        cfg = Config.load({str(tmp_path / "run.yaml")!r})
        manager = RunManager({str(runs)!r}, cfg.model, device="cpu")
        stop_on_sigterm(manager, then=leave)  # as app.py does
        manager.start(cfg)
        while manager.status()["step"] < 3:
            time.sleep(0.05)
        print("STEPPING", flush=True)
        time.sleep(300)
    ''')
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = None
    try:
        assert wait_for(lambda: "STEPPING" in log.read_text() or proc.poll() is not None, 180, 0.2), log.read_text()
        assert proc.poll() is None, log.read_text()[-3000:]
        child = int(pids.read_text())
        proc.terminate()  # SIGTERM, as docker stop sends it
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        status = RunDir(runs / "term").read_status()
        assert status["state"] == "stopped" and status["step"] >= 3, status
        assert [p.name for p in RunDir(runs / "term").checkpoints()][-1] == f"step-{status['step']:06d}"
        assert wait_for(lambda: not Path(f"/proc/{child}").exists()
                        or Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        if child and Path(f"/proc/{child}").exists():
            os.kill(child, 9)


# ---------------------------------------------------------------------------
# case 3


def test_case3_steps_too_large_are_refused_and_stop_ends_a_step_inside_its_rollouts(tiny_model_dir, tmp_path):
    from test_trainer import make_trainer, tiny_config

    # 1) a step the machine cannot take: refused at Start, at once, twice
    manager = manager_for(tiny_model_dir, tmp_path / "runs")
    try:
        huge = tiny_run_config(tiny_model_dir, tmp_path / "runs", num_generations=256, prompts_per_step=4096)
        for _ in range(2):
            started = time.time()
            with pytest.raises(ManagerError, match=r"cannot start: one step samples 1,048,576 completions"):
                manager.start(huge)
            assert time.time() - started < 5 and manager.status()["state"] in ("idle", "failed")
        # 2) train_size 10^7 of a built-in task: a message at once, not 10 minutes and 6 GB
        big = tiny_run_config(tiny_model_dir, tmp_path / "runs")
        big.data.train_size = 10_000_000
        started = time.time()
        with pytest.raises(ManagerError, match=r"train_size = 10,000,000 asks for more training rows than the 100,000"):
            manager.start(big)
        assert time.time() - started < 5
    finally:
        manager.close()

    # 3) Stop pressed during a step's rollouts ends them at the next generation batch
    cfg = tiny_config(tmp_path, num_generations=2, prompts_per_step=32, micro_batch_size=8, max_steps=2)
    trainer = make_trainer(tiny_model_dir, cfg)
    trainer.engine.max_batch_sequences = 2  # one prompt's group per generation batch: 32 batches a step
    batches = []
    generate = trainer.model.generate

    def counting_generate(*args, **kwargs):
        batches.append(1)
        if len(batches) == 3:
            trainer.control.stop()  # as the Stop button does, from another thread
        return generate(*args, **kwargs)

    trainer.model.generate = counting_generate
    started = time.time()
    assert trainer.train() == "stopped"
    assert len(batches) == 3 and trainer.step == 0, len(batches)  # not the 32 batches of the step
    assert trainer.run.read_status()["state"] == "stopped"
    assert time.time() - started < 60


# ---------------------------------------------------------------------------
# case 9


def test_case9_messages_say_what_happened(tiny_model_dir, tmp_path):
    from core.data import load_task_data

    # 1) a file of identical rows: not "no training rows left after holding out 200"; held out by
    #    distinct question (one here), nothing is held out and the notes say why
    path = tmp_path / "same.csv"
    path.write_text("prompt,answer\n" + "\"Which is bigger, 9.11 or 9.9?\",9.9\n" * 50)
    same = load_task_data(DataConfig(source=str(path)))
    assert (len(same.train), len(same.eval)) == (50, 0)
    assert same.notes == ["50 usable rows ask 1 distinct question: held out 0 (at most half of so few) instead of 200",
                          "the 50 training rows ask 1 distinct question: a run learns those, add rows with other "
                          "questions to teach more"]
    assert len(load_task_data(DataConfig(source=str(path), eval_size=0)).train) == 50

    # 2) a Start while another client's Start is still being prepared: not "run is idle: stop it"
    manager = manager_for(tiny_model_dir, tmp_path / "runs")
    try:
        manager._starting = True  # as while the other client's Start loads its data
        with pytest.raises(ManagerError) as refused:
            manager.start(tiny_run_config(tiny_model_dir, tmp_path / "runs"))
        assert "is idle" not in str(refused.value) and "another Start is being prepared" in str(refused.value)
    finally:
        manager._starting = False
        manager.close()


def test_case9_uploads_have_a_quota_and_gradios_copy_is_removed(tiny_model_dir, tmp_path, monkeypatch):
    """Before: every upload stayed twice (the uploads folder and Gradio's cache), with no bound."""
    from core.runs.access import PathPolicy

    def data_file(name: str, kb: int) -> Path:
        path = tmp_path / "incoming" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("prompt,answer\n" + f"q {name},1\n" * (kb * 1024 // (len(name) + 5)))
        return path

    def aged(path: str, seconds_ago: float) -> None:
        os.utime(path, (time.time() - seconds_ago,) * 2)

    # 1) past the quota the oldest upload no run names goes; one a run's config.yaml names stays
    runs = tmp_path / "runs"
    manager = manager_for(tiny_model_dir, runs, uploads_quota_mb=10 / 1024)  # 10 KB
    try:
        used = manager.store_upload(str(data_file("used.csv", 4)))
        spare = manager.store_upload(str(data_file("spare.csv", 4)))
        aged(used, 300), aged(spare, 200)  # `used` is the oldest, but a run needs it
        (runs / "r1").mkdir()
        cfg = Config()
        cfg.data.source = used
        cfg.save(runs / "r1" / "config.yaml")
        third = manager.store_upload(str(data_file("third.csv", 4)))
        assert Path(used).exists() and Path(third).exists() and not Path(spare).exists()
        assert manager.store_upload(str(data_file("third.csv", 4))) == third  # the same bytes: room not needed
        # 2) a file that would not fit even with every free upload gone: refused, nothing deleted
        with pytest.raises(ManagerError, match=r"uploads folder is full: this file \(.* MB\) would take it past its quota of 0.00977 MB.*AHA_UPLOADS_QUOTA_MB"):
            manager.store_upload(str(data_file("big.csv", 8)))
        assert Path(third).exists() and sorted(p.name for p in (runs / "_uploads").iterdir()) == sorted(
            [Path(used).name, Path(third).name])
    finally:
        manager.close()

    # 3) the quota comes from $AHA_UPLOADS_QUOTA_MB when the app is not given one
    monkeypatch.setenv("AHA_UPLOADS_QUOTA_MB", "3")
    assert PathPolicy(tmp_path / "other").uploads_quota_bytes == 3 * 2**20
    monkeypatch.delenv("AHA_UPLOADS_QUOTA_MB")
    assert PathPolicy(tmp_path / "other").uploads_quota_bytes == 1024 * 2**20

    # 4) the Data tab deletes Gradio's temporary copy once the upload is stored
    from ui.studio import build_app

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    gradio_copy = cache / "0123abcd" / "sums.csv"
    gradio_copy.parent.mkdir(parents=True)
    gradio_copy.write_text("question,answer\n1+1,2\n2+2,4\n")
    manager = manager_for(tiny_model_dir, tmp_path / "runs2")
    try:
        demo = build_app(manager)
        (on_upload,) = [f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_upload"]
        stored, *_, loaded = on_upload(str(gradio_copy))
        assert loaded is True  # the Data tab previews it (ui/tabs/data.py after_upload)
        assert Path(stored).read_text().startswith("question,answer") and Path(stored).parent.name == "_uploads"
        assert not gradio_copy.exists() and not gradio_copy.parent.exists() and cache.exists()
        # a refused upload after it says that the source in use is still the earlier file
        import gradio as gr

        broken = cache / "4567cdef" / "broken.jsonl"
        broken.parent.mkdir(parents=True)
        broken.write_text("{not json\n")
        out = on_upload(str(broken), stored)
        assert [o for o in out[:3]] == [gr.skip()] * 3 and out[3].startswith("⚠️") and out[7] is False  # no preview
        # the messages name files as the user uploaded them, not the server's copies (sums.csv is in use)
        assert "The data source is unchanged: `sums.csv` (Start trains on it)" in out[3]
        assert "broken.jsonl, line 1: not valid JSON" in out[3] and "_uploads" not in out[3]
        # the page shows what trains: the radio on the source in use (a file here), the refused file's box empty
        assert out[4] == "upload" and out[5] is None and out[6] == gr.skip()

        def refused_with(current):
            broken.parent.mkdir(parents=True, exist_ok=True)  # (the page deleted Gradio's copy: a new upload)
            broken.write_text("{not json\n")
            return on_upload(str(broken), current)

        out = refused_with(" builtin:addition")  # a built-in task in use
        assert out[4] == "builtin" and out[5] is None and "`builtin:addition` (Start trains on it)" in out[3]
        out = refused_with("openai/gsm8k")  # a hub dataset in use: the radio and its box show it
        assert (out[4], out[5], out[6]) == ("hub", None, "openai/gsm8k")
        out = refused_with("")  # no source at all: said so, nothing claimed to train
        assert out[4] == gr.skip() and out[5] is None and "no data source is set" in out[3]
        assert "Start trains on it" not in out[3]
        # ... and the refused file is not kept against the uploads quota; the source in use stays
        assert sorted(p.name for p in (tmp_path / "runs2" / "_uploads").iterdir()) == [Path(stored).name]
        # a file the page names as its source is never deleted, nor one outside the uploads folder
        assert not manager.discard_upload(stored, stored) and Path(stored).exists()
        assert not manager.discard_upload(str(tiny_model_dir / "config.json"))  # only the uploads folder
        assert (tiny_model_dir / "config.json").exists()
    finally:
        manager.close()


def test_upload_without_usable_rows_keeps_the_source(tiny_model_dir, tmp_path, monkeypatch):
    """Before: a CSV whose every answer was empty became "Source in use" (its columns read fine) and
    Start then failed; the message named the server's copy. Now it is refused as the unreadable files
    are: the source in use stays, said in the same words, the file named as uploaded."""
    import gradio as gr

    from ui.studio import build_app

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))

    def gradio_copy(name: str, text: str) -> str:
        path = cache / name.split(".")[0] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    manager = manager_for(tiny_model_dir, tmp_path / "runs")
    try:
        demo = build_app(manager)
        (on_upload,) = [f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_upload"]
        stored, *_, loaded = on_upload(gradio_copy("sums.csv", "question,answer\n1+1,2\n2+2,4\n"))
        assert loaded is True
        out = on_upload(gradio_copy("empty_answers.csv", "question,answer\n" + "".join(f"q{i},\n" for i in range(10))),
                        stored)
        assert list(out[:3]) == [gr.skip()] * 3 and out[7] is False  # not the source, no preview
        assert out[3] == ("⚠️ data: empty_answers.csv: no usable rows: all 10 have an empty 'question' or 'answer'"
                          "\n\nNothing was loaded from `empty_answers.csv`. The data source is unchanged: `sums.csv` "
                          "(Start trains on it); upload a readable file to change it.")
        assert (out[4], out[5]) == ("upload", None)
        # the refused file is not kept against the uploads quota
        assert [p.name for p in (tmp_path / "runs" / "_uploads").iterdir()] == [Path(stored).name]
        # a file with some usable rows is still taken (the empty ones are dropped when it trains)
        out = on_upload(gradio_copy("some.csv", "question,answer\nq1,\nq2,7\n"), stored)
        assert out[7] is True and Path(out[0]).name.startswith("some-")
        # the guessed answer column empty but another column holding answers: that one is taken, and said
        out = on_upload(gradio_copy("three.csv", "prompt,response,reference\nq1,,3\nq2,,5\n"), stored)
        assert out[7] is True and Path(out[0]).name.startswith("three-")
        assert (out[1]["value"], out[2]["value"]) == ("prompt", "reference")
        assert out[3].endswith("⚠️ The column `response` has no answers to train on, so `reference` is taken as the "
                               "answer column: check it under Column mapping."), out[3]
        assert out[3].startswith("Columns: `prompt`, `response`, `reference`. Guessed: question = `prompt`, "
                                 "answer = `reference`."), out[3]
        (preview,) = [f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "preview"]
        rows, info = preview(None, data_source=out[0], data_prompt_column="prompt", data_answer_column="reference")
        assert "source `three.csv`" in info and "_uploads" not in info, info  # named as uploaded, not the server path
        # Preview of such a file (set as the source another way) names it as uploaded too
        empty = manager.store_upload(gradio_copy("empty.csv", "question,answer\nq1,\n"))
        rows, info = preview(None, data_source=empty, data_prompt_column="question", data_answer_column="answer")
        assert info == "⚠️ data: empty.csv: no usable rows: all 1 have an empty 'question' or 'answer'"
    finally:
        manager.close()


def test_case9_unreadable_or_broken_weights_are_named(tiny_model_dir, tmp_path):
    """Before: an unreadable weights file read "No such file or directory", a truncated one a bare
    SafetensorError that was no ModelError at all."""
    import shutil

    from core.models.loading import ModelError, load_base_model

    def copy_of_tiny(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(tiny_model_dir, folder)
        return folder

    def load(folder: Path):
        return load_base_model(ModelConfig(name_or_path=str(folder), dtype="float32"), "cpu")

    # 1) a weights file that is a folder, one cut short, one that is empty: named, with what is wrong
    folder = copy_of_tiny("folder")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").mkdir()
    with pytest.raises(ModelError, match=r"weights file .*folder/model.safetensors is a folder, not a file"):
        load(folder)
    for name, keep in (("truncated", 1000), ("empty", 0)):
        folder = copy_of_tiny(name)
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:keep])
        with pytest.raises(ModelError, match=rf"weights file .*{name}/model.safetensors could not be parsed as "
                                             r"safetensors \(truncated or corrupt\?"):
            load(folder)

    # 2) a weights file without read permission: "exists but cannot be read", not "No such file"
    folder = copy_of_tiny("unreadable")
    weights = folder / "model.safetensors"
    weights.chmod(0)
    try:
        if not os.access(weights, os.R_OK):  # an ordinary user: chmod binds
            with pytest.raises(ModelError) as refused:
                load(folder)
            message = str(refused.value)
        else:  # root reads anything: load in a child without the capabilities that let it
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv: chmod 000 cannot be made to bind")
            code = ("import sys\nfrom core.config import ModelConfig\nfrom core.models.loading import ModelError, load_base_model\n"
                    "try:\n    load_base_model(ModelConfig(name_or_path=sys.argv[1], dtype='float32'), 'cpu')\n"
                    "except ModelError as e:\n    print(e)\n")
            child = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable,
                                    "-c", code, str(folder)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if "Operation not permitted" in child.stderr and child.returncode != 0:
                pytest.skip(f"setpriv cannot drop capabilities here: {child.stderr.strip()[:200]}")
            message = child.stdout
        assert f"the weights file {weights} exists but cannot be read (permission denied)" in message, message
        assert "No such file" not in message, message
    finally:
        weights.chmod(0o644)


def test_case9_a_looping_chat_template_fails_fast(tiny_model_dir, tmp_path):
    """Before: a template of nested loops ran for minutes (10^10 turns) in the preview and in training."""
    from core.data import DataError, build_messages, render_prompt

    loops = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
             "{{ messages[-1]['content'] }}")
    message = r"the chat template given took more than 1 s to render one prompt, so it was stopped: it loops too long"

    def within(seconds: float, fn):
        """fn's result or exception, or AssertionError when it is still running after `seconds`
        (a daemon thread: on the old code it spins on until the tests end)."""
        box = {}

        def run():
            try:
                box["value"] = fn()
            except Exception as e:  # handed to the caller
                box["error"] = e

        thread = threading.Thread(target=run, daemon=True)
        started = time.time()
        thread.start()
        thread.join(seconds)
        assert not thread.is_alive(), f"still rendering after {seconds} s"
        return box, time.time() - started

    # 1) the preview without a tokenizer (our own Jinja environment)
    box, took = within(3, lambda: render_prompt(None, build_messages("2 + 2?", ""), loops))
    assert isinstance(box.get("error"), DataError) and took < 3, (box, took)
    assert re.search(message, str(box["error"])), box["error"]

    # 2) the Data tab's preview with the model's tokenizer (transformers' environment)
    manager = manager_for(tiny_model_dir, tmp_path / "runs")
    try:
        data = DataConfig(source="builtin:decimal_compare", train_size=20, eval_size=2)
        model = manager.default_model
        assert len(manager.preview_data(data, model)["table"]) == 5  # the tokenizer is loaded here, untimed
        data.chat_template = loops
        box, took = within(3, lambda: manager.preview_data(data, model))
        assert isinstance(box.get("error"), ManagerError) and took < 3, (box, took)
        assert re.search(message, str(box["error"])), box["error"]
        # a macro that calls itself: a message too, not a bare RecursionError
        data.chat_template = "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"
        with pytest.raises(ManagerError, match="calls itself without end"):
            manager.preview_data(data, model)
    finally:
        manager.close()


def test_case9_the_render_deadline_counts_only_the_renders_own_time(monkeypatch):
    """Review of issue 29 case 9: the deadline was wall-clock time, so a render waiting for the GIL
    behind a busy thread (a training step, the UI) failed a healthy run. It counts the rendering
    thread's own CPU time now: a short template renders while another thread holds the GIL, and
    a looping one still stops."""
    import threading
    import time

    import core.data.chat as chat
    from core.data import DataError, build_messages, render_prompt

    monkeypatch.setattr(chat, "RENDER_SECONDS", 0.1)
    template = ("{% for m in messages %}{% for i in range(3000) %}{% endfor %}{{ m['role'] }}: {{ m['content'] }}\n"
                "{% endfor %}")
    stop = time.time() + 3.0

    def hog():  # pure Python: holds the GIL between switch intervals
        x = 0
        while time.time() < stop:
            x += 1

    threads = [threading.Thread(target=hog, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    t0 = time.thread_time()
    rendered = [render_prompt(None, build_messages(f"q{i}", "sys"), template) for i in range(10)]
    assert time.thread_time() - t0 < 0.5  # each render well inside its 0.1 s of CPU
    assert all(r.endswith(f"user: q{i}\n") for i, r in enumerate(rendered))
    for t in threads:
        t.join()
    loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
    with pytest.raises(DataError, match="loops too long"):
        render_prompt(None, build_messages("q", ""), loops)


def test_case4_a_foreign_runs_reward_code_never_reaches_the_form(tmp_path, tiny_model_dir):
    """Review of issue 29 case 4: the run found interrupted at start-up fills the form after a reload;
    a Start would then run its custom code without Resume's question. Code this app has not run
    is left out of the form's config; code it ran is kept."""
    from core.config import Config
    from core.app.manager import RunManager
    from core.runs.folders import remember_reward_code

    m = RunManager(tmp_path / "runs", device="cpu")
    try:
        cfg = Config()
        cfg.rewards.custom_code = "def mine(completions, **kwargs):\n    return [0.0] * len(completions)\n"
        m._cfg = cfg  # as _offer_interrupted sets it from a run folder's config.yaml
        assert m.run_config().rewards.custom_code == ""
        remember_reward_code(m.runs_dir, cfg.rewards.custom_code)
        assert m.run_config().rewards.custom_code == cfg.rewards.custom_code
    finally:
        m.close()


def test_case6_a_second_sigterm_does_not_start_a_second_shutdown():
    """Review of issue 29 case 6: a second SIGTERM (docker stop sends it again, a person presses
    Ctrl-C twice) arrived inside the first one's shutdown and began another; it now returns."""
    import signal

    from core.app.manager import stop_on_sigterm

    calls = []

    class Fake:
        def shutdown(self):
            calls.append("shutdown")
            handler(signal.SIGTERM, None)  # the second one arrives while the first one stops

    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm(Fake(), then=lambda: calls.append("then"))
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert calls == ["shutdown", "then"]


def test_the_memory_estimate_reads_no_model_folder_that_load_would_refuse(tiny_model_dir, tmp_path):
    """2026-12-06: Model folder `/etc` -> the estimate read /etc/config.json and showed the
    FileNotFoundError (whether a file exists anywhere), while Load refused the folder."""
    from core.app.manager import ManagerError
    from core.config import ModelConfig

    manager = manager_for(tiny_model_dir, tmp_path / "runs")
    try:
        for folder in ("/etc", str(tmp_path)):
            with pytest.raises(ManagerError, match="outside the folders this app may load models from"):
                manager.model_info(ModelConfig(name_or_path=folder))
            cfg = Config()
            cfg.model.name_or_path = folder
            with pytest.raises(ManagerError, match="outside the folders this app may load models from"):
                manager.memory_plan(cfg)  # the Train tab's plan reads config.json too
        assert manager.model_info(ModelConfig(name_or_path=str(tiny_model_dir)))["params"] > 0
    finally:
        manager.close()
