"""The Chinese interface: every config field's help, the memory plan, the model's memory estimate,
the status line and Try on samples' stages have Chinese with the same keys and placeholders as
their English; the server renders them in the language of the request."""

from __future__ import annotations

import dataclasses
import re
import string
from types import SimpleNamespace

import pandas as pd
import pytest

from core.memory import planner, words
from core.config import Config, field_help
from ui import status_text, views, zh
from ui import words as ui_words

CJK = re.compile(r"[\u4e00-\u9fff]")


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def config_fields() -> list[str]:
    import dataclasses

    return [f"{s.name}.{f.name}" for s in dataclasses.fields(Config) for f in dataclasses.fields(s.default_factory)]


def test_every_config_field_has_chinese_help():
    fields = config_fields()
    assert len(fields) > 60
    missing = [k for k in fields if k not in zh.HELP_ZH]
    assert not missing, f"add these to ui/zh.py HELP_ZH: {missing}"
    stale = sorted(set(zh.HELP_ZH) - set(fields))
    assert not stale, f"no such config fields: {stale}"
    for key in fields:
        text = zh.HELP_ZH[key]
        assert CJK.search(text) and text != field_help(*key.split(".")), key


@pytest.mark.parametrize("english,chinese", [
    (words.WORDS, zh.PLAN_ZH), (status_text.STATUS_EN, zh.STATUS_ZH), (views.MEMORY_EN, zh.MEMORY_ZH),
    (views.TRY_EN, zh.TRY_ZH), (ui_words.SAY_EN, zh.SAY_ZH)], ids=["plan", "status", "memory", "try", "say"])
def test_chinese_tables_match_their_english(english, chinese):
    assert set(chinese) == set(english)
    for key, text in english.items():
        assert placeholders(chinese[key]) == placeholders(text), key


def test_help_is_served_through_i18n_in_both_languages():
    from ui.i18n import I18N, TEXT, lang_of

    assert TEXT["h.algorithm.beta"] == (field_help("algorithm", "beta"), zh.HELP_ZH["algorithm.beta"])
    assert I18N.translations["zh-CN"]["h.model.lora_r"] == zh.HELP_ZH["model.lora_r"]
    assert I18N.translations["en"]["h.model.lora_r"] == field_help("model", "lora_r")
    assert lang_of(SimpleNamespace(headers={"accept-language": "zh-CN,zh;q=0.9"})) == "zh"
    assert lang_of(SimpleNamespace(headers={})) == lang_of(None) == "en"


def test_form_widgets_take_their_tooltip_from_the_translation_table():
    import gradio as gr

    from ui.forms import Form

    with gr.Blocks():
        form = Form(Config())
        widget = form.field("algorithm", "num_generations")
    assert getattr(widget.info, "key", None) == "h.algorithm.num_generations"


