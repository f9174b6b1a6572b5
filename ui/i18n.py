"""Interface text in English and Chinese, served through `gr.I18n`.

Owns: every static string of the page (tab names, labels, buttons, short explanations), keyed,
with its English and Chinese form side by side so neither can be forgotten. The browser's
language picks one (Gradio's footer Settings can switch it). The long help text of each config
field (the tooltips) is written once, in English, in `core/config.py`; its Chinese is in
`ui/zh.py` (HELP_ZH, keyed section.field), and both are served here under "h.<section>.<name>".

Gradio translates only static text in the frontend: values computed on the server (the status
line, the memory plan) are rendered by `ui/status_text.py` and `ui/views.py` in the language of the request
(`lang_of`: the browser's first language, which is also what picks the page's locale; a
switch in Gradio's footer Settings changes the static text only). Messages a run writes
(warnings, errors) stay English.

Refuses to know: layout and behaviour.
"""

from __future__ import annotations

import dataclasses

import gradio as gr

from core.app.playground import Playground
from core.config import Config, field_help
from core.data.builtin import BUILTIN_TASKS
from core.rewards.registry import list_rewards
from core.rewards import sandbox as _sandbox
from ui.views import language
from ui.zh import HELP_ZH, PRESETS_ZH, TASKS_ZH

# key: (English, 简体中文)
_SOURCE_WORDS = Playground.SOURCE_WORDS

