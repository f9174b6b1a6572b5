"""The run's status in words: the status line, the progress bar, and the note a reloaded page
shows when its form holds the last run's settings, in the browser's language (`lang`: "en" or
"zh"; the Chinese is `ui/zh.py` STATUS_ZH, with the same keys as STATUS_EN). No gradio import.

Refuses to know: how a run gets to a state (core/app/manager.py, core/app/status.py).
"""

from __future__ import annotations

import html

from ui.words import duration
from ui.zh import STATUS_ZH

# the status line's words; ui/zh.py STATUS_ZH has the same keys
STATUS_EN = {
    "idle": "⚪ **idle**: no run yet. Set up the tabs in order, then press **Start** on the Train tab.",
    "idle.earlier": "⚪ **idle**: no run since the app started; {n} earlier run(s) on the **Runs** tab (their "
                    "checkpoints answer on **Compare**). Set up the tabs, then press **Start** on the Train tab.",
    **{f"state.{state}": state for state in ("idle", "loading", "running", "paused", "stopping", "finished",
                                             "stopped", "failed", "interrupted")},
    "run": "run `{run}`",
    "step": "step **{step}/{max_steps}**",
    "eta": "ETA {eta}",
    "eta_first": "ETA ≤ {eta} (from one step, which included the warm-up)",
    "tps": "{tps} tokens/s",
    "reward": "reward {reward}",
    "elapsed": "elapsed {elapsed}",
    "queued": "{queued} answer(s) queued behind the current step",
    "queued.paused": "{queued} answer(s) queued, answered while the run is paused",
    "queued.first_step": "{queued} answer(s) queued behind the run's first step",
    "queued.plain": "{queued} answer(s) queued",
    "waiting.one": "the run starts after the answer being written",
    "waiting": "waiting behind {n} answer(s): the run starts after them",
    "stopping.first": "the run ends before its first step: nothing is trained",
    "fix_rewards": " — fix it on the Rewards tab, then press **Resume**.",
    "paused_hint": "**Resume** goes on from here; **Stop** ends the run with its checkpoint (then **Start** opens).",
    "paused_hint.first": "**Resume** goes on from here; **Stop** ends the run (no step to keep yet; then **Start** opens).",
    "checkpoint": "checkpoint `{name}` saved",
    "checkpoint.resume": "checkpoint `{name}` saved: **Resume** continues the run from it",
    "form_from_run": "ℹ️ The form shows the settings of the last run, `{run}` ({state}): **Start** trains with them "
                     "as shown, the Data tab's source included.",
    "form_from_run.code": " It scored with its own reward code too: clear the Rewards tab's editor to start without it.",
    "form_from_active": "ℹ️ The form shows the settings of the run in progress ({state}).",
    "no_pairs": "step {step} had no preference pair: the answers compared for each question came out even, so "
                "Online DPO learned nothing from it (it needs a better and a worse answer to the same question)",
    "traceback": "traceback",
    "progress.steps": "{done}/{total} steps",
    "progress.none": "no run",
}


