"""CPU probe (issue 18 part A): 10 steps of the candidate defaults (builtin:largest, worked example,
<think> prefix, correctness/format_strict/xml_tag_count, lr 1e-4 constant, Quick CPU batch); prints reward per step.
   python bench/first_steps_probe.py [--set-style overrides: algorithm.learning_rate=5e-5 ...]
"""
import sys, time, json, yaml
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
import torch
torch.set_num_threads(2)
from core.config import Config
from core.rl.algorithms import make_trainer
from core.data import load_task_data
from core.config_text import apply_overrides
import tempfile
base = {
 "data": {"source": "builtin:largest", "train_size": 500, "eval_size": 20,
          "system_prompt": "You are a careful assistant. Think step by step inside <think> and </think>, then give only the final answer inside <answer> and </answer>.\nExample:\nQuestion: Which is the largest of 31, 74, 58, 19?\n<think>74 is more than 31, 58 and 19.</think>\n<answer>74</answer>",
          "response_prefix": "<think>"},
 "rewards": {"names": ["correctness", "format_strict", "xml_tag_count"]},
 "algorithm": {"num_generations": 4, "prompts_per_step": 2, "micro_batch_size": 8, "max_completion_length": 64,
               "max_steps": 10, "learning_rate": 1e-4, "lr_scheduler": "constant", "warmup_steps": 0},
 "run": {"output_dir": tempfile.mkdtemp(), "run_name": "e", "save_steps": 1000},
}
cfg = Config.from_dict(base)
cfg = apply_overrides(cfg, sys.argv[1:])
t0 = time.time()
tr = make_trainer(cfg, task=load_task_data(cfg.data))
rows = []
def on_step(r):
    m = r.metrics
    rows.append(m)
    print(f"step {len(rows)} reward {m['reward']:.3f} zero_std {m.get('frac_reward_zero_std'):.2f} grad {m.get('grad_norm',0):.3f} len {m['completions/mean_length']:.0f} t {time.time()-t0:.0f}s", flush=True)
tr.on_step = on_step
tr.train()
r = [m["reward"] for m in rows]
print("ARGS", sys.argv[1:], "first5", sum(r[:5])/5, "last5", sum(r[5:10])/5, "time", time.time()-t0)