TEXT: dict[str, tuple[str, str]] = {
    # page
    "title": ("# 💡 Aha Studio", "# 💡 Aha Studio 顿悟工作室"),
    "subtitle": (
        "Teach a language model to reason with GRPO: pick a model, data and rewards, press **Start**, "
        "watch the reward rise, then compare the base and tuned models side by side.",
        "用 GRPO 教语言模型推理：选择模型、数据和奖励函数，点击**开始**，看着奖励上升，然后并排比较基础模型和微调后的模型。",
    ),
    "status": ("Status", "状态"),
    # plot axes (Train and Compare tabs)
    "plot.step": ("step", "步"),
    "plot.reward": ("reward", "奖励"),
    "plot.tokens": ("tokens", "token 数"),
    "plot.loss": ("loss", "损失"),
    "plot.kl": ("KL", "KL"),
    "plot.fraction": ("fraction", "比例"),
    "plot.GB": ("GB", "GB"),
    "plot.phrases": ("phrases", "短语数"),
    "plot.rate": ("rate", "比率"),
    "plot.model": ("model", "模型"),
    # tabs
    "tab.model": ("1 · Model", "1 · 模型"),
    "tab.data": ("2 · Data", "2 · 数据"),
    "tab.rewards": ("3 · Rewards", "3 · 奖励"),
    "tab.train": ("4 · Train", "4 · 训练"),
    "tab.compare": ("5 · Compare", "5 · 对比"),
    "tab.export": ("6 · Export", "6 · 导出"),
    "tab.runs": ("Runs", "运行记录"),
    # model tab
    "model.intro": (
        "Choose the model to teach. The bundled default (SmolLM2-135M-Instruct) works offline and on a CPU; "
        "a larger model from the Hugging Face Hub needs a GPU and a network connection. Only a small LoRA "
        "adapter is trained: the base weights stay frozen.",
        "选择要训练的模型。内置默认模型（SmolLM2-135M-Instruct）可离线、在 CPU 上运行；来自 Hugging Face Hub 的更大模型需要 GPU 和网络。"
        "只训练一个小的 LoRA 适配器，基础权重保持冻结。",
    ),
    "model.kind": ("Model source", "模型来源"),
    "model.kind.default": ("Bundled default (offline)", "内置默认（离线）"),
    "model.kind.hub": ("Hugging Face Hub id", "Hugging Face Hub 模型 ID"),
    "model.kind.local": ("Local folder", "本地文件夹"),
    "model.lora": ("LoRA adapter", "LoRA 适配器"),
    "model.memory": ("Memory estimate", "显存估计"),
    "model.load": ("Load model now", "立即加载模型"),
    "model.gpu_only": ("4-bit needs a CUDA GPU (none found).", "4-bit 需要 CUDA GPU（未检测到）。"),
    "model.advice": (
        "💡 **Before you pick** — a model under about **1.5B parameters rarely learns to write thinking tokens "
        "on its own**: give it a worked example in the system prompt and start its answer with `<think>` (the "
        "SmolLM2 recipes in `configs/` do). A **base (non-instruct) model needs the right chat template**: set "
        "one on the Data tab (the ChatML default works for most), or it reads the prompt as plain text. With the "
        "defaults the reward moves within the first steps; with **your own task** it can take **a few hundred**.",
        "💡 **选择之前** —— 参数量低于约 **15 亿（1.5B）的模型很少能自己学会写思考过程**：请在系统提示词中给一个带步骤的示例，"
        "并让回答以 `<think>` 开头（`configs/` 中的 SmolLM2 配方就是这样做的）。**基础（非 instruct）模型需要正确的对话模板**："
        "在“数据”页设置一个（默认的 ChatML 对大多数模型可用），否则它会把提示当作普通文本。使用默认设置时，奖励在最初几步内就会变化；换成**你自己的任务**时，可能要**几百步**。",
    ),
    # data tab
    "data.intro": (
        "Questions with reference answers. Start with a built-in task, or bring a CSV / JSONL / Parquet file "
        "or a Hub dataset and tell which column holds the question and which the answer.",
        "带参考答案的问题。可以从内置任务开始，也可以上传 CSV / JSONL / Parquet 文件或填写 Hub 数据集，并指定问题列和答案列。",
    ),
    "data.kind": ("Data source", "数据来源"),
    "data.kind.builtin": ("Built-in task", "内置任务"),
    "data.kind.upload": ("Upload a file", "上传文件"),
    "data.kind.hub": ("Hub dataset", "Hub 数据集"),
    "data.builtin": ("Built-in task", "内置任务"),
    "data.upload": ("CSV / JSONL / Parquet file", "CSV / JSONL / Parquet 文件"),
    "data.hub": ("Hub dataset id (e.g. openai/gsm8k)", "Hub 数据集 ID（例如 openai/gsm8k）"),
    "data.columns": ("Column mapping", "列映射"),
    "data.preview": ("Preview", "预览"),
    "data.preview_table": ("The first questions, as the model will see them", "前几个问题（模型实际看到的样子）"),
    "data.prompting": ("Prompt and template", "提示词与模板"),
    "data.curriculum": ("Order: easy questions first", "顺序：先易后难"),
    "data.sizes": ("Sizes", "数据量"),
    # rewards tab
    "rewards.intro": (
        "The reward tells the model what *good* means. The total reward is the weighted sum of the checked "
        "rewards. A format reward teaches the `<think>…</think><answer>…</answer>` shape, a correctness reward "
        "checks the answer against the reference.",
        "奖励告诉模型什么是“好”。总奖励是所选奖励的加权和。格式奖励教模型输出 `<think>…</think><answer>…</answer>` 结构，"
        "正确性奖励把答案与参考答案比对。",
    ),
    "rewards.presets": ("Reward presets", "预设奖励"),
    "rewards.weight": ("weight", "权重"),
    "rewards.custom": ("Custom reward (Python)", "自定义奖励（Python）"),
    "rewards.custom_help": (
        "Write functions with TRL's signature `def name(prompts, completions, **kwargs) -> list[float]` "
        "(`async def` too) or import them (`from trl.rewards import accuracy_reward`): every top-level reward "
        "function is used (weight 1), or only those in a list (`reward_funcs = [...]`) or `__all__`. A function "
        "named like a preset replaces that preset. Completions arrive as `[{\"role\": \"assistant\", "
        "\"content\": ...}]`, dataset columns (e.g. `answer`, also as `solution`) as keyword lists. The code "
        "runs in a separate process with a time limit.",
        "按 TRL 的签名编写函数 `def name(prompts, completions, **kwargs) -> list[float]`（也可以是 `async def`），"
        "或直接导入（`from trl.rewards import accuracy_reward`）：每个顶层奖励函数都会被使用（权重 1），"
        "或只用列表（`reward_funcs = [...]`）或 `__all__` 中的函数。与预设同名的函数会替换该预设。"
        "补全以 `[{\"role\": \"assistant\", \"content\": ...}]` 的形式传入，数据集的列（如 `answer`，"
        "也以 `solution` 传入）以关键字列表的形式传入。代码在独立进程中运行，并有时间限制。",
    ),
    "rewards.custom_security": (
        "⚠️ **This code runs on the server**, as the app's user, with the rights of any program you start there: "
        "it can read the files the app can read (run folders, uploads, the model cache, a token saved by "
        "`hf auth login`), other processes of that user through `/proc`, and the network; it can call this "
        "app's own API and signal the app. Variables named like secrets (`HF_TOKEN`, `AHA_AUTH`, `..._API_KEY`, "
        "...) are removed from its environment, but the app's memory and the processes the app starts with its "
        "environment (torch.compile's workers, vLLM's) still hold them. Its limits stop accidents, not an "
        f"attacker: the time limit below for each call and, on Linux, {_sandbox.DEFAULT_MEMORY_MB:,} MiB of "
        f"memory over it and what it starts, {_sandbox.DEFAULT_MAX_PROCESSES} processes, and "
        f"{_sandbox.DEFAULT_OUTPUT_BYTES // 1024} KiB of its output (`print`) in the server's log, not on this "
        "page. Give the login only to people you would give a shell on this machine.",
        "⚠️ **这段代码在服务器上运行**，以本应用的用户身份、拥有你在那里启动的任何程序的权限：它可以读取应用能读取的文件"
        "（运行文件夹、上传的文件、模型缓存、`hf auth login` 保存的令牌）、通过 `/proc` 访问该用户的其他进程，以及访问网络；"
        "它还能调用本应用自己的 API、向应用发送信号。名称像密钥的环境变量（`HF_TOKEN`、`AHA_AUTH`、`..._API_KEY` 等）"
        "会从它的环境中移除，但应用的内存以及应用带着其环境启动的进程（torch.compile 的工作进程、vLLM 的）里仍有它们。"
        "它的限制只防意外，不防攻击者：每次调用受下面的时间限制；在 Linux 上，它及其启动的进程共用 "
        f"{_sandbox.DEFAULT_MEMORY_MB:,} MiB 内存，最多 {_sandbox.DEFAULT_MAX_PROCESSES} 个进程，其输出（`print`）"
        f"最多 {_sandbox.DEFAULT_OUTPUT_BYTES // 1024} KiB 写入服务器日志，不显示在本页。只把登录信息交给你愿意让其登录这台机器的人。",
    ),
    "rewards.example": ("Insert example", "插入示例"),
    "rewards.try": ("Try on samples", "在样本上试一试"),
    "rewards.try_table": (
        "Each reward on a few completions of the current model, and on an ideally formatted reference answer "
        "(total = the weighted sum of the reward columns, with the weights above)",
        "每个奖励在当前模型的几个回答以及一个格式理想的参考答案上的得分（total = 各奖励列按上方权重的加权和）",
    ),
    # train tab
    "train.intro": (
        "Each step samples a group of completions per question, scores them, and nudges the model toward the "
        "completions that scored above their group's average.",
        "每一步为每个问题采样一组回答并打分，然后把模型推向得分高于组内平均的回答。",
    ),
    "train.batch": ("Batch and sampling", "批次与采样"),
    "train.optim": ("Optimisation", "优化"),
    "train.algo": ("Algorithm", "算法"),
    "train.run": ("Run and checkpoints", "运行与检查点"),
    "train.more": ("More settings (other algorithms)", "更多设置（其他算法）"),
    "train.engine": ("vLLM engine (GPU)", "vLLM 引擎（GPU）"),
    "train.quick": ("Quick CPU settings", "CPU 快速设置"),
    "train.gpu_defaults": ("GPU defaults", "GPU 默认设置"),
    "train.start": ("▶ Start", "▶ 开始"),
    "train.pause": ("⏸️ Pause", "⏸️ 暂停"),
    "train.resume": ("⏯️ Resume", "⏯️ 继续"),
    "train.stop": ("⏹️ Stop", "⏹️ 停止"),
    "train.progress": ("Progress", "进度"),
    "train.loss_note": (
        "ℹ️ **A GRPO loss near 0 is normal**: advantages are centred on each group's mean, so the loss hovers "
        "around zero even while the model learns. Watch the **reward** instead.",
        "ℹ️ **GRPO 的 loss 接近 0 是正常的**：优势值以组内均值为中心，所以即使模型在学习，loss 也在 0 附近。请关注**奖励**曲线。",
    ),
    # the note beside the loss plot for the algorithm picked (grpo, gspo, rloo: the one above)
    "train.loss_note.online_dpo": (
        "ℹ️ **An Online DPO loss starts near 0.69** (log 2: the tuned model still equals the base) and falls as "
        "the chosen answers pull ahead of the rejected ones; a step whose answers all tie has no pair and no loss. "
        "Watch the **reward** too.",
        "ℹ️ **Online DPO 的 loss 从 0.69 左右开始**（log 2：微调后的模型仍与基础模型相同），随着被选回答领先被拒回答而下降；"
        "若某一步所有回答都打平，就没有偏好对，也没有 loss。也请关注**奖励**曲线。",
    ),
    "train.loss_note.ppo": (
        "ℹ️ **A PPO loss is the policy loss plus the value loss × its weight**: the policy part stays near 0 "
        "(advantages are whitened over each batch), so the curve mostly follows the value head's error, which falls "
        "as it learns to predict the rewards. Watch the **reward** instead.",
        "ℹ️ **PPO 的 loss 是策略损失加上价值损失 × 其权重**：策略部分保持在 0 附近（优势值在每批内做了白化），"
        "所以曲线主要反映价值头的误差，它随价值头学会预测奖励而下降。请关注**奖励**曲线。",
    ),
    "train.plot.reward": ("Reward (total and each function)", "奖励（总奖励与各奖励函数）"),
    "train.plot.loss": ("Loss", "损失"),
    # with beta 0 the trainer does not compute it (nothing uses it) and logs 0, as TRL leaves it out
    "train.plot.kl": ("KL to the base model (grpo, gspo, rloo, ppo: computed only when β > 0, 0 otherwise)",
                      "与基础模型的 KL（grpo、gspo、rloo、ppo：仅在 β > 0 时计算，否则为 0）"),
    "train.plot.length": ("Completion length (tokens)", "回答长度（token）"),
    "train.plot.zero_std": ("Groups with no reward spread (frac_reward_zero_std)", "奖励无差异的组占比"),
    "train.plot.memory": ("Peak GPU memory (GB)", "GPU 峰值显存（GB）"),
    "train.plot.ram": ("Peak RAM of the app's process, per step (GB)", "应用进程每步的内存峰值（GB）"),
    "train.aha": ("The “aha” panel", "“顿悟”面板"),
    "train.aha_note": (
        "When a model discovers that thinking longer and checking itself pays off, its completions grow and "
        "phrases like *wait*, *let me check* appear: the “aha moment” of DeepSeek-R1-Zero. Watch the **correct** "
        "completions: if they grow longer than the wrong ones, thinking is paying.",
        "当模型发现“多想一会儿、检查自己”能得到更高奖励时，回答会变长，并出现 *wait*、*let me check* 之类的短语：这就是 DeepSeek-R1-Zero 的“顿悟时刻”。"
        "请关注**正确**回答的长度：如果它们比错误回答更长，说明思考正在带来回报。",
    ),
    "train.advice": (
        "⏳ With the defaults the reward moves within the first steps; with your own task and rewards it can stay "
        "flat for **hundreds of steps** if no completion of a group scores differently. A model under about **1.5B "
        "parameters rarely learns to write thinking tokens** by itself: the default system prompt shows the format "
        "in a worked example and prefills `<think>`; keep both for your task. A **base (non-instruct) model needs the right chat template** (Data tab). β > 0 and a "
        "low learning rate keep what the model could already do (Compare tab: retention).",
        "⏳ 使用默认设置时，奖励在最初几步内就会变化；换成你自己的任务和奖励时，如果同组的回答得分都一样，奖励可能"
        "在**几百步**里都不动。参数量低于约 **1.5B 的模型很少能自己学会写思考 token**：默认的系统提示用一个示例展示"
        "格式并预填 `<think>`，在你的任务中请保留这两项。**基础（非 instruct）模型需要正确的对话模板**（数据页）。"
        "β > 0 和较低的学习率可以保住模型原有的能力（对比页：能力保持）。",
    ),
    "train.plot.aha_length": ("Length of correct and wrong completions (10-step mean)", "正确与错误回答的长度（10 步均值）"),
    "train.aha_sample": ("A sample whose thinking grew", "思考变长的样本"),
    "train.plot.aha_reflections": ("Reflection phrases per completion", "每个回答中的反思短语数"),
    "train.samples": ("Latest samples (reward = the weighted sum of the reward columns; weights on the Rewards tab)",
                      "最新样本（reward = 各奖励列的加权和；权重见奖励页）"),
    "train.details": ("Status details (JSON)", "状态详情（JSON）"),
    # compare tab
    "compare.intro": (
        "Ask both models the same question. The tuned side uses the adapter being trained (live) or any saved "
        "checkpoint. During training, answers come between two steps.",
        "向两个模型提出同一个问题。微调一侧使用正在训练的适配器（实时）或任意已保存的检查点。训练期间，回答会在两个训练步之间给出。",
    ),
    "compare.target": ("Tuned model", "微调模型"),
    "compare.refresh": ("↻ Refresh list", "↻ 刷新列表"),
    "compare.base": ("Base model", "基础模型"),
    "compare.tuned": ("Tuned model", "微调模型"),
    "compare.tuned_current": ("Tuned model · current adapter", "微调模型 · 当前适配器"),
    "compare.current_choice": ("Current adapter (live)", "当前适配器（实时）"),
    "compare.asked_from": ("System prompt and answer prefix from {source}; both models are asked with them (edit them "
                           "to ask otherwise).", "系统提示和回答前缀来自{source}；两个模型都用它们提问（修改它们即可换一种问法）。"),
    # where Compare's boxes came from: English as the manager words it (core.app.playground), Chinese here
    **{f"compare.src_{kind}": (_SOURCE_WORDS[kind], zh) for kind, zh in (
        ("checkpoint", "运行 `{run}` 的 config.yaml（{checkpoint}）"),
        ("no_config", "默认设置（{checkpoint} 没有运行配置）"),
        ("current", "当前运行 `{run}`"),
        ("defaults", "默认设置（应用启动后还没有运行；要用某次运行自己的设置，请选择它的检查点）"))},
    "compare.prompt": ("Your question (sent to both)", "你的问题（同时发给两个模型）"),
    "compare.send": ("Send to both", "发送给两者"),
    "compare.clear": ("Clear", "清空"),
    "compare.examples": ("Try these", "试试这些"),
    "compare.settings": ("Generation settings", "生成设置"),
    "compare.system": ("System prompt", "系统提示词"),
    "compare.prefix": ("Answer prefix", "回答前缀"),
    "compare.max_tokens": ("Max new tokens", "最大生成 token 数"),
    "compare.temperature": ("Temperature (0 = greedy)", "温度（0 = 贪心）"),
    "compare.eval": ("Held-out evaluation", "留出集评估"),
    "compare.eval_n": ("Questions", "题目数"),
    "compare.eval_run": ("Evaluate base vs tuned", "评估：基础 vs 微调"),
    "compare.eval_plot": ("Accuracy and format rate", "准确率与格式正确率"),
    "compare.eval_items": ("Answers", "逐题回答"),
    "compare.retention": ("Retention off the task", "任务之外的能力保持"),
    "compare.retention_note": (
        "Has training kept what the base model could do? The same fixed general prompts go to both models "
        "(no system prompt), plus held-out questions of the built-in tasks the run did not train on. **KL** is the "
        "tuned model's divergence from the base on the base's own answers (0 = unchanged); a **degenerate** answer "
        "repeats itself or runs away with tags.",
        "训练是否保住了基础模型原有的能力？同一组固定的通用提示（不带系统提示词）同时发给两个模型，另加本次训练未使用的内置任务的留出题。"
        "**KL** 是微调模型在基础模型自身回答上相对基础模型的偏离（0 = 没有变化）；**退化**回答指不断重复或标签失控的回答。",
    ),
    "compare.retention_prompts": ("General prompts", "通用提示数"),
    "compare.retention_tasks": ("Questions per other task", "每个其他任务的题目数"),
    "compare.retention_run": ("Measure retention", "测量能力保持"),
    "compare.retention_items": ("General answers", "通用回答"),
    # export tab
    "export.intro": (
        "Take the result with you: the LoRA adapter (small, loads with peft), a merged 16-bit model (loads "
        "with plain transformers), the Hugging Face Hub, or the run's config to train again headless.",
        "带走训练结果：LoRA 适配器（体积小，用 peft 加载）、合并后的 16 位模型（用 transformers 直接加载）、上传到 Hugging Face Hub，"
        "或下载本次运行的配置以便无界面重新训练。",
    ),
    "export.checkpoint": ("Checkpoint", "检查点"),
    "export.zip": ("Download adapter (.zip)", "下载适配器（.zip）"),
    "export.merge": ("Merge into a 16-bit model", "合并为 16 位模型"),
    "export.merged_to": ("Merged model folder", "合并模型所在文件夹"),
    "export.hub": ("Push to the Hub", "推送到 Hub"),
    "export.repo": ("Repository id (your-name/model-name)", "仓库 ID（用户名/模型名）"),
    "export.token": ("Hugging Face token (write access; used once, never stored)", "Hugging Face 令牌（写权限；只用一次，不保存）"),
    "export.merged": ("Upload the merged model instead of the adapter", "上传合并后的模型而不是适配器"),
    "export.private": ("Private repository", "私有仓库"),
    "export.push": ("Push", "推送"),
    "export.config": ("Download config (.yaml)", "下载配置（.yaml）"),
    "export.file": ("File", "文件"),
    # runs tab
    "runs.intro": ("Every run in the runs folder, newest first. Load a checkpoint into Compare, or resume a "
                   "stopped run.", "运行文件夹中的所有运行，最新的在前。可以把检查点加载到“对比”页，或继续一个已停止的运行。"),
    "runs.table": ("Runs", "运行"),
    "runs.refresh": ("↻ Refresh", "↻ 刷新"),
    "runs.run": ("Run", "运行"),
    "runs.checkpoint": ("Checkpoint", "检查点"),
    "runs.load": ("Load into Compare", "加载到对比页"),
    "runs.resume": ("Resume this run", "继续此运行"),
    "runs.run_code": ("Run its reward code", "运行其奖励代码"),
    "runs.run_code_info": ("Needed once for a run folder whose custom reward code this app has not run (copied in "
                           "or edited by hand): read it in the run's config.yaml first",
                           "对本应用未运行过其自定义奖励代码的运行文件夹（复制而来或手动编辑）需勾选一次：请先在其 config.yaml 中阅读代码"),
    "common.message": ("Message", "消息"),
    # tooltips set by a tab instead of a field's own help
    "h.model.load_in_4bit.no_gpu": (
        field_help("model", "load_in_4bit") + " — no CUDA GPU here: off.",
        HELP_ZH["model.load_in_4bit"] + " —— 这里没有 CUDA GPU：已关闭。",
    ),
    "data.prompt_column_info": ("Built-in tasks map their columns themselves.", "内置任务会自己对应列。"),
    "data.answer_column_info": ("GSM8K-style '... #### 42' keeps only 42.", "GSM8K 风格的 '... #### 42' 只保留 42。"),
}