def test_status_line_in_chinese_and_english():
    s = {"state": "paused", "run_name": "r1", "step": 3, "max_steps": 10, "eta_seconds": 185,
         "tokens_per_second": 412.4, "reward": 0.25, "elapsed": 70, "queued": 2,
         "pause_reason": "reward 'flaky' failed", "error": "boom"}
    en, cn = status_text.status_line(s), status_text.status_line(s, "zh")
    assert en.startswith("⏸️ **paused** · run `r1` · step **3/10** · ETA 3m 05s · 412 tokens/s · reward 0.250")
    assert "fix it on the Rewards tab" in en
    assert cn.startswith("⏸️ **已暂停** · 运行 `r1` · 第 **3/10** 步 · 预计剩余 3 分 05 秒 · 412 token/秒 · 奖励 0.250 · "
                         "已用 1 分 10 秒 · 2 个回答在排队，暂停期间会作答")  # paused: no step to queue behind
    assert "请在“奖励”页修正" in cn and "❌ boom" in cn  # what the run wrote stays as written
    assert status_text.status_line({}, "zh").startswith("⚪ **空闲**")
    # an ETA from the first (warm-up) step alone is said to be a bound
    first = {"state": "running", "step": 1, "max_steps": 8, "eta_seconds": 1050, "eta_first_step": True}
    assert "ETA ≤ 17m 30s (from one step, which included the warm-up)" in status_text.status_line(first)
    assert "预计剩余 ≤ 17 分 30 秒（仅据含预热的一步估算）" in status_text.status_line(first, "zh")
    assert "ETA 17m 30s" in status_text.status_line({**first, "eta_first_step": False})
    # Online DPO's step without a pair says it learned nothing (its loss plot just stops there)
    dpo = {"state": "running", "step": 2, "max_steps": 8, "no_pairs_step": 2}
    assert status_text.status_line(dpo).endswith("⚠️ step 2 had no preference pair: the answers compared for each "
                                                 "question came out even, so Online DPO learned nothing from it (it needs a better and a "
                                                 "worse answer to the same question)")
    assert "第 2 步没有偏好对" in status_text.status_line(dpo, "zh")
    assert "preference pair" not in status_text.status_line({**dpo, "no_pairs_step": None})
    # paused: Start is greyed out, the line says what Resume and Stop do; an ended run names its checkpoint
    assert "**Stop** ends the run with its checkpoint" in en and "**停止**会保存检查点" in cn
    stopped = {"state": "stopped", "run_name": "r1", "step": 3, "max_steps": 10, "checkpoint": "step-000003"}
    assert status_text.status_line(stopped).endswith("checkpoint `step-000003` saved: **Resume** continues the run from it")
    assert status_text.status_line(stopped, "zh").endswith("已保存检查点 `step-000003`：**继续**会从它接着训练")
    done = status_text.status_line({**stopped, "state": "finished"})
    assert done.endswith("checkpoint `step-000003` saved") and "Resume" not in done
    assert "checkpoint" not in status_text.status_line({**stopped, "state": "running"})
    first = status_text.status_line({**s, "step": 0})  # paused before its first step: a stop keeps nothing
    assert "no step to keep yet" in first and "with its checkpoint" not in first
    # a reload: the form holds the last run's settings (its reward code named when it had some)
    ended = status_text.form_note({"run_name": "r1", "state": "stopped"}, "def f(prompts, completions): ...")
    assert ended.startswith("ℹ️ The form shows the settings of the last run, `r1` (stopped): **Start**")
    assert ended.endswith("clear the Rewards tab's editor to start without it.")
    assert "Rewards" not in status_text.form_note({"run_name": "r1", "state": "stopped"}, "  ")
    active = status_text.form_note({"run_name": None, "state": "loading"}, "", "zh")
    assert active == "ℹ️ 表单显示的是正在进行的运行（加载中）的设置。"  # no "?" for a run still loading


def _plan_words_left_in_english(text: str) -> list[str]:
    """English words in a Chinese plan besides units, dtypes and names (GB, KV, LoRA, CUDA, vLLM, ...)."""
    allowed = {"GB", "KV", "LoRA", "CUDA", "CPU", "vLLM", "G", "float32", "bfloat16", "token", "bit"}
    return [w for w in re.findall(r"[A-Za-z][A-Za-z0-9-]*", text) if w not in allowed]