def status_line(s: dict, lang: str = "en") -> str:
    """One Markdown line: state, run, step, ETA, speed (and the error or pause reason). The
    messages the run itself wrote (warnings, errors, notes) stay as written.

    >>> status_line({"state": "running", "run_name": "r", "step": 2, "max_steps": 5}, "zh")
    '🟢 **运行中** · 运行 `r` · 第 **2/5** 步'
    >>> status_line({"state": "idle", "run_name": None, "earlier_runs": 2}).split(";")[1]
    ' 2 earlier run(s) on the **Runs** tab (their checkpoints answer on **Compare**). Set up the tabs, then press **Start** on the Train tab.'
    """
    w = STATUS_ZH if lang == "zh" else STATUS_EN
    icons = {"idle": "⚪", "loading": "⏳", "running": "🟢", "paused": "⏸️", "stopping": "🟠",
             "finished": "✅", "stopped": "⏹️", "failed": "❌", "interrupted": "⚠️"}
    state = s.get("state", "idle")
    if state == "idle" and not s.get("run_name"):
        return w["idle.earlier"].format(n=s["earlier_runs"]) if s.get("earlier_runs") else w["idle"]
    parts = [f"{icons.get(state, '•')} **{w.get(f'state.{state}', state)}**"]
    if s.get("run_name"):
        parts.append(w["run"].format(run=s["run_name"]))
    if s.get("max_steps"):
        parts.append(w["step"].format(step=s.get("step", 0), max_steps=s["max_steps"]))
    if state in ("running", "paused") and s.get("eta_seconds") is not None:
        parts.append(w["eta_first" if s.get("eta_first_step") else "eta"].format(eta=duration(s["eta_seconds"], lang)))
    if s.get("tokens_per_second"):
        parts.append(w["tps"].format(tps=f"{s['tokens_per_second']:.0f}"))
    if s.get("reward") is not None:
        parts.append(w["reward"].format(reward=f"{s['reward']:.3f}"))
    if s.get("elapsed"):
        parts.append(w["elapsed"].format(elapsed=duration(s["elapsed"], lang)))
    parts += _worker_queue(s, w)
    if s.get("checkpoint") and state in ("finished", "stopped", "failed", "interrupted"):  # a Stop said nothing of it
        parts.append(w["checkpoint" if state == "finished" else "checkpoint.resume"].format(name=s["checkpoint"]))
    line = " · ".join(parts)
    if s.get("engine_note") and state in ("loading", "running", "paused"):
        line += f"\n\n🔧 {s['engine_note']}"
    if s.get("signal_warning"):
        line += f"\n\n⚠️ {s['signal_warning']}"
    elif s.get("no_pairs_step"):
        line += f"\n\n⚠️ {w['no_pairs'].format(step=s['no_pairs_step'])}"
    if s.get("pause_reason"):
        line += f"\n\n⏸️ {s['pause_reason']}"
        if s["pause_reason"].startswith("reward"):
            line += w["fix_rewards"]
    if state == "paused":  # Start is greyed out while paused: say why, and what the buttons do (a stop saves a step)
        line += f"\n\n{w['paused_hint' if s.get('step') else 'paused_hint.first']}"
    if s.get("note"):  # an interrupted run, or what a resume had to do
        line += f"\n\nℹ️ {s['note']}"
    if s.get("error"):
        line += f"\n\n❌ {s['error']}"
    if s.get("traceback") and state in ("paused", "failed"):
        tb = html.escape(s["traceback"].strip())
        line += f"\n\n<details><summary>{w['traceback']}</summary><pre>{tb}</pre></details>"
    return line


def _worker_queue(s: dict, w: dict) -> list[str]:
    """What the run and the answers (chat, evaluation) wait for on the one model worker: a loading run
    waits behind the answer being written (and those queued ahead of it), answers queued behind it wait
    for its first step; a running one's answers wait for the current step, a paused one's are answered
    meanwhile. A walkthrough read "2 answer(s) queued behind the current step" under a run still loading
    behind a chat answer.

    >>> _worker_queue({"state": "loading", "queued": 2, "waiting_for": 2}, STATUS_EN)
    ['waiting behind 2 answer(s): the run starts after them', "1 answer(s) queued behind the run's first step"]
    """
    state, queued, waiting = s.get("state"), s.get("queued") or 0, s.get("waiting_for") or 0
    parts = []
    if state == "stopping" and s.get("before_first_step"):
        parts.append(w["stopping.first"])
        key = "queued.plain"
    elif state == "loading":
        if waiting:
            parts.append(w["waiting.one"] if waiting == 1 else w["waiting"].format(n=waiting))
        queued -= max(0, waiting - 1)  # those queued ahead of the run's job are in `waiting`
        key = "queued.first_step"
    else:
        key = "queued.paused" if state == "paused" else "queued"
    if queued > 0:
        parts.append(w[key].format(queued=queued))
    return parts


def form_note(s: dict, custom_code: str, lang: str = "en") -> str:
    """What the Train tab says when a page (re)loads with the last run's settings in its form (a new
    user reloaded, lost their changes to the run's looping reward code and pressed Start, 2026-12-06).
    >>> form_note({"run_name": "r", "state": "stopped"}, "def f(p, c): ...").count("Rewards tab")
    1"""
    w = STATUS_ZH if lang == "zh" else STATUS_EN
    state = w.get(f"state.{s.get('state', 'idle')}", s.get("state", ""))
    active = s.get("state") in ("loading", "running", "paused", "stopping")  # Start is greyed out until it ends
    return (w["form_from_active"].format(state=state) if active else
            w["form_from_run"].format(run=s.get("run_name") or "?", state=state)) + (
        w["form_from_run.code"] if custom_code.strip() else "")


def progress_html(s: dict, lang: str = "en") -> str:
    """A plain progress bar for the Train tab."""
    w = STATUS_ZH if lang == "zh" else STATUS_EN
    total = s.get("max_steps") or 0
    done = s.get("step") or 0
    pct = 100.0 * done / total if total else 0.0
    label = html.escape(w["progress.steps"].format(done=done, total=total) if total else w["progress.none"])
    return (
        "<div style='border:1px solid var(--border-color-primary);border-radius:6px;height:22px;"
        "position:relative;overflow:hidden'>"
        f"<div style='background:var(--color-accent);opacity:.55;height:100%;width:{pct:.1f}%'></div>"
        f"<div style='position:absolute;top:0;left:8px;line-height:22px;font-size:13px'>{label}</div></div>"
    )