# labels of config fields: key "f.<section>.<name>"
FIELD_LABELS: dict[str, tuple[str, str]] = {
    "model.name_or_path": ("Model (hub id or folder)", "模型（Hub ID 或文件夹）"),
    "model.dtype": ("Weights dtype", "权重精度"),
    "model.load_in_4bit": ("4-bit base (QLoRA)", "4-bit 基础模型（QLoRA）"),
    "model.lora_r": ("LoRA rank r", "LoRA 秩 r"),
    "model.lora_alpha": ("LoRA alpha", "LoRA alpha"),
    "model.lora_dropout": ("LoRA dropout", "LoRA dropout"),
    "model.lora_target_modules": ("LoRA target modules", "LoRA 目标模块"),
    "model.gradient_checkpointing": ("Gradient checkpointing", "梯度检查点"),
    "model.offload_activations": ("Offload activations to CPU", "激活值卸载到 CPU"),
    "model.compile_layers": ("Compile layers (torch.compile)", "编译解码层（torch.compile）"),
    "data.source": ("Source in use", "当前数据来源"),
    "data.subset": ("Subset (configuration)", "子集（配置名）"),
    "data.split": ("Training split", "训练划分"),
    "data.eval_split": ("Held-out split", "留出划分"),
    "data.prompt_column": ("Question column", "问题列"),
    "data.answer_column": ("Answer column", "答案列"),
    "data.system_prompt": ("System prompt", "系统提示词"),
    "data.response_prefix": ("Answer starts with", "回答开头"),
    "data.stop_at": ("Answer ends at", "回答结束于"),
    "data.chat_template": ("Chat template (Jinja)", "对话模板（Jinja）"),
    "data.train_size": ("Training questions", "训练题目数"),
    "data.eval_size": ("Held-out questions", "留出题目数"),
    "data.seed": ("Data seed", "数据随机种子"),
    "data.hold_out_by": ("Hold out by", "留出方式"),
    "data.curriculum_column": ("Curriculum: difficulty column", "课程：难度列"),
    "data.curriculum_steps": ("Curriculum: all rows from step", "课程：从第几步起用全部行"),
    "rewards.custom_code": ("Custom reward code", "自定义奖励代码"),
    "rewards.custom_timeout_s": ("Time limit per call (s)", "每次调用时间限制（秒）"),
    "algorithm.algorithm": ("Algorithm", "算法"),
    "algorithm.loss_type": ("Loss type", "损失类型"),
    "algorithm.num_generations": ("Completions per question (G)", "每题回答数（G）"),
    "algorithm.prompts_per_step": ("Questions per step", "每步题目数"),
    "algorithm.micro_batch_size": ("Micro-batch size", "微批大小"),
    "algorithm.auto_micro_batch": ("Auto micro-batch aims for", "自动微批目标"),
    "algorithm.num_iterations": ("Passes per batch (μ)", "每批更新次数（μ）"),
    "algorithm.epsilon": ("Clip ε (low)", "裁剪 ε（下界）"),
    "algorithm.epsilon_high": ("Clip ε (high)", "裁剪 ε（上界）"),
    "algorithm.beta": ("KL coefficient β", "KL 系数 β"),
    "algorithm.use_bias_correction_kl": ("Bias-corrected KL", "偏差校正 KL"),
    "algorithm.scale_rewards": ("Scale advantages by", "优势缩放方式"),
    "algorithm.mask_truncated_completions": ("Ignore truncated completions", "忽略被截断的回答"),
    "algorithm.vllm_importance_sampling_correction": ("Correct for vLLM's sampling (IS)", "校正 vLLM 采样偏差（重要性采样）"),
    "algorithm.vllm_importance_sampling_mode": ("IS correction mode", "重要性采样校正方式"),
    "algorithm.vllm_importance_sampling_clip_max": ("IS ratio max", "重要性比率上限"),
    "algorithm.vllm_importance_sampling_clip_min": ("IS ratio min", "重要性比率下限"),
    "algorithm.temperature": ("Sampling temperature", "采样温度"),
    "algorithm.top_p": ("Top-p", "Top-p"),
    "algorithm.max_prompt_length": ("Max prompt tokens", "最大提示 token 数"),
    "algorithm.max_completion_length": ("Max completion tokens", "最大回答 token 数"),
    "algorithm.learning_rate": ("Learning rate", "学习率"),
    "algorithm.lr_scheduler": ("LR schedule", "学习率调度"),
    "algorithm.warmup_steps": ("Warm-up steps", "预热步数"),
    "algorithm.weight_decay": ("Weight decay", "权重衰减"),
    "algorithm.max_steps": ("Training steps", "训练步数"),
    "algorithm.gradient_accumulation_steps": ("Gradient accumulation", "梯度累积"),
    "algorithm.max_grad_norm": ("Max gradient norm", "最大梯度范数"),
    "algorithm.seed": ("Seed", "随机种子"),
    # the other algorithms' settings (Online DPO, PPO) and the rollouts' form, in "More settings"
    "algorithm.dpo_beta": ("DPO beta (Online DPO)", "DPO beta（Online DPO）"),
    "algorithm.dpo_pair_rule": ("Preference pair (Online DPO)", "偏好对的选法（Online DPO）"),
    "algorithm.judge": ("Judge (Online DPO)", "评判方式（Online DPO）"),
    "algorithm.judge_model": ("Judge model (Online DPO)", "评判模型（Online DPO）"),
    "algorithm.gae_lambda": ("GAE lambda (PPO)", "GAE lambda（PPO）"),
    "algorithm.gamma": ("Discount gamma (PPO)", "折扣因子 gamma（PPO）"),
    "algorithm.vf_coef": ("Value loss weight (PPO)", "价值损失权重（PPO）"),
    "algorithm.cliprange_value": ("Value clip range (PPO)", "价值裁剪范围（PPO）"),
    "run.merged_rollouts": ("Rollouts on merged weights", "在合并权重上采样"),
    "run.output_dir": ("Runs folder", "运行文件夹"),
    "run.run_name": ("Run name (empty = automatic)", "运行名称（留空自动生成）"),
    "run.save_steps": ("Checkpoint every N steps", "每 N 步保存检查点"),
    "run.keep_checkpoints": ("Keep newest N checkpoints", "保留最新 N 个检查点"),
    "run.log_samples": ("Samples logged per step", "每步记录样本数"),
    "run.engine": ("Rollout engine", "采样引擎"),
    "run.vllm_gpu_memory_utilization": ("GPU memory share (0 = auto)", "显存占比（0 = 自动）"),
    "run.vllm_max_num_seqs": ("Max concurrent sequences (0 = auto)", "最大并发序列数（0 = 自动）"),
    "run.vllm_max_num_batched_tokens": ("Batched-token budget (0 = auto)", "批处理 token 预算（0 = 自动）"),
    "run.vllm_enable_prefix_caching": ("Prefix caching", "前缀缓存"),
    "run.vllm_enforce_eager": ("No CUDA graphs (faster start)", "不用 CUDA Graph（启动更快）"),
    "run.vllm_cuda_graphs": ("CUDA graphs captured", "捕获的 CUDA Graph"),
    "run.vllm_kv_cache_dtype": ("KV-cache precision", "KV 缓存精度"),
    "run.vllm_weights_dtype": ("Weights vLLM samples from", "vLLM 采样所用权重精度"),
    "run.vllm_free_kv_between_steps": ("Free KV cache during updates", "更新时释放 KV 缓存"),
}

