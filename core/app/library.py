"""The run library: run folders read for the app (metrics, samples, checkpoints, configs), runs
left behind by a process that died, and a run folder checked before it is trusted.

Owns: `RunLibrary`, a part of `RunManager` (reads `runs_dir`, `paths`, the active run's name).
Refuses to know: models, engines, training.
"""

from __future__ import annotations

import dataclasses

import json
import time
from pathlib import Path

import pandas as pd

from core.runs.access import AccessError
from core.config import Config, ConfigError, DataConfig, ModelConfig, RewardsConfig
from core.models.bundled import DEFAULT_MODEL_NAME
from core.app.messages import ManagerError


def rewards_label(cfg: Config) -> str:
    """The rewards a run scored with, as the runs table shows them: the presets, then its own code
    (whose functions pay beside or instead of them).

    >>> cfg = Config()
    >>> cfg.rewards.names, cfg.rewards.custom_code = ["correctness"], "def r(completions, **kw): ..."
    >>> rewards_label(cfg)
    'correctness, custom code'
    """
    return ", ".join(list(cfg.rewards.names) + (["custom code"] if cfg.rewards.custom_code.strip() else []))


class RunLibrary:
    """Run folders read for the app (see the module docstring)."""

    def _offer_interrupted(self) -> None:
        """At start-up: runs left `running` by a process that is gone become `interrupted`, and
        when the newest run is one of them the Train tab shows it with Resume ready."""
        from core.runs.folders import list_runs

        runs = list_runs(self.runs_dir)
        self._earlier_runs = len(runs)  # an idle page says where they are (the Runs tab), not "no run yet"
        for run in runs:
            run.mark_if_interrupted()
        newest = runs[0] if runs else None
        status = newest.read_status() if newest is not None else {}
        if status.get("state") != "interrupted":
            return
        try:
            self._cfg = newest.load_config()
        except Exception:  # a hand-edited config: Resume will say what is wrong with it
            self._cfg = None
        self._run_name, self._state = newest.name, "interrupted"
        self._last_step = int(status.get("step") or 0)
        self._note = status.get("reason", "")
        self._error = status.get("error", "")

    def _check_paths(self, data_cfg: DataConfig | None = None, model_cfg: ModelConfig | None = None) -> None:
        """Refuse a data source or model folder outside the folders requests may name (core/runs/access.py)."""
        try:
            if data_cfg is not None:
                self.paths.data_source(data_cfg.source)
            if model_cfg is not None:
                self.paths.model_source(model_cfg.name_or_path)
        except AccessError as e:
            raise ManagerError(str(e)) from None

    @staticmethod
    def _refuse_links_outside(folder: Path, what: str) -> None:
        """ManagerError when a link in `folder` leads outside it: the app would read, write or
        delete (keep_checkpoints) where the link points."""
        from core.runs.folders import links_outside

        outside = links_outside(folder)
        if outside:
            raise ManagerError(f"{what}: links in its folder lead outside it ({'; '.join(outside[:3])}); "
                               "replace them with the files themselves")

    def _trusted_run_config(self, run, run_code: bool, rewards: RewardsConfig | None = None) -> Config:
        """The config of a run folder about to be resumed, once the folder passed the checks of
        `resume`; ManagerError saying what to do otherwise. Rewards the person gave in place of the
        folder's (`rewards`, when they differ) are theirs: the folder's code then never runs."""
        from core.rewards.registry import same_rewards
        from core.runs.folders import knows_reward_code, remember_reward_code

        try:
            cfg = run.load_config()
        except ConfigError as e:
            raise ManagerError(f"run '{run.name}': its config.yaml is not valid ({e})") from e
        self._check_paths(cfg.data, cfg.model)
        if rewards is not None and not same_rewards(rewards, cfg.rewards):
            remember_reward_code(self.runs_dir, rewards.custom_code)
        elif not knows_reward_code(self.runs_dir, cfg.rewards.custom_code):
            if not run_code:
                raise ManagerError(
                    f"run '{run.name}' holds custom reward code this app has not run (a folder copied in, or a "
                    f"config edited by hand), and Resume would run it on this server: read rewards.custom_code "
                    f"in {run.config_path.name} first, then resume with 'Run its reward code' ticked (Runs tab)")
            remember_reward_code(self.runs_dir, cfg.rewards.custom_code)
        return cfg

    def _run_dir(self, run_name: str):
        from core.runs.folders import RunDir, sanitize_run_name

        if not run_name:
            raise ManagerError("no run given")
        path = self.runs_dir / sanitize_run_name(run_name)
        if not (path / "config.yaml").exists():
            raise ManagerError(f"no run named '{run_name}' in {self.runs_dir}")
        return RunDir(path)

    def _named_or_current(self, run_name: str | None):
        name = run_name or self._run_name
        if not name:
            return None
        return self._run_dir(name)

    def metrics(self, run_name: str | None = None) -> pd.DataFrame:
        """One row per step (TRL's metric names as columns); empty when there is no run."""
        run = self._named_or_current(run_name)
        rows = run.read_metrics() if run is not None else []
        return pd.DataFrame(rows)

    def samples(self, run_name: str | None = None, last: int = 20) -> pd.DataFrame:
        """The newest `last` logged samples, newest first, one column per reward function."""
        run = self._named_or_current(run_name)
        rows = run.read_samples()[-last:] if run is not None else []
        flat = []
        for r in reversed(rows):
            row = {k: r.get(k) for k in ("step", "question", "answer", "completion", "reward", "advantage")}
            for name, value in (r.get("rewards") or {}).items():
                row[name] = value
            flat.append(row)
        return pd.DataFrame(flat, columns=None if flat else
                            ["step", "question", "answer", "completion", "reward", "advantage"])

    def list_runs(self) -> list[dict]:
        """Runs in the runs folder, newest first, with what the runs table shows."""
        from core.rl.algorithms import ignored_fields
        from core.runs.folders import list_runs

        out = []
        for run in list_runs(self.runs_dir):
            status = run.read_status()
            try:
                cfg = run.load_config()
                source = cfg.data.source  # a file's name, not where the server keeps it
                model, task, rewards = (cfg.model.name_or_path or DEFAULT_MODEL_NAME,
                                        Path(source).name if Path(source).is_absolute() else source,
                                        rewards_label(cfg))
                a = cfg.algorithm  # the loss type beside the name, where the algorithm reads it (the GRPO family)
                algorithm = a.algorithm if "loss_type" in ignored_fields(a.algorithm) else f"{a.algorithm} ({a.loss_type})"
            except Exception:  # a hand-edited config: still list the run
                model = task = rewards = algorithm = "?"
            state = status.get("state", "unknown")
            if run.name == self._run_name:  # the manager's own run: its word is the newest
                state = self.status()["state"]
            elif run.mark_if_interrupted():  # its process died since start-up (a headless run, say)
                state = "interrupted"
            metrics = run.read_metrics()
            reward = metrics[-1].get("reward") if metrics and isinstance(metrics[-1], dict) else None
            if isinstance(reward, bool) or not isinstance(reward, (int, float)):
                reward = None  # a hand-edited log: the list shows no reward rather than failing
            out.append({
                "run": run.name, "state": state, "step": status.get("step", len(metrics)),
                "max_steps": status.get("max_steps"), "reward": reward,
                "algorithm": algorithm, "model": model, "data": task, "rewards": rewards,
                "checkpoints": len(run.checkpoints()),
                "updated": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.last_written())),
            })
        return out

    def checkpoints(self, run_name: str | None = None) -> list[str]:
        """The run's complete checkpoint folders, oldest first."""
        run = self._named_or_current(run_name)
        return [str(p) for p in run.checkpoints()] if run is not None else []

    def config_path(self, run_name: str | None = None, checkpoint: str | None = None) -> str:
        """The config.yaml of the run `checkpoint` belongs to, else of `run_name` or the current run."""
        if checkpoint:
            path = self._checkpoint_path(checkpoint).parent.parent / "config.yaml"
            if path.exists():
                return str(path)
        run = self._named_or_current(run_name)
        if run is None:
            raise ManagerError("there is no run yet")
        return str(run.config_path)

    # -- chat and evaluation -----------------------------------------------------------
    def _checkpoint_path(self, checkpoint: str) -> Path:
        """A checkpoint folder inside the runs folder (runs/<run>/checkpoints/step-N): what the
        app reads, exports next to (<run>/exports) and serves the config of (<run>/config.yaml)."""
        try:
            path = self.paths.in_runs(checkpoint, "checkpoint")
            self.paths.in_runs(path.parent.parent, "checkpoint")  # a run folder holds it
        except AccessError as e:
            raise ManagerError(str(e)) from None
        if not (path / "adapter_model.safetensors").exists():
            raise ManagerError(f"{checkpoint} is not a checkpoint folder (no adapter_model.safetensors)")
        self._refuse_links_outside(path, path.name)  # an export would zip the file a link points to
        return path

    def _checkpoint_config(self, path: Path) -> Config | None:
        """The config of the run a checkpoint belongs to (runs/<run>/checkpoints/step-N)."""
        from core.evaluation.chat import checkpoint_run_config

        return checkpoint_run_config(path)

    def _checkpoint_model_cfg(self, path: Path) -> ModelConfig:
        cfg = self._checkpoint_config(path)
        if cfg is not None:  # serving a checkpoint never trains: its run's compile setting does not apply
            return dataclasses.replace(cfg.model, compile_layers=False)
        adapter_cfg = json.loads((path / "adapter_config.json").read_text())
        return ModelConfig(name_or_path=adapter_cfg.get("base_model_name_or_path") or "")

    def thinking_growth(self, run_name: str | None = None) -> dict | None:
        """A logged sample from early in the run and one from late (core.evaluation.evaluate.grown_thinking)."""
        from core.evaluation.evaluate import grown_thinking

        run = self._named_or_current(run_name)
        return grown_thinking(run.read_samples()) if run is not None else None

    # -- past runs ------------------------------------------------------------------
    def load_run(self, run_name: str, checkpoint: str | None = None) -> dict:
        """Make an old run's checkpoint (its latest by default; or by name, step-000300, or path)
        ready to chat with in Compare. A checkpoint of another run is refused."""
        run = self._run_dir(run_name)
        cps = run.checkpoints()
        if not cps:
            raise ManagerError(f"run '{run_name}' has no checkpoint yet")
        if checkpoint and "/" not in checkpoint and "\\" not in checkpoint:
            checkpoint = str(run.path / "checkpoints" / checkpoint)  # a name: step-000300
        path = self._checkpoint_path(checkpoint) if checkpoint else cps[-1]
        if path.resolve() not in {p.resolve() for p in cps}:
            raise ManagerError(f"{Path(checkpoint).name} is not a checkpoint of run '{run.name}' "
                               f"(it has {', '.join(p.name for p in cps)})")
        key = str(path.resolve())
        self._call(lambda: (self._ensure_model_for(key), self._resolve_target(key)))
        return {"run_name": run.name, "checkpoint": key, "checkpoints": [str(p.resolve()) for p in cps]}
