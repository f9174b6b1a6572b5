"""What the app does with a model besides training: chat with the base, the current adapter or a
checkpoint (asked as its run trained), held-out evaluation, retention, trying rewards on a few
completions, data previews and uploads.

Owns: `Playground`, a part of `RunManager` (its jobs run on the worker; during a run, between
steps). Refuses to know: the RL step, the UI.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable

import pandas as pd

from core.errors import user_message
from core.runs.access import AccessError
from core.config import DataConfig, ModelConfig, RewardsConfig
from core.app.loaded import model_key
from core.app.messages import ManagerError, reward_message


class Playground:
    """Chat, evaluation, retention, reward trials, previews (see the module docstring)."""

    def _resolve_target(self, target: str):
        """(adapter ref or None) for 'base', 'current' or a checkpoint path; on the worker."""
        if target in (None, "", "base"):
            return None
        if target == "current":
            if self._trainer is not None and self._trainer.adapter is not None:
                return self._trainer.adapter
            return self._engine.update_adapter(self._model)  # the fresh (untrained) adapter
        path = self._checkpoint_path(target)
        key = str(path)
        if key not in self._adapters or not self._engine.has_adapter(self._adapters[key]):
            try:
                self._adapters[key] = self._engine.load_adapter(key)
            except Exception as e:
                raise ManagerError(f"could not load the checkpoint {path.name}: {user_message(e)}") from e
        return self._adapters[key]

    def _ensure_model_for(self, target: str) -> None:
        """Load the right base model for `target` (a checkpoint knows its base) unless a run holds it."""
        if target not in (None, "", "base", "current"):
            path = self._checkpoint_path(target)
            want = self._checkpoint_model_cfg(path)
            try:
                rank = int(json.loads((path / "adapter_config.json").read_text()).get("r") or 0)
            except (OSError, ValueError):
                rank = 0
            limit = self._engine.limits()["max_lora_rank"] if self._engine is not None else None
            fits = limit is None or rank <= limit
            if self._model is not None and model_key(want)[0] == self._model_key[0] and fits:
                return
            if self.is_active() and self._model is not None:
                why = (f"was trained on {want.name_or_path or 'the bundled default model'}" if fits else
                       f"has LoRA rank {rank}, more than the engine holds ({limit})")
                raise ManagerError(f"this checkpoint {why}: it needs another engine than the active run's; "
                                   "wait for the run to finish")
            run_cfg = self._engine_cfg(dataclasses.replace(want, lora_r=max(rank, want.lora_r))) if not fits else None
            self._ensure_model(want, run_cfg=run_cfg)
            return
        if self._model is None:
            self._ensure_model(self.default_model)

    # where `chat_settings` found them, in words (the page says the same in its language: ui/tabs/compare.py)
    SOURCE_WORDS = {"checkpoint": "the config.yaml of run `{run}` ({checkpoint})",
                    "no_config": "the defaults ({checkpoint} has no run config)",
                    "current": "the current run `{run}`",
                    "defaults": "the defaults (no run since the app started; pick a checkpoint for a run's own)"}

    def chat_settings(self, target: str = "current") -> dict:
        """How `target` was trained to be asked: {system_prompt, response_prefix, chat_template} of
        its run's config.yaml (a checkpoint), of the active or last run ('current', 'base'), else
        the defaults; `source` says which in words (shown beside the Compare tab's boxes), `source_kind`
        and `source_where` the same as data (a `SOURCE_WORDS` key and its fields)."""
        from core.evaluation.chat import prompt_settings

        if target not in (None, "", "base", "current"):
            path = self._checkpoint_path(target)
            cfg = self._checkpoint_config(path)
            where = {"run": path.parent.parent.name, "checkpoint": path.name}
            kind = "checkpoint" if cfg is not None else "no_config"
        else:
            cfg = self.run_config()
            where = {"run": self._run_name or "(not started)"}
            kind = "current" if cfg is not None else "defaults"
        return {**prompt_settings(cfg or self.default_config()), "source": self.SOURCE_WORDS[kind].format(**where),
                "source_kind": kind, "source_where": where}

    def chat(self, prompt: str, target: str = "base", system_prompt: str | None = None,
             max_tokens: int = 256, temperature: float = 0.0, response_prefix: str | None = None,
             asked_as: str | None = None) -> str:
        """One answer to `prompt` from the base model, the current adapter or a checkpoint, prefix included.

        The system prompt, answer prefix and chat template are those `asked_as` (default: `target`)
        was trained with (`chat_settings`); `system_prompt` and `response_prefix` replace theirs. The
        Compare tab asks base and tuned alike, both as the tuned checkpoint's run did. Served on the
        worker; during training it waits for the end of the current step.
        """
        from core.evaluation.chat import answer

        if not prompt or not prompt.strip():
            raise ManagerError("type a prompt first")
        asked = self.chat_settings(asked_as or target)
        if system_prompt is not None:
            asked["system_prompt"] = system_prompt
        if response_prefix is not None:
            asked["response_prefix"] = response_prefix

        def job() -> str:
            self._ensure_model_for(target)
            adapter = self._resolve_target(target)
            return answer(self._engine, self._tokenizer, prompt, adapter=adapter, system_prompt=asked["system_prompt"],
                          response_prefix=asked["response_prefix"], chat_template=asked["chat_template"],
                          max_tokens=int(max_tokens), temperature=float(temperature), stop_at=asked["stop_at"])

        return self._call(job)

    _adapter_of = None  # the trainer whose weights the live model's adapter holds (None: a fresh adapter)

    def current_adapter(self) -> dict | None:
        """Which run's weights "current" holds: {"run", "step"} of the trainer that last trained (or
        resumed into) the live model's adapter, None for a fresh adapter (a new model, or a run's start
        before its trainer exists). Set on the worker (`_train_job`, `_fresh_adapter`, `_drop_model`);
        read inside a job, beside `_resolve_target`, it names what that job measured."""
        trainer = self._adapter_of
        return None if trainer is None else {"run": trainer.run.name, "step": int(trainer.step)}

    def _owner_of(self, target: str) -> dict | None:
        """`current_adapter()` where `target` is the current adapter; None for a checkpoint or the base
        (they name themselves). On the worker, beside `_resolve_target`."""
        return self.current_adapter() if target in (None, "", "current") else None

    def adapter_change(self, target: str = "current") -> dict | None:
        """How far `target`'s adapter has moved the base model (core.runs.adapter_change): {matrices,
        nonzero, delta_norm, largest_b, moved}; `moved` False = every LoRA B matrix is exactly zero,
        the adapter is the base. None for 'base', or 'current' before any model is loaded."""
        from core.runs.adapter_change import checkpoint_change, model_change

        if target in (None, "", "base"):
            return None
        if target != "current":
            return checkpoint_change(self._checkpoint_path(target))  # a file read: no worker needed

        def job() -> dict | None:  # the trained adapter is the live model's "default" one (_resolve_target)
            return model_change(self._model) if self._model is not None else None

        return self._call(job)

    def _call(self, job):
        try:
            return self.worker.call(job)
        except ManagerError:
            raise
        except Exception as e:
            raise ManagerError(user_message(e)) from e

    def evaluate(self, target: str = "current", n: int = 20, data_cfg: DataConfig | None = None,
                 max_tokens: int | None = None) -> dict:
        """Greedy answers on `n` held-out rows from the base model and from `target`:
        {'base': {accuracy, format_rate, n, cut_rate}, 'tuned': {...}, 'items': [per-question rows],
        'max_tokens': the answers' token limit (the run's max completion tokens unless given)}."""
        stages = self.evaluate_stages(target, n, data_cfg, max_tokens)
        while True:
            try:
                next(stages)
            except StopIteration as done:
                return done.value

    def evaluate_stages(self, target: str = "current", n: int = 20, data_cfg: DataConfig | None = None,
                        max_tokens: int | None = None):
        """`evaluate` as a generator, for a page that shows which side answers: yields `(stage, facts)`
        before each side's answers ("base", then "tuned"; facts: {"questions", "max_tokens"}), and
        returns `evaluate`'s result (`StopIteration.value`). The two sides are two jobs on the model
        worker: a training step may run between them (the tuned side is named as it answered)."""
        from core.data import DataError, load_task_data
        from core.evaluation.evaluate import evaluate

        cfg = None
        if target not in (None, "", "base", "current"):
            cfg = self._checkpoint_config(self._checkpoint_path(target))
        cfg = cfg or self._cfg or self.default_config()
        rows = None
        if data_cfg is None and self._task is not None and cfg is self._cfg:
            rows = self._task.eval
        if rows is None:
            self._check_paths(data_cfg or cfg.data)  # a request's data, or a run folder's
            try:
                rows = load_task_data(data_cfg or cfg.data).eval
            except DataError as e:
                raise ManagerError(f"data: {e}") from e
        if not rows:
            raise ManagerError("the data has no held-out rows: set eval_size above 0 (Data tab), or add "
                               "questions: a file with fewer than 2 distinct questions has none to hold out")
        kw = dict(system_prompt=cfg.data.system_prompt, chat_template=cfg.data.chat_template,
                  response_prefix=cfg.data.response_prefix, max_items=int(n),
                  max_tokens=int(max_tokens or cfg.algorithm.max_completion_length),
                  max_prompt_length=cfg.algorithm.max_prompt_length, stop_at=cfg.data.stop_at)

        def job(side: str, model_key=None):
            self._ensure_model_for(target)
            if side == "base":
                return evaluate(self._engine, self._tokenizer, rows, adapter=None, **kw), self._model_key
            if self._model_key != model_key:  # a Start between the two sides loaded another model
                raise ManagerError("the model changed while the base model answered (a run started with another "
                                   "model): evaluate again once it has loaded")
            adapter, owner = self._resolve_target(target), self._owner_of(target)
            return evaluate(self._engine, self._tokenizer, rows, adapter=adapter, **kw), owner

        facts = {"questions": min(len(rows), int(n)), "max_tokens": kw["max_tokens"]}
        yield "base", facts
        base, model_key = self._call(lambda: job("base"))
        yield "tuned", facts
        tuned, owner = self._call(lambda: job("tuned", model_key))
        items = [{"question": b["question"], "answer": b["answer"], "base": b["completion"],
                  "base_correct": b["correct"], "tuned": t["completion"], "tuned_correct": t["correct"],
                  "base_cut": b["cut"], "tuned_cut": t["cut"]}
                 for b, t in zip(base["items"], tuned["items"], strict=True)]
        pick = ("accuracy", "accuracy_flexible", "format_rate", "n", "cut_rate")
        return {"base": {k: base[k] for k in pick}, "tuned": {k: tuned[k] for k in pick}, "items": items,
                "max_tokens": kw["max_tokens"], "adapter_of": owner}

    def retention(self, target: str = "current", n_prompts: int = 60, n_task: int = 10, max_tokens: int = 128) -> dict:
        """Off the trained task, base vs `target` (core.evaluation.retention.measure_retention): the first
        `n_prompts` general prompts, `n_task` questions of each built-in task not trained on."""
        from core.evaluation.retention import GENERAL_PROMPTS, measure_retention

        cfg = None
        checkpoint = None
        if target not in (None, "", "base", "current"):
            checkpoint = self._checkpoint_path(target)
            cfg = self._checkpoint_config(checkpoint)
        cfg = cfg or self._cfg or self.default_config()

        def job() -> dict:
            self._ensure_model_for(target)
            adapter, owner = self._resolve_target(target), self._owner_of(target)
            result = measure_retention(self._engine, self._tokenizer, self._model, adapter, source=cfg.data.source,
                                       prompts=GENERAL_PROMPTS[:max(1, int(n_prompts))], n_task=int(n_task),
                                       max_tokens=int(max_tokens), chat_template=cfg.data.chat_template,
                                       checkpoint=checkpoint, stop_at=cfg.data.stop_at)
            return {**result, "adapter_of": owner}

        return self._call(job)

    def try_rewards(self, rewards_cfg: RewardsConfig, data_cfg: DataConfig, n: int = 4,
                    max_tokens: int = 128, temperature: float = 1.0,
                    progress: Callable[[float, str, dict], None] | None = None) -> pd.DataFrame:
        """Score `n` completions sampled from the current model, plus one ideally formatted
        reference answer per question, with each reward: one column per reward and the total.
        Completions reach the rewards as in training and TRL: `[{"role": "assistant", "content": ...}]`.
        `df.attrs["notes"]` holds what the rewards' notes say (a custom reward replaced a preset).

        `progress(fraction, stage, facts)` hears of each stage before it starts, on the calling
        thread (the stages of `try_rewards_stages`).
        """
        report = progress or (lambda fraction, stage, facts: None)
        stages = self.try_rewards_stages(rewards_cfg, data_cfg, n, max_tokens, temperature)
        try:
            while True:
                try:
                    report(*next(stages))
                except StopIteration as done:
                    return done.value
        finally:
            stages.close()  # a `progress` that raised: the generator's own cleanup (reward workers) now

    def try_rewards_stages(self, rewards_cfg: RewardsConfig, data_cfg: DataConfig, n: int = 4,
                           max_tokens: int = 128, temperature: float = 1.0):
        """`try_rewards` as a generator, for a caller that shows each stage as it starts (the page's
        Try on samples): yields `(fraction, stage, facts)` before each stage, and returns the
        scored table (`StopIteration.value`). Stages: "data"; "sampling" ({"completions",
        "max_tokens", "load_model": the model loads first, "after_step": a training step finishes
        first}), the slow one on a CPU; "scoring" ({"completions", "rewards"}).
        """
        from core.data import DataError, build_messages, load_task_data, prompt_ids
        from core.engines.base import SamplingSettings, stop_texts
        from core.rewards.base import RewardError
        from core.rewards.registry import RewardSet

        yield 0.0, "data", {}
        self._check_paths(data_cfg)
        try:
            task = load_task_data(dataclasses.replace(data_cfg, train_size=min(data_cfg.train_size, 200),
                                                      eval_size=min(data_cfg.eval_size, 20)))
        except DataError as e:
            raise ManagerError(f"data: {e}") from e
        rows = task.train[: max(1, int(n))]
        try:
            rewards = RewardSet.from_config(rewards_cfg)
        except RewardError as e:
            raise ManagerError(reward_message(e)) from e
        template = data_cfg.chat_template

        # each question twice: the model's completion, then a reference in the target format
        references = [f"<think>\nThe answer is {r['answer']}.\n</think>\n<answer>\n{r['answer']}\n</answer>"
                      for r in rows]

        def job() -> list[tuple[str, list[int], list[int]]]:
            self._ensure_model_for("current")
            tok = self._tokenizer
            # whole: a few questions of the data, asked as its config renders them
            prompts = [prompt_ids(tok, build_messages(r["question"], data_cfg.system_prompt), template,
                                  data_cfg.response_prefix, max_length=None) for r in rows]
            adapter = self._resolve_target("current")
            groups = self._engine.generate(prompts, SamplingSettings(
                n=1, temperature=temperature, max_tokens=int(max_tokens), seed=0,
                stop=stop_texts(data_cfg.stop_at)), adapter)
            return [(data_cfg.response_prefix + g[0].text, list(g[0].token_ids),
                     tok(ref, add_special_tokens=False)["input_ids"]) for g, ref in zip(groups, references)]

        try:
            yield 0.1, "sampling", {"completions": len(rows), "max_tokens": int(max_tokens),
                                    "load_model": self._model is None, "after_step": self._state == "running"}
            sampled = self._call(job)
            yield 0.9, "scoring", {"completions": 2 * len(rows), "rewards": len(rewards.names)}
            table = []  # (row, source, completion text, completion token ids)
            for r, (text, ids, ref_ids), ref in zip(rows, sampled, references, strict=True):
                table.append((r, "model", text, ids))
                table.append((r, "reference", ref, ref_ids))
            prompts = [build_messages(r["question"], data_cfg.system_prompt) for r, *_ in table]
            completions = [[{"role": "assistant", "content": c}] for _, _, c, _ in table]
            columns = {k: [r.get(k) for r, *_ in table] for k in rows[0] if k != "prompt"}
            columns["completion_ids"] = [ids for *_, ids in table]  # as training passes it (core/rl/rollouts.py)
            scored = rewards(prompts, completions, columns)
        except RewardError as e:
            raise ManagerError(reward_message(e)) from e
        finally:
            rewards.close()
        df = pd.DataFrame({
            "question": [r["question"] for r, *_ in table],
            "answer": [r["answer"] for r, *_ in table],
            "source": [s for _, s, *_ in table],
            "completion": [c for _, _, c, _ in table],
        })
        for name, values in scored.per_reward.items():
            df[name] = values
        df["total"] = scored.total
        df.attrs["notes"] = list(rewards.notes)
        return df

    # -- data helpers for the UI -------------------------------------------------------
    def _tokenizer_for(self, model_cfg: ModelConfig | None):
        """The loaded tokenizer when it matches, else one loaded on its own (cheap, cached)."""
        from core.models.loading import load_tokenizer, resolve_model_path

        model_cfg = model_cfg or self.default_model
        path = resolve_model_path(model_cfg.name_or_path)
        if self._model_key is not None and self._model_key[0] == path and self._tokenizer is not None:
            return self._tokenizer
        if path not in self._tokenizers:
            self._tokenizers[path] = load_tokenizer(path)
        return self._tokenizers[path]

    def preview_data(self, data_cfg: DataConfig, model_cfg: ModelConfig | None = None, n: int = 5) -> dict:
        """{'table': the first rows as the model sees them, 'train': n, 'eval': n, 'columns', 'notes'}."""
        from core.data import DataError, load_task_data, preview

        self._check_paths(data_cfg)
        try:
            task = load_task_data(data_cfg)
            try:
                self._check_paths(model_cfg=model_cfg or self.default_model)
                tok = self._tokenizer_for(model_cfg)
            except Exception:  # no model reachable yet: render with the plain default template
                tok = None
            column = data_cfg.curriculum_column.strip()
            first = None
            if column and data_cfg.curriculum_steps > 0:  # the questions a curriculum starts on
                from core.data.order import easiest_rows

                first = easiest_rows(task.train, column, n)
            table = preview(task, tok, data_cfg.system_prompt, data_cfg.chat_template, n=n,
                            response_prefix=data_cfg.response_prefix, rows=first)
        except DataError as e:
            raise ManagerError(f"data: {e}") from e
        return {"table": table, "train": len(task.train), "eval": len(task.eval), "columns": task.columns,
                "distinct": len({r["question"] for r in task.train}),
                "notes": task.notes}

    def table_columns(self, source: str, split: str = "train", subset: str = "") -> list[str]:
        """Column names of a file, folder or hub dataset (for the column-mapping dropdowns)."""
        from core.data import DataError, load_table

        self._check_paths(DataConfig(source=source))
        try:
            return [str(c) for c in load_table(source, split=split, subset=subset).columns]
        except DataError as e:
            raise ManagerError(f"data: {e}") from e

    def usable_rows(self, source: str, prompt_column: str, answer_column: str, split: str = "train",
                    subset: str = "") -> int:
        """How many rows of `source` a run can train on with these columns; a ManagerError when none is
        (every answer empty, say): the Data tab refuses such an upload before it becomes the source, as
        it does a file it cannot read, instead of Start failing on it later."""
        from core.data import DataError, load_table, task_rows

        self._check_paths(DataConfig(source=source))
        try:
            table = load_table(source, split=split, subset=subset)
            return len(task_rows(table, prompt_column, answer_column, where=source))
        except DataError as e:
            raise ManagerError(f"data: {e}") from e

    def store_upload(self, path: str) -> str:
        """Copy an uploaded data file into the uploads folder under a name holding its content
        hash, so a run's data never changes under it (core/runs/access.py). Past the uploads quota the
        oldest uploads that no run (nor the active one) uses are deleted first."""
        try:
            return str(self.paths.store_upload(path, in_use=self._uploads_in_use()))
        except AccessError as e:
            raise ManagerError(str(e)) from None

    def discard_upload(self, stored: str, current: str = "") -> bool:
        """Delete an upload stored a moment ago that did not parse (it would count to the quota
        for nothing), unless a run, the active one or the page's `current` source uses it."""
        return self.paths.discard_upload(stored, in_use=self._uploads_in_use() | {current})

    def _uploads_in_use(self) -> set[str]:
        """The data sources of every run's config.yaml and of the active run: uploads never deleted."""
        from core.runs.folders import data_sources

        in_use = data_sources(self.runs_dir)
        if self._cfg is not None:
            in_use.add(self._cfg.data.source)
        return in_use
