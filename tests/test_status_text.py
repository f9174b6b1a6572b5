"""The Train tab's status line and Stop's answer while the run waits on the model worker (a chat
answer being written, answers queued): what it says matches where the run stands."""

from __future__ import annotations

from ui import status_text
from ui.words import say


def _loading(**kw) -> dict:
    return {"state": "loading", "run_name": None, "step": 0, "max_steps": 3, "elapsed": 484,
            "before_first_step": True, **kw}


def test_a_loading_run_waiting_behind_a_chat_answer_says_so_not_current_step():
    # the walkthrough's case: the run's job waits behind the answer being written, one more queued behind it
    line = status_text.status_line(_loading(queued=1, waiting_for=1))
    assert line == ("⏳ **loading** · step **0/3** · elapsed 8m 04s · the run starts after the answer being "
                    "written · 1 answer(s) queued behind the run's first step")
    assert "current step" not in line
    # two ahead of it (the one being written, one queued before the run's job), none behind
    assert status_text.status_line(_loading(queued=1, waiting_for=2)).endswith(
        "elapsed 8m 04s · waiting behind 2 answer(s): the run starts after them")
    # its job began (the model loads): answers queued meanwhile wait for the first step
    assert status_text.status_line(_loading(queued=2, waiting_for=0)).endswith(
        "elapsed 8m 04s · 2 answer(s) queued behind the run's first step")
    assert status_text.status_line(_loading(queued=0, waiting_for=0)).endswith("elapsed 8m 04s")
    zh = status_text.status_line(_loading(queued=1, waiting_for=1), "zh")
    assert zh.endswith("已用 8 分 04 秒 · 正在写的回答完成后，运行才开始 · 1 个回答排在运行的第一步之后")


def test_queued_behind_the_current_step_only_while_a_step_runs():
    running = {"state": "running", "run_name": "r", "step": 1, "max_steps": 3, "queued": 2}
    assert status_text.status_line(running).endswith("· 2 answer(s) queued behind the current step")
    assert status_text.status_line({**running, "state": "stopping"}).endswith("2 answer(s) queued behind the current step")
    assert status_text.status_line({**running, "state": "paused"}).split("\n")[0].endswith(
        "· 2 answer(s) queued, answered while the run is paused")
    assert "queued" not in status_text.status_line({**running, "queued": 0})


def test_stop_while_loading_says_the_run_ends_before_its_first_step():
    line = status_text.status_line({**_loading(queued=1, waiting_for=1), "state": "stopping"})
    assert line.endswith("elapsed 8m 04s · the run ends before its first step: nothing is trained · 1 answer(s) queued")
    assert "current step" not in line and "starts after" not in line
    assert say("control.stopping.first").startswith("stop: the run is called off before its first step (nothing is trained")
    assert say("control.stopping.first", "zh").startswith("停止：运行会在第一步之前取消")