for _key, _pair in FIELD_LABELS.items():
    TEXT[f"f.{_key}"] = _pair


def config_field_keys() -> list[str]:
    """'section.field' of every config field, in declared order."""
    return [f"{section.name}.{f.name}" for section in dataclasses.fields(Config)
            for f in dataclasses.fields(section.default_factory)]


# help text of config fields (the tooltips): key "h.<section>.<name>"; English from core/config.py.
# A field newer than its translation shows English in both (tests/test_i18n.py fails on it).
for _key in config_field_keys():
    _english = field_help(*_key.split("."))
    TEXT[f"h.{_key}"] = (_english, HELP_ZH.get(_key, _english))


# the built-in tasks' and the reward presets' descriptions: "task.<name>", "preset.<name>"; English from
# core/data/builtin.py and reward_presets/, Chinese from ui/zh.py (English in both where it has none yet)
for _name, _task in BUILTIN_TASKS.items():
    TEXT[f"task.{_name}"] = (f"{_name} — {_task.description}", f"{_name} — {TASKS_ZH.get(_name, _task.description)}")
for _spec in list_rewards():
    TEXT[f"preset.{_spec.name}"] = (_spec.description, PRESETS_ZH.get(_spec.name, _spec.description))


def _table(index: int) -> dict[str, str]:
    return {key: pair[index] for key, pair in TEXT.items()}


# zh-CN is the locale browsers send; zh and zh-TW fall back to the same (simplified) text.
I18N = gr.I18n(en=_table(0), **{"zh-CN": _table(1), "zh-TW": _table(1), "zh": _table(1)})


def t(key: str):
    """The translatable text for `key` (KeyError for an unknown key: every key has both languages)."""
    if key not in TEXT:
        raise KeyError(f"no interface text {key!r}")
    return I18N(key)


def en(key: str) -> str:
    """The English text of `key`, for values computed on the server."""
    return TEXT[key][0]


def text_in(key: str, lang: str) -> str:
    """The text of `key` in `lang` ("en" or "zh"), for a property the page does not translate itself
    (a plot's axis titles: Vega drew gr.I18n's raw "__i18n__{...}" now and then)."""
    return TEXT[key][1 if lang == "zh" else 0]


def lang_of(request: gr.Request | None) -> str:
    """The language ("en" or "zh") to render server-side text in for this request."""
    headers = getattr(request, "headers", None) or {}
    return language(headers.get("accept-language"))