def test_memory_plans_in_chinese():
    c = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                        num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)
    cfg = Config()
    cpu = planner.plan_cpu(c, cfg, micro_batch_size=8, available_bytes=2**30)
    gpu = planner.plan_config(c, cfg, free_bytes=2**20, total_bytes=2**20)
    for p in (cpu, gpu):
        text = views.memory_plan_markdown({"text": p.summary(), "sentences": p.sentences()}, "zh")
        assert text.startswith("🧮 ") and CJK.search(text) and not _plan_words_left_in_english(text), text
        assert views.memory_plan_markdown({"text": p.summary(), "sentences": p.sentences()}) == "🧮 " + p.summary()
    cn = views.memory_plan_markdown({"text": "", "sentences": cpu.sentences()}, "zh")
    assert cn.startswith(f"🧮 CPU 运行：每步峰值约需 {words.gb(cpu.total_peak)} 内存（可用 1.00 GB）")
    # the GPU defaults on 1 GB of RAM: far past 4x what is available, so it will not fit (not "may")
    times = cpu.total_peak / 2**30
    assert times > 4 and cn.endswith(f"放不下：需要可用内存的 {times:,.0f} 倍。请减小回答长度、G 或微批。"
                                     "或在模型页打开梯度检查点：训练时一次只保留一层的激活，而不是每一层的。"), cn
    near = dataclasses.replace(cpu, available=cpu.total_peak // 2, checkpointing=True)  # twice the RAM: it may not fit
    assert views.memory_plan_markdown({"text": "", "sentences": near.sentences()}, "zh").endswith(
        "可能放不下：请减小回答长度、G 或微批。")


def test_memory_estimate_in_ram_on_a_cpu_and_in_chinese():
    info = {"params": 135e6, "loaded": False, "device": "cpu", "weights_gb": 0.5, "adapter_params": 4.9e6,
            "adapter_gb": 0.02, "gradients_gb": 0.02, "optimizer_gb": 0.04, "total_gb": 0.58, "available_gb": 19.5}
    assert "= **0.58 GB** of RAM (19.50 GB available), before activations" in views.memory_markdown(info)
    cn = views.memory_markdown(info, "zh")
    assert cn.startswith("**135.0 M 参数**（尚未加载，在 cpu 上）") and "= **0.58 GB** 内存（可用 19.50 GB）" in cn
    gpu = views.memory_markdown({**info, "device": "cuda:0", "available_gb": None})
    assert "= **0.58 GB** of GPU memory, before" in gpu


def test_plots_start_empty_and_count_whole_steps():
    empty = views.long_frame(pd.DataFrame(), {"loss": "loss"})
    assert views.plot_value(empty) is None and views.step_axis(empty) == [1, 4]
    frame = views.long_frame(pd.DataFrame({"step": [1, 2, 3, 4, 5, 6], "loss": [0.1] * 6}), {"loss": "loss"})
    assert views.plot_value(frame) is frame and views.step_axis(frame) == [1, 6]


def test_value_axis_holds_every_line_with_room():
    """The aha length plot's axis: the correct and the wrong line inside it, neither on its edge."""
    m = pd.DataFrame({"step": [1, 2, 3], "completions/mean_length_correct": [80.0, 150.0, 260.0],
                      "completions/mean_length_incorrect": [120.0, 110.0, 100.0]})
    frame = views.aha_length_frame(m, window=1)
    lo, hi = views.value_axis(frame)
    assert lo < 80.0 and hi > 260.0 and lo >= 0
    assert views.value_axis(views.long_frame(pd.DataFrame(), {"loss": "loss"})) is None
    assert views.value_axis(pd.DataFrame({"value": [0.0, 0.0]})) == [0.0, 1.0]  # a flat 0 still gets room


def test_samples_headers_break_after_underscores_and_keep_their_values():
    """A header breaks between words only: a reward named `correctness_reward` kept its column as wide as
    the whole name and left the completion ~12 characters a line at 820 px (a walkthrough). Each
    underscore in a header is followed by a zero-width space, in either language; the values are as given."""
    samples = pd.DataFrame([{"step": 2, "question": "q", "completion": "c", "answer": "4", "reward": 1.25,
                             "advantage": -0.5, "correctness_reward": 1.0, "format_reward": 0.25,
                             "xml_tag_count": 0.125}])
    rewards = ["correctness_reward", "format_reward", "xml_tag_count"]
    for lang, own in (("en", ["step", "reward", "advantage", "reference answer", "completion", "question"]),
                      ("zh", ["步", "奖励", "优势", "参考答案", "回答", "问题"])):
        view = views.samples_view(samples, lang=lang)
        assert list(view.columns) == [*own[:2], "correctness_\u200breward", "format_\u200breward",
                                      "xml_\u200btag_\u200bcount", *own[2:]]
        assert [c.replace(views.HEADER_BREAK, "") for c in view.columns][2:5] == rewards  # the names, as named
        assert view.iloc[0].tolist() == [2, 1.25, 1.0, 0.25, 0.125, -0.5, "4", "c", "q"]
    assert samples.columns.tolist()[-3:] == rewards  # the manager's frame is not renamed
    assert not any(views.HEADER_BREAK in c for c in views.samples_view(None).columns)


def test_the_completion_is_the_samples_second_column_from_the_right():
    """The page's CSS (ui/studio.py) gives the samples table's second column from the right a floor of
    about 30 characters: that column is the completion, with rows or without, in either language."""
    from ui.studio import CSS

    assert "#samples-table .header-cell:nth-last-child(2) {min-width: 19em}" in CSS
    samples = pd.DataFrame([{"step": 1, "question": "q", "completion": "c", "answer": "4", "reward": 0.5,
                             "advantage": 0.0, "format_reward": 0.5}])
    for lang, completion in (("en", "completion"), ("zh", "回答")):
        assert views.samples_view(samples, lang=lang).columns[-2] == completion
        assert views.samples_view(None, lang=lang).columns[-2] == completion
        assert views.samples_view(samples.drop(columns=["advantage", "answer"]), lang=lang).columns[-2] == completion


def test_try_on_samples_shows_scores_first_and_its_stages():
    df = pd.DataFrame({"question": ["q"] * 2, "answer": ["1"] * 2, "source": ["model", "reference"],
                       "completion": ["a", "b"], "format_soft": [0.1234, 1.0], "correctness": [0.0, 1.0],
                       "total": [0.0617, 1.5]})
    view = views.try_view(df)
    assert list(view.columns)[:3] == ["total", "format_soft", "correctness"]
    assert list(view.columns)[-1] == "question" and view["format_soft"].tolist() == [0.123, 1.0]
    facts = {"completions": 3, "max_tokens": 64, "load_model": False, "after_step": True}
    assert views.try_stage_text("sampling", facts) == ("2/3 · sampling 3 completions of up to 64 tokens from the "
                                                       "current model, after the current training step")
    assert views.try_stage_text("sampling", facts, "zh") == "2/3 · 用当前模型采样 3 个回答（每个最多 64 个 token），等当前训练步结束后"


def test_error_headlines_name_the_box_and_keep_their_text():
    """ui.common.warn: a config field named in a headline gets the page's label beside it, once (not
    in paths, identifiers or code, nor in the user's traceback); angle brackets show as text, but
    inside `code`, where Markdown shows them as typed."""
    from core.errors import AhaError
    from ui.common import warn, with_labels

    assert with_labels("algorithm.num_generations = 1: must be between 2 and 256; algorithm.num_generations") == (
        "“Completions per question (G)” (algorithm.num_generations) = 1: must be between 2 and 256; "
        "algorithm.num_generations")
    for untouched in ("runs/a/data.seed/config.yaml", "https://x.org/docs/data.source", "data.seed-based",
                      "cfg.data.source", "`data.seed`", "my_data.seed"):
        assert with_labels(untouched) == untouched, untouched
    shown = warn(AhaError("no reward function found: write `def r(prompts, completions) -> list[float]`"
                          " (<custom reward code>, line 1)\n\nTraceback: random.seed(data.seed)"))
    assert "`def r(prompts, completions) -> list[float]`" in shown  # as typed inside code
    assert "(&lt;custom reward code&gt;, line 1)" in shown  # as text outside it
    assert "random.seed(data.seed)" in shown  # the traceback is the user's, left as is


def test_short_words_of_tables_and_plots_have_chinese():
    assert set(zh.WORDS_ZH) == set(ui_words.WORDS)
    for english, chinese in zh.WORDS_ZH.items():
        assert chinese != english and (CJK.search(chinese) or chinese in ("KL",)), english


def test_tables_plots_and_messages_in_chinese():
    """What the server renders for a Chinese page: table columns and states, the held-out table, the
    retention summary, the aha samples, durations; and Train's messages are cleared in either language."""
    from ui.tabs.train import message_outlived

    samples = pd.DataFrame([{"step": 3, "question": "q", "completion": "c", "answer": "4", "reward": 1.5,
                             "advantage": 0.25, "correctness": 1.0}])
    assert list(views.samples_view(samples, lang="zh").columns) == ["步", "奖励", "correctness", "优势", "参考答案",
                                                                   "回答", "问题"]
    runs = views.runs_frame([{"run": "r", "state": "stopped", "step": 3}], "zh")
    assert runs.columns[:3].tolist() == ["运行", "状态", "步"] and runs["状态"].tolist() == ["已停止"]
    result = {w: {"accuracy": a, "accuracy_flexible": 0.5, "format_rate": 1.0, "n": 20} for w, a in (("base", 0.1), ("tuned", 0.9))}
    assert views.eval_markdown(result, "zh").splitlines()[0] == "| | 准确率 | 最后一个数的准确率 | 格式正确率 | 问题数 |"
    assert views.eval_frame(result, "zh")["bar"].tolist()[:2] == ["准确率 · 基础", "准确率 · 微调"]
    grown = {w: {"step": s, "correct": s > 5, "thought_words": s, "question": "q", "completion": "c"}
             for w, s in (("early", 1), ("late", 9))}
    assert views.aha_sample_markdown(grown, "zh").startswith("早期：**第 1 步** · 答错 · 思考 1 个词")
    assert "后期：**第 9 步** · 答对" in views.aha_sample_markdown(grown, "zh")
    g = {"n": 2, "kl": 0.01, "logprob_drop": 0.0, "tokens": 9, "items": [{"prompt": "p", "base": "b", "tuned": "t",
         "kl": 0.01, "tuned_flags": ["runaway tags"]}], **{w: {"degenerate_rate": 0.0, "tag_rate": 0.5,
         "truncated_rate": 0.0} for w in ("base", "tuned")}}
    assert views.retention_markdown({"general": g}, "zh").splitlines()[2] == "| 任务之外 | 基础 | 微调 |"
    assert views.retention_items_frame({"general": g}, "zh").iloc[0].tolist()[-1] == "失控的标签"
    assert ui_words.duration(45, "zh") == "45 秒" and ui_words.duration(3725, "zh") == "1 小时 02 分"
    answers = ui_words.frame_in(pd.DataFrame({"base_correct": [True, False]}), "zh", values=("base_correct",))
    assert answers.to_dict("list") == {"基础正确": ["是", "否"]}  # Compare's answers table: no "true"/"false"
    for lang in ("en", "zh"):
        started = ui_words.say("started", lang, name="r")
        assert message_outlived(("r", 1, "stopped", 2), started, 2) and not message_outlived(("r", 1, "running", 2), started, 2)
        stopping = ui_words.say("control.stopping", lang)
        assert message_outlived(("r", 1, "stopped", 2), stopping) and not message_outlived(("r", 1, "stopping", 2), stopping)
        for key in ("resumed", "resumed.tab"):
            resumed = ui_words.say(key, lang, state="running", step=4, names="a")
            assert message_outlived(("r", 5, "finished", 3), resumed, 3) and not message_outlived(("r", 5, "running", 3), resumed, 3)
        pausing = ui_words.say("control.pausing", lang)
        assert message_outlived(("r", 1, "paused", 2), pausing) and not message_outlived(("r", 1, "running", 2), pausing)
    # the prefixes that clear them are whole words, never empty (an empty one would clear every message)
    from ui.tabs.train import IN_FLIGHT, RESUMED, STARTED
    assert all(len(prefix) >= 3 for prefix in STARTED + RESUMED + IN_FLIGHT), (STARTED, RESUMED, IN_FLIGHT)
    assert not message_outlived(("r", 1, "stopped", 2), "✅ loaded **m** on cpu", 2)


def test_every_widget_has_a_label_in_both_languages():
    """A field missing from FIELD_LABELS showed its raw name ("dpo beta", "vf coef") on either page."""
    from ui.i18n import FIELD_LABELS, config_field_keys

    not_widgets = {"rewards.names", "rewards.weights"}  # the Rewards tab's checkboxes and weights
    missing = [k for k in config_field_keys() if k not in FIELD_LABELS and k not in not_widgets]
    assert not missing, f"add these to ui/i18n.py FIELD_LABELS: {missing}"


def test_tasks_and_reward_presets_are_described_in_chinese():
    """The Data tab's task list and the Rewards tab's presets read as English on the Chinese page before."""
    from core.data.builtin import BUILTIN_TASKS
    from core.rewards.registry import list_rewards
    from ui.i18n import TEXT

    assert set(zh.TASKS_ZH) == set(BUILTIN_TASKS) and set(zh.PRESETS_ZH) == {s.name for s in list_rewards()}
    for key in [f"task.{n}" for n in BUILTIN_TASKS] + [f"preset.{s.name}" for s in list_rewards()]:
        english, chinese = TEXT[key]
        assert CJK.search(chinese) and not CJK.search(english), key
    assert TEXT["task.largest"][0] == "largest — " + BUILTIN_TASKS["largest"].description
