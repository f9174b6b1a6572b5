"""What leaves the app: a checkpoint's adapter as a zip, merged into a 16-bit model, or pushed to
the Hugging Face Hub (the token never kept, never in a message).

Owns: `Exports`, a part of `RunManager`. Refuses to know: training, engines.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import zipfile
from pathlib import Path

from core.errors import user_message
from core.app.messages import ManagerError, redact


class Exports:
    """Adapter exports (see the module docstring)."""

    # -- export ------------------------------------------------------------------------
    def export_adapter_zip(self, checkpoint: str) -> str:
        """A zip of the adapter (peft format) and the run's config, ready to download."""
        path = self._checkpoint_path(checkpoint)
        run_dir = path.parent.parent
        out_dir = run_dir / "exports"
        out_dir.mkdir(exist_ok=True)
        out = out_dir / f"{run_dir.name}-{path.name}-adapter.zip"
        from core.export.model_card import export_files

        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in export_files(path, self._checkpoint_model_cfg(path).name_or_path).items():
                zf.writestr(name, data)
        return str(out)

    def merge_and_save(self, checkpoint: str, out_dir: str | None = None, dtype: str = "bfloat16") -> str:
        """Base + adapter merged into one model (peft merge_and_unload), saved as 16-bit safetensors."""
        import torch

        from core.models.loading import load_base_model, load_tokenizer, resolve_model_path

        path = self._checkpoint_path(checkpoint)
        model_cfg = dataclasses.replace(self._checkpoint_model_cfg(path), dtype="float32", load_in_4bit=False,
                                        gradient_checkpointing=False)
        out = Path(out_dir) if out_dir else path.parent.parent / "exports" / f"{path.name}-merged"
        torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]

        def job() -> str:
            from peft import PeftModel

            # a separate copy on the CPU, in float32 for the merge arithmetic: the live model stays untouched
            base = load_base_model(model_cfg, "cpu")
            merged = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
            merged.config.use_cache = True
            tmp = out.with_name(f".tmp-{out.name}")
            shutil.rmtree(tmp, ignore_errors=True)
            merged.to(torch_dtype).save_pretrained(tmp, safe_serialization=True)
            load_tokenizer(resolve_model_path(model_cfg.name_or_path)).save_pretrained(tmp)
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
            del base, merged
            self._free_memory()
            return str(out)

        return self._call(job)

    def push_to_hub(self, checkpoint: str, repo_id: str, token: str, merged: bool = False,
                    private: bool = True) -> str:
        """Upload the adapter (or the merged model) to a Hub model repo; returns its URL.

        The token is used for this call only: never stored, logged or put in an error message.
        """
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo_id or ""):
            raise ManagerError("repo id must look like 'your-name/model-name'")
        if not token or not token.strip():
            raise ManagerError("a Hugging Face token with write access is needed (huggingface.co/settings/tokens)")
        token = token.strip()
        path = self._checkpoint_path(checkpoint)
        try:
            if merged:
                folder = Path(self.merge_and_save(str(path)))
            else:
                folder = path.parent.parent / "exports" / f"{path.name}-adapter"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                from core.export.model_card import export_files

                for name, data in export_files(path, self._checkpoint_model_cfg(path).name_or_path).items():
                    (folder / name).write_bytes(data)
            from huggingface_hub import HfApi

            api = HfApi(token=token)
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                              commit_message=f"Aha Studio: {path.parent.parent.name} {path.name}")
            return str(url)
        except ManagerError as e:
            raise ManagerError(redact(str(e), token)) from None
        except Exception as e:
            # `from None`: the original exception (and any token inside it) is not chained
            raise ManagerError(redact(f"push to the Hub failed: {user_message(e)}", token)) from None
