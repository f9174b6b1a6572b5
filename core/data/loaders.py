"""Read a table of examples from wherever the user keeps it: a DataFrame, a file, a folder, the hub.

Owns: turning a source into one pandas DataFrame, and every way that can fail. Each failure is a
`DataError` whose message names the file, the line or byte offset when known, and what to do
about it, so the UI can show it unchanged. Text files are read as UTF-8 text and CSV cells stay
text: '007' and '9.90' reach the reward function as the user wrote them.

Refuses to know: what the columns mean (question and answer are `core.data.task`'s business),
train / held-out splitting, chat templates. `datasets` is imported only when a folder or a hub id
needs it, so importing this module stays cheap.

    >>> import pandas as pd
    >>> load_table(pd.DataFrame({"prompt": ["1+1?"], "answer": ["2"]})).to_dict("records")
    [{'prompt': '1+1?', 'answer': '2'}]
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from pathlib import Path

import pandas as pd

from .base import DataError

DEFAULT_MAX_BYTES = 200 * 1024 * 1024

# File extension -> reader. Anything else is refused by name rather than guessed at.
FILE_FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")

# Extensions that mean "the user meant a file" even when it does not exist, so a typo in a
# path says "no such file" instead of sending the name to the hub.
_FILE_LIKE = FILE_FORMATS + (".txt", ".xlsx", ".xls", ".arrow", ".gz", ".zip", ".ndjson")

# A hub dataset id: one name, or owner/name, each of letters, digits, '_', '-' and '.', not
# starting with '.' or '-'. Anything else (leading '/', './', '~', more slashes) is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9_][\w.-]*(/[A-Za-z0-9_][\w.-]*)?$")


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------
def load_table(
    source, *, split: str = "train", subset: str = "", max_bytes: int = DEFAULT_MAX_BYTES
) -> pd.DataFrame:
    """Read `source` into a DataFrame with at least one row.

    `source` is a DataFrame, a path to a .csv / .tsv / .jsonl / .json / .parquet file, a folder
    written by `datasets` (`save_to_disk`, a Dataset or a DatasetDict) or holding data files, or
    a hub dataset id. `split` picks the split of a DatasetDict folder or a hub dataset; sources
    with a single table ignore it. `max_bytes` caps the size of a file (or of a loaded dataset).
    """
    # 1) already a table
    if isinstance(source, pd.DataFrame):
        if len(source) == 0:
            raise DataError("the DataFrame has no rows")
        return source.copy()
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"cannot read data from a {type(source).__name__}; give a DataFrame, a file path, "
            "a folder or a hub dataset id"
        )
    # 2) a local file or folder
    text = os.fspath(source).strip()
    if not text:
        raise DataError("no data source given: name a file, a folder or a hub dataset id")
    path = Path(text).expanduser()
    if path.is_dir():
        return _read_folder(path, text, split, max_bytes)
    if path.is_file():
        return _read_file(path, text, max_bytes)
    if _looks_like_path(text):
        raise DataError(f"{text}: no such file or folder")
    # 3) a hub dataset id
    return _read_hub(text, subset, split, max_bytes)


def split_names(source, subset: str = "") -> list[str]:
    """Named splits of `source`; [] for sources that are a single table (a DataFrame, a file).

    A hub id costs one request to the hub.
    """
    if isinstance(source, pd.DataFrame):
        return []
    text = os.fspath(source).strip()
    path = Path(text).expanduser()
    if path.is_file():
        return []
    if path.is_dir():
        kind = _saved_kind(path)
        if kind == "dict":
            return list(_load_from_disk(path, text).keys())
        if kind == "dataset":
            return []
    elif _looks_like_path(text):
        raise DataError(f"{text}: no such file or folder")
    import datasets

    try:
        return list(datasets.get_dataset_split_names(text, subset or None))
    except Exception as e:  # the hub raises a zoo of types (connection, not found, bad config)
        raise DataError(_hub_message(text, subset, None, e)) from e


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
def _read_file(path: Path, where: str, max_bytes: int) -> pd.DataFrame:
    ext = path.suffix.lower()
    if ext not in FILE_FORMATS:
        raise DataError(
            f"{where}: unsupported file type '{ext or '(none)'}'; use {', '.join(FILE_FORMATS)} "
            "or a folder saved by `datasets`"
        )
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(
            f"{where}: the file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit "
            "(max_bytes); use a smaller sample or a folder saved by `datasets`"
        )
    if size == 0:
        raise DataError(f"{where}: the file is empty")

    if ext == ".parquet":
        try:
            table = pd.read_parquet(path)
        except Exception as e:  # pyarrow's errors (ArrowInvalid, OSError) carry the useful text
            raise DataError(f"{where}: not a readable Parquet file ({_first_line(e)})") from e
    else:
        text = _decode_utf8(path.read_bytes(), where)
        if not text.strip():
            raise DataError(f"{where}: the file is empty (only whitespace)")
        if ext in (".csv", ".tsv"):
            table = _parse_csv(text, where, delimiter="\t" if ext == ".tsv" else ",")
        elif ext == ".jsonl":
            table = _parse_jsonl(text, where)
        else:
            table = _parse_json(text, where)
    if len(table) == 0:
        raise DataError(f"{where}: the file has no rows")
    return table


def _decode_utf8(raw: bytes, where: str) -> str:
    """UTF-8 text without its byte-order mark; a bad byte is reported by offset and line."""
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = skip + e.start
        line = raw.count(b"\n", 0, offset) + 1
        hint = "save it as UTF-8 (in Excel: 'CSV UTF-8')"
        if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            hint = "it looks like UTF-16; " + hint
        raise DataError(
            f"{where}: not UTF-8 text: byte 0x{raw[offset]:02x} at byte offset {offset} "
            f"(line {line}) is not valid UTF-8; {hint}"
        ) from None


def _parse_csv(text: str, where: str, delimiter: str) -> pd.DataFrame:
    # The csv module, not pandas, because it stops at a broken quote and knows the line number;
    # pandas' C parser silently glues a stray quote into the cell.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    start = 1  # physical line where the record being read begins
    try:
        for record in reader:
            if not record:  # blank line
                start = reader.line_num + 1
                continue
            if header is None:
                header = _csv_header(record, where)
            elif len(record) > len(header):
                raise DataError(
                    f"{where}, line {start}: {len(record)} fields but the header has "
                    f"{len(header)}; a value containing '{delimiter}' must be in double quotes"
                )
            else:
                # Short rows are padded, as pandas does: trailing empty cells are often left off.
                rows.append(record + [""] * (len(header) - len(record)))
            start = reader.line_num + 1
    except csv.Error as e:
        if "end of data" in str(e):
            raise DataError(
                f"{where}, line {start}: not valid CSV: a quoted field opened here is never "
                "closed (the file ends inside quotes)"
            ) from None
        hint = '; a quote inside a quoted field must be doubled ("")' if "expected after" in str(e) else ""
        raise DataError(f"{where}, line {reader.line_num}: not valid CSV ({e}){hint}") from None
    if header is None:
        raise DataError(f"{where}: the file is empty")
    if not rows:
        raise DataError(f"{where}: the file has a header but no rows")
    return pd.DataFrame(rows, columns=header)


def _csv_header(record: list[str], where: str) -> list[str]:
    header = [name if name.strip() else f"column_{i + 1}" for i, name in enumerate(record)]
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(f"{where}, line 1: column {name!r} appears twice in the header")
        seen.add(name)
    return header


def _parse_jsonl(text: str, where: str) -> pd.DataFrame:
    records = []
    # split("\n"), not splitlines(): JSON strings may hold a raw U+2028, which splitlines breaks on.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{where}, line {number}: not valid JSON ({e.msg} at column {e.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{where}, line {number}: expected a JSON object {{...}}, got {_json_type(obj)}"
            )
        records.append(obj)
    return pd.DataFrame.from_records(records)


def _parse_json(text: str, where: str) -> pd.DataFrame:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON Lines saved with a .json name: a common export
            return _parse_jsonl(text, where)
        raise DataError(
            f"{where}, line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})"
        ) from None
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        record_lists = [v for v in lists.values() if v and all(isinstance(x, dict) for x in v)]
        columns = lists and len(lists) == len(data) and len({len(v) for v in lists.values()}) == 1
        if columns and (len(lists) > 1 or not record_lists):
            return pd.DataFrame(data)  # column form: {"prompt": [...], "answer": [...], "meta": [{...}, ...]}
        # (a lone {"data": [{...}, ...]} is the wrapped form, not one column of objects: a walkthrough's
        # upload read as a column named `data`)
        if len(record_lists) != 1:
            raise DataError(
                f"{where}: expected a list of objects [{{...}}, ...], a mapping of equal-length "
                "columns, or one key holding a list of objects"
            )
        data = record_lists[0]  # wrapped form: {"data": [{...}, ...], "version": ...}
    if not isinstance(data, list):
        raise DataError(f"{where}: expected a list of objects [{{...}}, ...], got {_json_type(data)}")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise DataError(f"{where}: item {i} is {_json_type(item)}, expected an object {{...}}")
    return pd.DataFrame.from_records(data)


def _json_type(value) -> str:
    names = {list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------
# Folders and the hub (through `datasets`)
# ---------------------------------------------------------------------------
def _saved_kind(path: Path) -> str | None:
    """'dict' or 'dataset' for a folder written by `save_to_disk`, None for anything else."""
    if (path / "dataset_dict.json").is_file():
        return "dict"
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        return "dataset"
    return None


def _load_from_disk(path: Path, where: str):
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except Exception as e:  # a half-written or foreign folder: arrow, json or OS errors
        raise DataError(f"{where}: could not read the saved dataset ({_first_line(e)})") from e


def _read_folder(path: Path, where: str, split: str, max_bytes: int) -> pd.DataFrame:
    kind = _saved_kind(path)
    if kind is None:
        # A folder of data files (a cloned hub repo, say): `datasets` finds the splits by name.
        return _read_hub(str(path), "", split, max_bytes, where=where)
    saved = _load_from_disk(path, where)
    if kind == "dict":
        if split not in saved:
            raise DataError(f"{where}: no split {split!r}; it has {', '.join(map(repr, saved))}")
        saved = saved[split]
    return _dataset_to_frame(saved, f"{where} [{split}]" if kind == "dict" else where, max_bytes)


def _read_hub(name: str, subset: str, split: str, max_bytes: int, where: str = "") -> pd.DataFrame:
    import datasets

    try:
        ds = datasets.load_dataset(name, subset or None, split=split)
    except Exception as e:  # the hub raises a zoo of types (connection, not found, bad config)
        raise DataError(_hub_message(name, subset, split, e, where)) from e
    return _dataset_to_frame(ds, where or f"hub dataset {name!r} [{split}]", max_bytes)


def _dataset_to_frame(ds, where: str, max_bytes: int) -> pd.DataFrame:
    nbytes = ds.data.nbytes
    if nbytes > max_bytes:
        raise DataError(
            f"{where}: {nbytes / 1e6:.1f} MB of data, over the {max_bytes / 1e6:.1f} MB limit "
            "(max_bytes)"
        )
    if len(ds) == 0:
        raise DataError(f"{where}: the dataset has no rows")
    return ds.to_pandas()


def _hub_message(name: str, subset: str, split: str | None, e: Exception, where: str = "") -> str:
    what = where or f"hub dataset {name!r}"
    if subset:
        what += f" (subset {subset!r})"
    if split:
        what += f", split {split!r}"
    advice = "check the name, subset and split"
    if not where:
        advice += ", your internet connection (downloads need the hub), or give a local file"
    return f"{what}: could not load it ({type(e).__name__}: {_first_line(e)}); {advice}"


def _looks_like_path(text: str) -> bool:
    return not _HUB_ID.match(text) or text.lower().endswith(_FILE_LIKE)


def source_kind(source: str) -> str:
    """What a data source's text names, read from the text alone (no disk, no network: a page
    asking must not learn which paths exist): "builtin", "file" (a file or folder) or "hub".

    >>> [source_kind(s) for s in (" builtin:addition", "/runs/_uploads/a-1f.csv", "sums.csv", "openai/gsm8k", "")]
    ['builtin', 'file', 'file', 'hub', 'file']
    """
    from .builtin import BUILTIN_PREFIX

    text = (source or "").strip()
    if text.startswith(BUILTIN_PREFIX):
        return "builtin"
    return "file" if not text or _looks_like_path(text) else "hub"


def _first_line(e: Exception, limit: int = 300) -> str:
    line = (str(e).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
