"""Which server paths a request may name: the runs folder, the uploads folder, the operator's data roots.

Owns: `PathPolicy`, the one answer to "may the app read (or write next to) this path for a
person using the page", and the uploads folder's files: each upload is stored under a name that
holds its content hash, so a second upload of the same name never replaces the data an earlier
run's config.yaml points to. A page (or a script calling the page's API) sends text that names a
data source, a checkpoint or a model; without this check it could make the server read any
`datasets` folder, serve `<any path>/../../config.yaml`, or write an export next to any folder
holding an adapter (issue 19). The policy:

- data sources: a built-in task, a hub dataset id, or a file / folder inside the uploads folder
  or a data root the operator configured (`python app.py --data-dir /data`);
- checkpoints, run configs and their exports: inside the runs folder;
- models: the bundled default, the operator's `--model`, a hub id, or a folder inside the runs
  folder (merged exports) or a data root.

The uploads folder has a quota (`--uploads-quota-mb`, `$AHA_UPLOADS_QUOTA_MB`, 1 GB by default):
an upload that would pass it first deletes the oldest uploads no run uses (the caller names the
ones in use: the runs' data sources), and is refused when that is not enough (issue 29).

Every path is resolved (symlinks, `..`) before it is compared, and a refusal reads the same
whether or not the path exists, so it tells nothing about the rest of the disk.

Refuses to know: how data, checkpoints or models are read (`core.data`, `core.rl.trainer`,
`core.models.loading`); HTTP. Scripts that build a `RunManager` themselves get the same policy.

    >>> policy = PathPolicy("/srv/runs", data_dirs=["/srv/data"])
    >>> policy.data_source("builtin:decimal_compare"), policy.data_source("openai/gsm8k")
    ('builtin:decimal_compare', 'openai/gsm8k')
    >>> policy.data_source("/srv/data/train.csv")
    '/srv/data/train.csv'
    >>> policy.data_source("/srv/data/../../etc/passwd.csv")
    Traceback (most recent call last):
    ...
    core.runs.access.AccessError: '/srv/data/../../etc/passwd.csv' is outside the folders this app may read data from: the uploads folder (/srv/runs/_uploads) and the data folders given with --data-dir (/srv/data)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from pathlib import Path
from typing import Iterable

from core.errors import AhaError

UPLOADS = "_uploads"  # the uploads folder's name inside the runs folder
DEFAULT_UPLOADS_QUOTA_MB = 1024
_TMP_PREFIX = ".tmp-"  # an upload being copied in: not yet a stored upload
BUILTIN_PREFIX = "builtin:"

# A hub id: one name or owner/name of letters, digits, '_', '-', '.', not starting with '.' or
# '-' (the same shape core/data/loaders.py sends to the hub); anything else is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9_][\w.-]*(/[A-Za-z0-9_][\w.-]*)?$")


class AccessError(AhaError, ValueError):
    """A request named a path outside the folders the app serves; the message says which are allowed."""


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def upload_name(source: str) -> str:
    """The name a person uploaded a stored file under (`PathPolicy.store_upload` keeps it as
    `name-<sha256[:16]>.ext` in the uploads folder), from the text alone; any other source as it is.

    >>> upload_name("/srv/runs/_uploads/sums-0123456789abcdef.csv"), upload_name("builtin:addition")
    ('sums.csv', 'builtin:addition')
    """
    path = Path(source)
    m = re.fullmatch(r"(.+)-[0-9a-f]{16}(\.[A-Za-z0-9]+)", path.name)
    return m.group(1) + m.group(2) if m and path.parent.name == UPLOADS else source


def resolve_uploads_quota_mb(value: float | None = None) -> float:
    """The uploads quota in MB: `value` when given, else $AHA_UPLOADS_QUOTA_MB, else 1024.

    >>> resolve_uploads_quota_mb(5), resolve_uploads_quota_mb(None) > 0
    (5.0, True)
    """
    if value is None:
        text = os.environ.get("AHA_UPLOADS_QUOTA_MB", "").strip()
        try:
            value = float(text) if text else DEFAULT_UPLOADS_QUOTA_MB
        except ValueError:
            raise ValueError(f"AHA_UPLOADS_QUOTA_MB must be a number of MB, not {text!r}") from None
    if not value > 0:
        raise ValueError(f"the uploads quota must be a positive number of MB, not {value}")
    return float(value)


class PathPolicy:
    """The folders requests may name (see the module docstring)."""

    def __init__(self, runs_dir: str | Path, data_dirs: list[str | Path] | tuple = (),
                 models: list[str] | tuple = (), uploads_quota_mb: float | None = None):
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.uploads_dir = self.runs_dir / UPLOADS
        self.data_dirs = [Path(d).expanduser().resolve() for d in data_dirs]
        self.models = {str(Path(m).expanduser().resolve()) for m in models if m}  # the operator's choices
        self.uploads_quota_bytes = int(resolve_uploads_quota_mb(uploads_quota_mb) * 2**20)
        self._uploads_lock = threading.Lock()  # two uploads at once count the quota one after the other

    # -- what the operator configured, in words ------------------------------------
    def _data_roots_text(self) -> str:
        text = f"the uploads folder ({self.uploads_dir})"
        if self.data_dirs:
            return text + f" and the data folders given with --data-dir ({', '.join(map(str, self.data_dirs))})"
        return text + " (start the app with --data-dir FOLDER to allow a folder of your data)"

    @staticmethod
    def _resolve(text: str) -> Path:
        return Path(os.path.abspath(Path(text).expanduser())).resolve()

    # -- the three kinds of path -----------------------------------------------------
    def data_source(self, source: str) -> str:
        """`source` when a request may load it: a built-in task, a hub id (that is not also a
        local path), or a file / folder under the uploads folder or a data root."""
        text = (source or "").strip()
        if not text or text.startswith(BUILTIN_PREFIX):
            return text  # nothing to read from the disk (the loader explains an empty source)
        if _HUB_ID.match(text) and not Path(text).expanduser().exists():
            return text
        if _inside(self._resolve(text), [self.uploads_dir, *self.data_dirs]):
            return text
        raise AccessError(f"{text!r} is outside the folders this app may read data from: "
                          f"{self._data_roots_text()}")

    def in_runs(self, path: str | Path, what: str = "path") -> Path:
        """`path` resolved, when it lies inside the runs folder (checkpoints, configs, exports)."""
        resolved = self._resolve(str(path))
        if not _inside(resolved, [self.runs_dir]) or resolved == self.runs_dir:
            raise AccessError(f"{what} {str(path)!r} is not inside the runs folder ({self.runs_dir})")
        return resolved

    def model_source(self, name_or_path: str) -> str:
        """`name_or_path` when a request may load it as a model: '' (the bundled default), the
        operator's --model, a hub id, or a folder inside the runs folder or a data root."""
        text = (name_or_path or "").strip()
        if not text or text == "default":
            return text
        if _HUB_ID.match(text) and not Path(text).expanduser().exists():
            return text
        resolved = self._resolve(text)
        if str(resolved) in self.models or _inside(resolved, [self.runs_dir, *self.data_dirs]):
            return text
        raise AccessError(f"model folder {text!r} is outside the folders this app may load models from: "
                          f"the runs folder ({self.runs_dir}), the model the app was started with"
                          + (f" and the data folders given with --data-dir ({', '.join(map(str, self.data_dirs))})"
                             if self.data_dirs else " (start the app with --data-dir FOLDER to allow more)")
                          + "; a hub id is always allowed")

    # -- the uploads folder -------------------------------------------------------
    def store_upload(self, path: str | Path, max_bytes: int | None = None, in_use: Iterable[str] = ()) -> Path:
        """Copy an uploaded data file into the uploads folder as `name-<sha256[:16]>.ext`; the
        same bytes uploaded twice share one copy, other bytes under the same name get their own.

        Past the quota, the oldest uploads not named in `in_use` (data sources of runs) are
        deleted first; when that does not make room the upload is refused."""
        from core.data import DEFAULT_MAX_BYTES, FILE_FORMATS

        max_bytes = max_bytes or DEFAULT_MAX_BYTES
        src = Path(path)
        suffix = src.suffix.lower()
        if suffix not in FILE_FORMATS:
            raise AccessError(f"{src.name}: unsupported file type '{suffix or '(none)'}'; "
                              f"upload one of {', '.join(sorted(FILE_FORMATS))}")
        size = src.stat().st_size
        if size > max_bytes:
            raise AccessError(f"{src.name} is {size / 2**20:.0f} MB; uploads are limited to "
                              f"{max_bytes / 2**20:.0f} MB (load large datasets by hub id or folder)")
        if size == 0:
            raise AccessError(f"{src.name} is empty")
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        # copy and hash in one pass into a temporary name, then move into place: never a half file
        tmp = self.uploads_dir / f"{_TMP_PREFIX}{threading.get_ident()}-{time.time_ns()}"
        digest = hashlib.sha256()
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    digest.update(chunk)
                    fout.write(chunk)
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", src.stem)[:80] or "upload"
            dest = self.uploads_dir / f"{stem}-{digest.hexdigest()[:16]}{suffix}"
            with self._uploads_lock:
                if dest.exists():  # the same bytes uploaded before: that copy serves both, newest again
                    os.utime(dest)
                else:
                    self._make_room(tmp.stat().st_size, in_use)
                    os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def discard_upload(self, path: str | Path, in_use: Iterable[str] = ()) -> bool:
        """Delete a stored upload the app refused (it did not parse), unless a run or the page's
        current source (`in_use`) names it; returns whether it went. Only files directly in the
        uploads folder: never a file of a --data-dir folder."""
        target = self._resolve(str(path))
        if target.parent != self._resolve(str(self.uploads_dir)) or not target.is_file():
            return False
        for source in in_use:
            with contextlib.suppress(OSError, ValueError):
                if source and self._resolve(source) == target:
                    return False
        with self._uploads_lock:
            target.unlink(missing_ok=True)
        return True

    def _make_room(self, size: int, in_use: Iterable[str]) -> None:
        """Delete the oldest uploads no run uses until `size` more bytes fit in the quota, or
        raise AccessError (deleting nothing) when even that would not make room."""
        used_by_runs = set()
        for source in in_use:
            with contextlib.suppress(OSError, ValueError):
                used_by_runs.add(self._resolve(source))
        stored = []  # (mtime, path, bytes) of every stored upload
        for p in self.uploads_dir.iterdir():
            with contextlib.suppress(OSError):
                if p.is_file() and not p.name.startswith(_TMP_PREFIX):
                    st = p.stat()
                    stored.append((st.st_mtime, p, st.st_size))
        total = sum(n for _, _, n in stored)
        over = total + size - self.uploads_quota_bytes
        if over <= 0:
            return
        free = sorted((entry for entry in stored if entry[1].resolve() not in used_by_runs),
                      key=lambda entry: entry[0])  # oldest first
        if sum(n for _, _, n in free) < over:
            quota = self.uploads_quota_bytes / 2**20
            raise AccessError(
                f"the uploads folder is full: this file ({size / 2**20:.3g} MB) would take it past its "
                f"quota of {quota:.3g} MB, and {(total - sum(n for _, _, n in free)) / 2**20:.3g} MB of it "
                "are the data of existing runs (an upload is kept while a run's config.yaml names it); "
                "ask the operator to remove old runs or to raise the quota (--uploads-quota-mb, "
                "$AHA_UPLOADS_QUOTA_MB), or load the data by hub id")
        for _, p, n in free:  # the oldest first, until the new file fits
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            over -= n
            if over <= 0:
                break
