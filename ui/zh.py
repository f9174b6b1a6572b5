"""Chinese (简体中文) for the words that are written once, in English, elsewhere.

Owns: the Chinese of every config field's help text (`HELP_ZH`, keyed `section.field`; the English
is `core/config.py`'s `_f(..., help)`), of the memory plan's fragments (`PLAN_ZH`, the keys and
{placeholders} of `core.memory.words.WORDS`), of the model tab's memory estimate (`MEMORY_ZH`) and
of the status line (`STATUS_ZH`) and of Try on samples' stages (`TRY_ZH`; the English of these
three beside them in `ui/views.py` and `ui/status_text.py`), of the Train and Compare tabs' messages
and the short words of tables and plots (`SAY_ZH`, `WORDS_ZH`; the English in `ui/words.py`). Values computed on the
server (the status line, the plan) are rendered in the browser's language by those two;
static text goes through `gr.I18n` (`ui/i18n.py`). No gradio import here.

Refuses to know: layout, and how any number was made.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------
# help text of every config field (tooltips), keyed section.field

HELP_ZH: dict[str, str] = {
    # model
    "model.name_or_path": "Hugging Face Hub ID（例如 Qwen/Qwen2.5-1.5B-Instruct）或本地文件夹。留空 = 内置的离线默认模型 "
                          "SmolLM2-135M-Instruct。",
    "model.dtype": "权重精度。'auto' = 在原生支持的 GPU 或 CPU 上用 bfloat16，否则用 float32。",
    "model.load_in_4bit": "QLoRA：把冻结的基础模型保存为 4-bit NF4（bitsandbytes，仅限 GPU）。权重显存约减为 1/4。",
    "model.lora_r": "LoRA 秩。常用 8-64；越大学得越多，但占用内存也越多。",
    "model.lora_alpha": "LoRA 缩放分子（缩放 = alpha / r）。通常取秩的 2 倍。",
    "model.lora_dropout": "LoRA 路径上的 dropout。强化学习中通常为 0。",
    "model.lora_target_modules": "加 LoRA 适配器的线性层。默认是所有注意力与 MLP 投影层。",
    "model.gradient_checkpointing": "反向传播时重新计算激活值以节省内存（更慢，约 30%）。",
    "model.offload_activations": "只把每个解码层的输入保存在锁页 CPU 内存中，其余在反向传播时重新计算（仅限 GPU）。"
                                 "回答越长，节省越多。",
    "model.compile_layers": ("用于 GPU：训练时用 torch.compile 编译每个解码层（所有层共用一个图，任意序列长度）：内核更少、更融合，"
                             "小微批的大部分时间正花在这里（H100、1.5B：每次前向+反向缩短到 0.6-0.7 倍，bf16 或 4 位）。"
                             "第一步要等编译（约 50 秒，有缓存后更短）；在 CPU 上得不偿失。需要 C 编译器。"),
    # data
    "data.source": "问题的来源：'builtin:largest'、'builtin:decimal_compare'、'builtin:arithmetic'、'builtin:countdown'、"
                   "'builtin:addition'、'builtin:multiplication'、'builtin:chain_arithmetic'、'builtin:long_chain_arithmetic'、"
                   "CSV/JSONL/Parquet 文件、数据集文件夹，或 Hub 数据集 ID。",
    "data.subset": "Hub 数据集的配置名（例如 GSM8K 的 'main'）。没有则留空。",
    "data.split": "数据来源有命名划分时，用于训练的划分。",
    "data.eval_split": "留作评估的划分。留空 = 从训练划分中切出 `eval_size` 行。",
    "data.prompt_column": "存放问题文本的列。",
    "data.answer_column": "存放参考答案的列。GSM8K 风格的 '... #### 42' 只保留 42。",
    "data.system_prompt": "放在每个问题之前的系统消息。",
    "data.response_prefix": "每个回答开头的文本，写在对话模板的 assistant 标记之后（R1-Zero 风格的 '<think>'）。"
                            "模型从这里接着写；奖励、样本和对话都把它当作回答的一部分。对从不自己写标签的小模型有帮助。",
    "data.stop_at": "补全写出这段文本后即结束（保留该文本，与 EOS 相同）：采样、评估和对话都一样，"
                    "回答在结束标签处停下，不会重复到长度上限。留空 = 只有 EOS 或长度上限结束补全。",
    "data.chat_template": "Jinja 对话模板。留空 = 使用分词器自带的模板；没有模板的基础模型使用一个简单的默认模板。",
    "data.train_size": "要生成（内置任务）或最多保留（文件）的训练行数。",
    "data.eval_size": "用于评估的留出题目数上限（没有评估划分的文件会留出十分之一的不同题目，至少 5 个，至多此数）。",
    "data.hold_out_by": "没有评估划分的文件如何切分：question = 按不同题目，每题一行，其重复行不用于训练；row = 按行（2026-12-08 之前的运行）。",
    "data.seed": "内置任务生成以及训练/留出划分所用的随机种子。",
    "data.curriculum_column": ("先易后难：一个表示题目难度的数值列（链式运算任务的 'steps'）。训练从该列值最小的行开始，"
                               "更大的值依次加入，最后一级在旁边设定的步数加入；留出评估始终使用所有行。"
                               "留空 = 每一步都从全部行中抽取。"),
    "data.curriculum_steps": "设置了课程列时：从这一步起抽取全部行（中间各级均匀加入）。0 = 一开始就用全部行。",
    # rewards
    "rewards.names": "使用的预设奖励（见注册表）。总奖励是它们的加权和。",
    "rewards.weights": "每个奖励一个权重，顺序相同，各在 -1000 到 1000 之间。留空 = 各预设的默认权重。",
    "rewards.custom_code": "额外奖励函数的 Python 源码，使用 TRL 的签名 "
                           "`def my_reward(prompts, completions, **kwargs) -> list[float]`。在独立进程中运行，并有时间限制。",
    "rewards.custom_timeout_s": "自定义奖励代码每次调用的时间限制。",
    # algorithm
    "algorithm.algorithm": "训练方法。grpo：组内归一化的优势值（DeepSeekMath）。gspo：使用序列级重要性比率的 grpo"
                           "（Qwen，arXiv:2507.18071）。rloo：留一法基线（Ahmadian 等，2024）。online_dpo：在采样得到的"
                           "最好与最差回答对上做一步 DPO，由奖励或评判者排序（Guo 等，2024，arXiv:2402.04792）。ppo：由价值头"
                           "和 GAE 得到逐 token 的优势值（Schulman 等，2017；Ouyang 等，2022）。",
    "algorithm.loss_type": "token 损失如何平均。grpo：先在每个序列内平均，再在序列间平均（有长度偏差）。bnpo：在微批的所有"
                           " token 上平均。dr_grpo：求和 / (批大小 x max_completion_length)（Dr. GRPO，arXiv:2503.20783）。"
                           "dapo：在整个批次的所有 token 上平均（DAPO，arXiv:2503.14476；TRL 的默认值）。",
    "algorithm.num_generations": "G：每个提示采样的回答数。优势值在同一组回答之间比较。",
    "algorithm.prompts_per_step": "每个优化步的不同提示数（批大小 = prompts_per_step x num_generations）。",
    "algorithm.micro_batch_size": "满长度时每次前向/反向传播的序列数。0 = 自动：在 GPU 上由内存规划器选择（见“自动微批目标”；"
                                  "默认取所需内存不超过采样 KV 缓存的最大值，该缓存在训练时是空闲的：峰值最低）；在 CPU 上为 8，一步放不进可用内存时更少。"
                                  "越大训练越快，需要的内存也越多。回答较短的步在相同 token 数内每次跑 2 倍、4 倍……的序列（bnpo 除外）。",
    "algorithm.auto_micro_batch": "微批为 0（自动）时在 GPU 上如何选择。lowest_memory：训练所需内存不超过采样；两次更新之间 AdamW 的动量存放在主机内存中。fastest："
                                  "能放进 GPU 空闲内存 90% 的最大微批，直到每次传播已让 GPU 满载为止（在 H100 上 1.5B、1280 token 时"
                                  "取 8 中的 4：每步缩短 22%，多用 1.4 GiB；8 并不更快，却多用 1.6 GiB）。",
    "algorithm.num_iterations": "μ：对每批采样结果做的优化遍数。大于 1 时裁剪才会起作用。",
    "algorithm.epsilon": "重要性比率的裁剪下界（PPO 的 epsilon）。",
    "algorithm.epsilon_high": "裁剪上界。DAPO 的 clip-higher 用 0.28；与 epsilon 相同则为对称裁剪。",
    "algorithm.beta": "与参考模型（关闭适配器的基础模型）之间 KL 项的系数。0 = 没有 KL 项，与 DAPO 和 Dr. GRPO 相同；"
                      "DeepSeekMath 用 0.04。",
    "algorithm.use_bias_correction_kl": "把 KL 项乘以重要性比率，使其梯度成为无偏的反向 KL 梯度（DeepSeek-V3.2，"
                                        "arXiv:2512.02556；TRL 的默认值）。只在 beta > 0 时有影响。",
    "algorithm.scale_rewards": "把优势值除以组内、整个批次的奖励标准差，或不除（Dr. GRPO 建议不除）。",
    "algorithm.mask_truncated_completions": "把在 max_completion_length 处被截断的回答排除在损失之外（DAPO）。",
    "algorithm.vllm_importance_sampling_correction": "按训练模型对 vLLM 所采样 token 的概率给每条回答的损失加权（TRL 的默认值）："
                                                     "vLLM 的算子以及折叠进 bf16 权重的适配器，给出的概率与训练时的前向略有不同。"
                                                     "不需要额外的前向：比率来自训练那一遍。只用于 vLLM 引擎上的 grpo 与 gspo。"
                                                     "top_p < 1 时 vLLM 的概率是截断后的（与 TRL 相同）：每个比率都 <= 1，长回答权重更小。",
    "algorithm.vllm_importance_sampling_mode": "vLLM 校正的加权方式。token_truncate：每个 token 的比率裁剪到 [下限, 上限]；"
                                               "token_mask：超出范围的 token 不计入；sequence_truncate / sequence_mask"
                                               "（TRL 的默认值）：每条回答一个比率（各 token 之积），裁剪，或整条回答不计入损失。",
    "algorithm.vllm_importance_sampling_clip_max": "vLLM 校正比率的上限（TRL 默认 3）。",
    "algorithm.vllm_importance_sampling_clip_min": "vLLM 校正比率的下限；0 = 无下限（TRL 的 None）。",
    "algorithm.temperature": "采样时的温度。",
    "algorithm.top_p": "采样时的核采样（nucleus）。1.0 = 关闭。",
    "algorithm.max_prompt_length": "超过这么多 token 的提示会从左侧截断。",
    "algorithm.max_completion_length": "采样回答的最大长度（token 数）。",
    "algorithm.learning_rate": "LoRA 权重的 AdamW 学习率。常用 1e-5..1e-4。",
    "algorithm.lr_scheduler": "学习率调度方式。",
    "algorithm.warmup_steps": "线性预热步数。",
    "algorithm.weight_decay": "AdamW 权重衰减。",
    "algorithm.max_steps": "要训练的优化步数。",
    "algorithm.gradient_accumulation_steps": "累积进每个优化步的批次数（每批 prompts_per_step 个提示）：每步采样并评分 "
                                             "prompts_per_step x 此值 个提示（每个 G 个回答），逐个微批次累加全部梯度后只做"
                                             "一次 AdamW 更新，与此值为 1、提示数为 prompts_per_step x 此值 时的更新相同。"
                                             "所需内存和时间也与之相同：一次反向传播占用多少由 micro_batch_size 决定，而非此值。",
    "algorithm.max_grad_norm": "把梯度范数裁剪到此值。0 = 不裁剪。",
    "algorithm.seed": "采样、提示顺序和初始化所用的随机种子。",
    "algorithm.dpo_beta": "online_dpo：DPO 损失 -log sigmoid(beta x (选中回答的对数比 - 拒绝回答的对数比)) 中拉向参考模型"
                          "的强度。DPO 通常用 0.1（Rafailov 等，2023）；越小，适配器可以偏离得越远。",
    "algorithm.dpo_pair_rule": "online_dpo：一个提示的 G 个回答中哪两个组成一对。best_vs_worst：排名最高对最低。"
                               "random_pair：随机两个，按排名排序（同 TRL 的 Online DPO）。",
    "algorithm.judge": "online_dpo：由谁给回答排序。留空 = 奖励函数。'self' = 本次运行的基础模型（关闭适配器），问它"
                       "“A 和 B 哪个答案更好？”。http(s) URL = 兼容 OpenAI 的对话接口（例如 http://localhost:8000/v1），"
                       "问同样的问题；OPENAI_API_KEY 中的密钥只会发给 OpenAI 的 API 或运维人员在 AHA_JUDGE_KEY_URLS 中列出的地址。",
    "algorithm.judge_model": "online_dpo：发送给评判接口的模型名（当 judge 是 URL 时）。",
    "algorithm.gae_lambda": "ppo：GAE 的 lambda。1 = 蒙特卡洛回报（无偏差，方差最大）；越小越信任价值头"
                            "（Schulman 等，2016，arXiv:1506.02438）。",
    "algorithm.gamma": "ppo：每个 token 的折扣。对大语言模型通常取 1.0（奖励在最后才给出）。",
    "algorithm.vf_coef": "ppo：价值头损失相对策略损失的权重（TRL 的 PPO 默认值）。",
    "algorithm.cliprange_value": "ppo：在裁剪的价值损失中，价值头的新预测与旧预测之差不超过此值。",
    # run
    "run.output_dir": "存放运行的文件夹，每次运行一个子文件夹。",
    "run.run_name": "本次运行的文件夹名。留空 = 时间戳加任务名。",
    "run.save_steps": "每 N 步写一个检查点（适配器、优化器、随机数状态）。",
    "run.keep_checkpoints": "只保留最新的 N 个检查点（0 = 全部保留）。",
    "run.log_samples": "每步为样本表保留的回答数。",
    "run.engine": "采样引擎。auto = 在装有 vLLM 的 GPU 上用 vLLM，否则用 Hugging Face generate。",
    "run.merged_rollouts": "每步的采样使用把适配器合并进去的基础权重（W + scale x B x A，采样后逐位还原），引擎解码时不需要 "
                           "LoRA 内核：采样更快，模型相同（仅差 bf16 舍入）。适用于 16/32 位基础模型（GPU 或 CPU）；"
                           "4-bit 基础模型通过适配器采样。对话和评估总是使用适配器。关闭 = 采样也通过适配器。",
    "run.vllm_gpu_memory_utilization": "vLLM 占用的 GPU 显存比例（权重 + KV 缓存）。0 = 根据空闲显存和本次运行的规划确定。",
    "run.vllm_max_num_seqs": "vLLM 同时解码的最大序列数。0 = 一步的采样数（提示数 x G），至少 16。",
    "run.vllm_max_num_batched_tokens": "vLLM 一个调度步（预填充分块）的 token 预算。0 = max(8192, 提示长度 + 回答长度)。",
    "run.vllm_enable_prefix_caching": "复用共享提示前缀的 KV 缓存（同一提示的 G 个样本共享它）。",
    "run.vllm_enforce_eager": "跳过 CUDA Graph 捕获：启动快 1-3 分钟，解码慢约 2 倍。适合短运行和小模型。",
    "run.vllm_cuda_graphs": "vLLM 捕获哪些 CUDA Graph。all = 它的默认（解码和预填充，批大小最多为同时解码序列数的两倍）。"
                            "decode = 只为解码步捕获，批大小最多为该数：需要捕获和保存的 Graph 更少；预填充不用 Graph。"
                            "在应用共享引擎上的运行使用该引擎的设置。",
    "run.vllm_free_kv_between_steps": "在训练器做前向/反向时释放 vLLM 的 KV 缓存，在下一次采样前取回。关闭可在内存充足时"
                                      "（小模型）每步省一点时间。",
    "run.vllm_kv_cache_dtype": "KV 缓存精度。fp8 使其内存减半：可以采样更长或更多，精度略有损失。",
    "run.vllm_weights_dtype": "vLLM 采样（rollout、对话、评估）所用权重的精度。auto = 模型自身精度，与训练器共享：只有一份。"
                              "fp8 = vLLM 自己的 fp8 副本（仅权重量化，Marlin 内核；需 CUDA GPU 和 16 位基座）：每个解码"
                              "token 读取的字节减半，多占约基座一半大小的显存；每步把调好的权重送进去。其概率与训练器的"
                              "不同：请保持 vLLM 校正开启，并用 token_truncate。",
}

# ---------------------------------------------------------------------------
# the memory plan's fragments: core.memory.words.WORDS, key by key

PLAN_ZH: dict[str, str] = {
    "peak": "预计峰值 {peak}",
    "phase.sampling": "（采样时）",
    "phase.training": "（训练时）",
    "of_free": "，空闲 {free}",
    "parts": "：权重 {weights}，适配器 + 优化器 {adapter}，采样 KV 缓存 {kv}",
    "kv_freed": "（训练时释放）",
    "moments_host": "，优化器动量 {moments} 在两次更新之间存放于主机内存",
    "activations": "，激活值 {activations}（微批 {mbs}）",
    "loss_buffers": "，损失缓冲区 {loss}",
    "engine_extras": "，引擎额外占用 {extra}",
    "cuda": "，CUDA 上下文 {outside}。",
    "cuda_vllm": "，CUDA 上下文与 vLLM 内核 {outside}。",
    "note.fastest": "微批 {mbs}（自动，最快：能放进空闲 {free} 的 {share} 的最大微批）。",
    "note.fastest_saturated": "微批 {mbs}（自动，最快：每次 {tokens} 个 token 估计已让 GPU 满载（在 H100 上以 1.5B 测得）；"
                              "更大的微批多占显存而不更快；回答较短的步会把几个微批合成一次传播）。",
    "note.lowest": "微批 {mbs}（自动：训练所需不超过采样的 {budget} KV 缓存，该缓存在训练时释放）。",
    "note.one_too_big": "微批 1（自动）；即使一个序列的前向/反向（{one}）也超过采样的 {budget} KV 缓存：激活值卸载可以降低它。",
    "note.one_too_big_offload": "微批 1（自动）；即使一个序列的前向/反向（{one}）也超过采样的 {budget} KV 缓存。",
    "note.lowered": "为放得下，微批从 {before} 降到 {mbs}。",
    "note.rank_above_width": "LoRA 秩 {rank} 超过模型宽度（{width}）：任何层最多只能用到 {width}，多出的部分只占内存、没有作用。",
    "does_not_fit": "放不下：请减小回答长度或 G、打开激活值卸载，或以 4-bit 加载基础模型。",
    "cpu.peak": "CPU 运行：每步峰值约需 {peak} 内存",
    "cpu.of_available": "（可用 {available}）",
    "cpu.parts": "：权重 {weights}（{dtype}），适配器 + 优化器 {adapter}，采样的 KV 缓存 {kv} 与训练的激活值 {activations}"
                 "（微批 {mbs}，按每个序列都达到 {tokens} 个 token 的上限计算：回答更短时占用更少）取较大者，另有训练额外占用的 {besides}。",
    "cpu.does_not_fit": "可能放不下：请减小回答长度、G 或微批。",
    "cpu.try_checkpointing": "或在模型页打开梯度检查点：训练时一次只保留一层的激活，而不是每一层的。",
    "cpu.will_not_fit": "放不下：需要可用内存的 {times} 倍。请减小回答长度、G 或微批。",
    "engine.loaded": "使用已加载的 vLLM 引擎（LoRA 秩最高 {rank}，上下文 {context} 个 token，KV 缓存 {kv}）。",
    "engine.loaded_waves": "使用已加载的 vLLM 引擎（LoRA 秩最高 {rank}，上下文 {context} 个 token，KV 缓存 {kv}）——"
                           "采样分批进行。",
    "engine.built": "为它新建 vLLM 引擎：LoRA 秩最高 {rank}，上下文 {context} 个 token，KV 缓存 {kv}。",
    "engine.rebuilt": "为它重建 vLLM 引擎（{reasons}）：LoRA 秩最高 {rank}，上下文 {context} 个 token，KV 缓存 {kv}。",
    "unknown": "内存规划：此模型未知。",
    "unknown_note": "内存规划：此模型未知。{note}",
}

# ---------------------------------------------------------------------------
# the model tab's memory estimate and the status line: ui/views.py's MEMORY_EN and ui/status_text.py's STATUS_EN

MEMORY_ZH: dict[str, str] = {
    "unknown": "内存估算：加载模型后才能得知。{note}",
    "loaded": "已加载",
    "not_loaded": "尚未加载",
    "line": "**{params} M 参数**（{state}，在 {device} 上）· 权重 **{weights}** + LoRA 适配器（{adapter_params} M 参数）"
            "{adapter} + 其梯度 {grads} + AdamW 状态 {optimizer} = **{total}**{where}，不含激活值和 KV 缓存"
            "（它们随批大小和回答长度增长）。",
    "ram": " 内存（可用 {available}）",
    "gpu": " 显存",
}

STATUS_ZH: dict[str, str] = {
    "idle": "⚪ **空闲**：还没有运行。按顺序设置各页，然后在“训练”页点击**开始**。",
    "idle.earlier": "⚪ **空闲**：应用启动后还没有运行；“运行记录”页有 {n} 个之前的运行（它们的检查点可在“对比”页回答）。"
                    "设置各页，然后在“训练”页点击**开始**。",
    "state.idle": "空闲",
    "state.loading": "加载中",
    "state.running": "运行中",
    "state.paused": "已暂停",
    "state.stopping": "停止中",
    "state.finished": "已完成",
    "state.stopped": "已停止",
    "state.failed": "失败",
    "state.interrupted": "已中断",
    "run": "运行 `{run}`",
    "step": "第 **{step}/{max_steps}** 步",
    "eta": "预计剩余 {eta}",
    "eta_first": "预计剩余 ≤ {eta}（仅据含预热的一步估算）",
    "no_pairs": "第 {step} 步没有偏好对：每个问题被比较的回答不分高下，Online DPO 在这一步没有学到东西（它需要同一问题的一个较好和一个较差的回答）",
    "tps": "{tps} token/秒",
    "reward": "奖励 {reward}",
    "elapsed": "已用 {elapsed}",
    "queued": "{queued} 个回答排在当前步之后",
    "queued.paused": "{queued} 个回答在排队，暂停期间会作答",
    "queued.first_step": "{queued} 个回答排在运行的第一步之后",
    "queued.plain": "{queued} 个回答在排队",
    "waiting.one": "正在写的回答完成后，运行才开始",
    "waiting": "排在 {n} 个回答之后：它们完成后，运行才开始",
    "stopping.first": "运行会在第一步之前结束：不训练任何内容",
    "fix_rewards": " —— 请在“奖励”页修正，然后点击**继续**。",
    "paused_hint": "**继续**从这里接着训练；**停止**会保存检查点并结束运行（停止之后才能用“开始”新建运行）。",
    "paused_hint.first": "**继续**从这里接着训练；**停止**会结束运行（还没有可保存的步；停止之后才能用“开始”新建运行）。",
    "checkpoint": "已保存检查点 `{name}`",
    "checkpoint.resume": "已保存检查点 `{name}`：**继续**会从它接着训练",
    "form_from_run": "ℹ️ 表单显示的是上一次运行 `{run}`（{state}）的设置：**开始**会按所示设置训练，包括数据页的数据源。",
    "form_from_run.code": "那次运行还用了它自己的奖励代码：如不需要，请先清空奖励页的编辑器再开始。",
    "form_from_active": "ℹ️ 表单显示的是正在进行的运行（{state}）的设置。",
    "traceback": "错误堆栈",
    "progress.steps": "{done}/{total} 步",
    "progress.none": "尚无运行",
}

TRY_ZH: dict[str, str] = {
    "data": "1/3 · 读取题目",
    "sampling": "2/3 · 用当前模型采样 {completions} 个回答（每个最多 {max_tokens} 个 token）",
    "sampling.load_model": "，先加载模型",
    "sampling.after_step": "，等当前训练步结束后",
    "scoring": "3/3 · 用 {rewards} 个奖励函数给 {completions} 个回答打分",
    "done": "完成 · 已用 {rewards} 个奖励函数给 {completions} 个回答打分",
}

# sentences the server writes on the tabs (`ui/words.py` SAY_EN, same keys)
SAY_ZH: dict[str, str] = {
    "started": "🟢 已开始运行 `{name}`：每完成一步，图表就会更新。",
    "started.code": "它也会用“奖励”页中你自己的奖励代码打分（如不需要，请在那里清空编辑器）。",
    "started.toast": "运行 {name} 已开始",
    "control": "{action}：{state}",
    "control.stopping": "停止：正在停止（当前这一步完成后保存检查点；上方状态会告诉你何时完成）",
    "control.stopping.first": "停止：运行会在第一步之前取消（不训练任何内容；若模型正在加载，会先加载完；上方状态会告诉你何时完成）",
    "control.pausing": "暂停：正在暂停（先完成当前这一步；上方状态会告诉你何时完成）",
    "resumed": "继续：{state}，从第 {step} 步起，使用该运行自己的奖励（{names}）",
    "resumed.tab": "继续：{state}，从第 {step} 步起，使用“奖励”页中的奖励（{names}）",
    "plan.unavailable": "🧮 无法给出内存规划：{error}",
    "data.columns": "列：{columns}。{guessed}",
    "data.guessed": "推测：问题 = `{p}`，答案 = `{a}`。训练前请检查这两项。",
    "data.one_column": "只有一列：训练前请选择答案列。",
    "data.unnamed": "⚠️ 没有一列的名称像{roles}（例如 `question`、`prompt`；`answer`、`solution`）：按表中位置取了 "
                    "{took}。训练前请在上方（列映射）选择正确的列。",
    "data.took": "`{column}` 作为{role}",
    "data.and": "，",
    "data.or": "或",
    "data.nothing_unset": "\n\n没有从 `{name}` 读入任何内容，也还没有设置数据源：请选择一个内置任务，或上传一个可读的文件。",
    "data.answer_moved": "\n\n⚠️ `{guessed}` 列没有可用于训练的答案，因此取 `{took}` 作为答案列：请在“列映射”中核对。",
    "data.nothing_kept": "\n\n没有从 `{name}` 读入任何内容。数据源不变：`{source}`（“开始”会用它训练）；上传一个可读的文件即可更换。",
    "data.sizes": "训练题 **{n}** 道 · 留出 **{held}** 道 · 来源 `{source}`",
    "data.sizes.one": "训练题 **{n}** 道 · 留出 **{held}** 道 · 来源 `{source}`",
    "data.sizes.distinct": "训练行 **{n}** 行（不同题目 **{distinct}** 道）· 留出 **{held}** 道 · 来源 `{source}`",
    "model.loaded": "✅ 已在 {device} 上加载 **{name}**",
    "model.loaded.toast": "模型已加载",
    "model.no_estimate": "无法估计内存：{error}",
    "model.uses.bundled": "加载、开始训练和“在样本上试一试”都使用内置的离线模型 **{default}**。",
    "model.uses.unnamed": "⚠️ 输入框是空的，所以加载、开始训练和“在样本上试一试”都使用内置的 **{default}**：要用别的模型，请输入它。",
    "model.uses.named": "加载、开始训练和“在样本上试一试”都使用 **`{name}`**。",
    "model.bundled_box": "{default}（内置，离线）",
    "runs.loaded": "✅ `{run}` · `{checkpoint}` 现在是“对比”页中的微调模型",
    "runs.loaded.toast": "已把 {run} · {checkpoint} 载入“对比”页",
    "runs.resumed": "⏵ 已从第 {step} 步继续 `{run}`：请在“训练”页查看",
    "export.zip": "✅ 适配器 zip：`{path}`",
    "export.config": "✅ 配置：`{path}`（用 `python -m scripts.train --config config.yaml` 再次训练）",
    "export.merged": "✅ 合并后的 16 位模型已保存在服务器的 `{path}`（一个文件夹：可用 transformers 从那里加载，或勾选下方“上传合并后的模型”推送到 Hub）",
    "export.pushed": "✅ 已推送到 {url}",
    "aha.none": "*记录几步之后，这里会显示运行早期和后期各一个样本。*",
    "aha.early": "早期：{block}",
    "aha.late": "后期：{block}",
    "aha.block": "**第 {step} 步** · {verdict} · 思考 {words} 个词 · {question}",
    "ask.empty": "请先输入一个问题。",
    "ask.empty_answer": "（空回答）",
    "switch": "↪ *从这里开始：{adapter}。*",
    "adapter.current": "当前适配器",
    "adapter.of": "`{name}` 的适配器",
    "adapter.current_of": "当前适配器（运行 `{run}` 的第 {step} 步）",
    "adapter.current_none": "当前适配器（新建的，没有任何运行的训练步：即基础模型）",
    "retention.tuned": "微调模型 = {adapter}。",
    "same.not_read": "基础模型和微调模型给出了相同的回答（无法读取适配器：{error}）",
    "same.unmoved": "ℹ️ 基础模型和微调模型给出了相同的回答，因为{adapter}还没有变化：全部 {matrices} 个 LoRA B "
                    "矩阵都恰好为零，所以它*就是*基础模型。只有当同一问题的几个回答得分不同（奖励有差异：才有优势和梯度）时，"
                    "训练步才会改变它；请看“训练”页的奖励图。",
    "same.moved": "ℹ️ 基础模型和微调模型给出了相同的回答，尽管{adapter}已经变化（{matrices} 个 LoRA B 矩阵中 "
                  "{nonzero} 个非零，‖ΔW‖ = {norm}）：还不足以改变这个回答。换一个问题、把温度调到 0 以上，或运行留出集评估。",
    "eval.base": "⏳ 1/2 · 基础模型正在回答 {questions} 个留出问题（贪心，最多 {max_tokens} 个 token）",
    "eval.tuned": "⏳ 2/2 · 微调模型正在回答同样的 {questions} 个问题",
    "eval.done": "\n\n对 {n} 个留出问题的贪心回答；微调 = {adapter}；回答最多 {max_tokens} 个 token（最大回答 token 数）。",
    "eval.cut": " **在那里被截断、没有答完的：基础 {base}，微调 {tuned}**（在给出答案之前被截断的记 0 分）；"
                "用更大的最大回答 token 数训练的运行会有足够的空间答完。",
    "retention.kl": "在基础模型对 {n} 个通用提示的回答上，KL(基础 ‖ 微调)：每个 token **{kl}**（对数概率下降 "
                    "{drop}；0 = 没有变化）。",
    "retention.general": "通用提示：{what}",
    "retention.task": "builtin:{name}：准确率（{how}，{n} 个问题）",
}

# the short words of tables and plots (`ui/words.py` WORDS): English -> Chinese
WORDS_ZH: dict[str, str] = {
    "step": "步", "reward": "奖励", "advantage": "优势", "reference answer": "参考答案", "completion": "回答",
    "question": "问题", "answer": "答案", "rendered_prompt": "模型看到的提示", "total": "总奖励", "source": "来源",
    "run": "运行", "state": "状态", "max_steps": "总步数", "algorithm": "算法", "model": "模型", "data": "数据", "rewards": "奖励函数",
    "checkpoints": "检查点", "updated": "更新时间", "prompt": "提示", "base": "基础", "tuned": "微调",
    "kl": "KL", "tuned_flags": "微调回答的异常", "base_correct": "基础正确", "tuned_correct": "微调正确",
    "base_cut": "基础被截断", "tuned_cut": "微调被截断", "questions": "问题数",
    "reference": "参考答案", "correct": "答对", "wrong": "答错", "repeated n-grams": "重复的 n-gram",
    "repeated characters": "重复的字符", "runaway tags": "失控的标签",
    "stop": "停止", "pause": "暂停",
    "mean": "平均", "max": "最大", "min": "最小", "loss": "损失", "frac_reward_zero_std": "奖励无差异的比例",
    "peak memory": "峰值显存", "peak RAM": "峰值内存", "reflections": "反思",
    "accuracy": "准确率", "last-number accuracy": "最后一个数的准确率", "format rate": "格式正确率",
    "off the task": "任务之外", "degenerate answers": "退化的回答", "answers with think/answer tags":
    "带 think/answer 标签的回答", "cut at the token limit": "在 token 上限处被截断", "last number": "最后一个数",
    "in tags": "标签内",
}
# a run's state, as the status line says it
WORDS_ZH.update({k.split(".", 1)[1]: v for k, v in STATUS_ZH.items() if k.startswith("state.")})

# the built-in tasks' descriptions (`core/data/builtin.py`, each task's `description`), by task name
TASKS_ZH: dict[str, str] = {
    "decimal_compare": "两个小数中哪个更大或更小（9.11 还是 9.9？）。答案：那个数。",
    "arithmetic": "需要 2-4 步计算的应用题（买、卖、分……）。答案：一个整数；answer_raw 列是以 '#### N' 结尾的解题过程。",
    "countdown": "用 3-4 个数和 + - * / 凑出目标数，每个数最多用一次。答案：目标数；另有 numbers、target 列和一个解。",
    "addition": "两个两位数相加（47 + 38）。最小的模型的第一个任务。答案：和。",
    "multiplication": "一位数乘两位数（6 * 47）；共 712 道不同的题。答案：积。",
    "largest": "四个两位数中最大的那个。答案：那个数。",
    "chain_arithmetic": "一个乘法口诀再加一两步小运算（4 * 3 + 5 - 2）：即使 135M 的模型，一步步思考也有回报。"
                        "答案：结果；answer_raw 列是以 '#### N' 结尾的步骤。",
    "long_chain_arithmetic": "同上，但乘法口诀之后有一到四步小运算（7 * 4 - 6 + 8 + 3）：基础模型大多只会做短的，"
                             "所以随着模型学习，答对所需的思考会变长。答案：结果；steps 列：步数（2-5）。",
}

# the reward presets' descriptions (`reward_presets/*.py` DESCRIPTION), by preset name
PRESETS_ZH: dict[str, str] = {
    "correctness": "提取出的答案与 `answer` 列一致时为 1：文本相同、数值相同，或经 math-verify 判定相等。",
    "countdown_equation": "答案只用给定的数（每个最多一次）和 + - * / ( ) 凑出目标数时为 1。",
    "exact_match": "提取出的答案在统一大小写、空格和 $...$ 之后等于 `answer` 列时为 1。",
    "format_soft": "<think>...</think> 块之后某处有 <answer>...</answer> 块时为 1。",
    "format_strict": "回答恰好是 <think>...</think> 接着 <answer>...</answer>、别无其他时为 1。",
    "integer_answer": "提取出的答案是整数（如 42、-7、1,234）时为 1。",
    "length_penalty": "在数据中每个问题的 `length_budget` 列（字符数；没有该列则为 1000）以内为 0，到预算的两倍时为 -1。",
    "math_equivalence": "math-verify 判定提取出的答案与 `answer` 列相等时为 1（\\frac{1}{2} = 0.5）。",
    "numeric_match": "提取出的答案与 `answer` 列是同一个数时为 1（相对容差 1e-6）。",
    "reflection_bonus": "think 块中每个反思短语（wait、let me check、hmm……）加 0.1，最多 0.5。",
    "xml_tag_count": "<think>、</think>、<answer>、</answer> 各恰好出现一次时各得 0.25；</answer> 之后的文字扣分。",
}
