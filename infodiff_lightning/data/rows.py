"""Reading the rows of user tables safely: one bad field costs one row, and no path leaves
its folder.

The released files and the user's tables (caption tables, mask tables, ranking JSON,
localization JSON) name images by paths relative to a root folder and carry captions as
strings. Two rules hold for every reader:

* **Paths stay inside their root.** An absolute path, a ``..`` that climbs out, or a link
  that resolves outside is refused before the file system is asked anything about it, and
  the refusal names the field and row, not the path (never whether such a file exists or
  what it is).
* **Rows are checked one by one.** A row whose caption, word or path is missing, null, not
  a string or empty is a failure of that row, recorded with the file, line and field; the
  other rows are read. A table that cannot be a table at all (unknown suffix, no header,
  not a JSON list) or that has no usable row (most likely the wrong file or layout) is a
  mistake of the whole job.

Tables are read as UTF-8, with or without a byte-order mark; a line that is not valid
UTF-8 or not valid JSON is a failure of that row.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path, PurePath
from typing import Any

from ..conditions import shorten

__all__ = ["RowError", "inside", "text_field", "read_text", "read_json", "read_table", "some_usable"]


class RowError(ValueError):
    """A row that cannot be used; the rest of its table can."""


def inside(root: Path, name: Any, field: str) -> Path:
    """``root / name`` when ``name`` is a relative path that stays inside ``root``; a
    :class:`RowError` otherwise (checked on the text first, then on the resolved path,
    so links out of the folder are refused too)."""
    name = text_field({field: name}, field)
    pure = PurePath(name)
    if pure.is_absolute() or pure.drive or ".." in pure.parts:
        raise RowError(f"{field} is not a path inside the folder (absolute paths and '..' are refused)")
    path = root / name
    top = root.resolve()
    resolved = path.resolve()
    if resolved != top and top not in resolved.parents:
        raise RowError(f"{field} leads outside the folder (through a link)")
    return path


def text_field(row: dict, field: str) -> str:
    """The stripped, non-empty string in ``row[field]``; a :class:`RowError` naming the
    field when it is missing, null, not a string or empty."""
    value = row.get(field) if isinstance(row, dict) else None
    if value is not None and not isinstance(value, str):
        raise RowError(f"field {field!r} must be text, got {type(value).__name__} {shorten(str(value))}")
    if value is None or not value.strip():
        raise RowError(f"field {field!r} is missing or empty")
    return value.strip()


def read_text(path: Path) -> str:
    """The text of ``path`` as UTF-8 (a byte-order mark is dropped); a ValueError naming
    the file and line of the first invalid byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path.name} line {line}: not valid UTF-8 (byte {e.start})") from None


def read_json(path: Path) -> Any:
    """The JSON document in ``path``; a ValueError naming the file, line and column."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path.name} line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None


def _jsonl_rows(path: Path) -> list[tuple[int, Any, str]]:
    rows = []
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            rows.append((n, None, "not valid UTF-8"))
            continue
        except json.JSONDecodeError as e:
            rows.append((n, None, f"not a JSON object ({e.msg})"))
            continue
        rows.append((n, obj, "" if isinstance(obj, dict) else "not a JSON object"))
    return rows


def read_table(path: str | Path, fields: tuple[str, ...]) -> list[dict]:
    """The rows of a JSONL or CSV table in file order, each ``{field: stripped text, ...,
    "line": n, "error": ""}``, or with ``error`` saying which field of which line is
    unusable (its fields then absent). A table whose suffix, header or encoding makes it
    unreadable as a whole raises a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        raw = _jsonl_rows(path)
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
        missing = [k for k in fields if k not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path.name}: no column {missing[0]!r} (the header needs {', '.join(fields)})")
        raw = [(n, row, "") for n, row in enumerate(reader, 2)]
    else:
        raise ValueError(f"table {path.name}: expected a .jsonl or .csv file")
    out = []
    for n, row, error in raw:
        entry = {"line": n, "error": ""}
        try:
            if error:
                raise RowError(error)
            entry.update({key: text_field(row, key) for key in fields})
        except RowError as e:
            entry = {"line": n, "error": f"{path.name} line {n}: {e}"}
        out.append(entry)
    if not out:
        raise ValueError(f"{path.name}: no rows")
    return out


def some_usable(errors: list[str], name: str) -> None:
    """Raise a ValueError when every row of table ``name`` is unusable (``errors``: one
    per row, "" for a usable one): that is the wrong file or layout, not bad rows."""
    if errors and all(errors):
        raise ValueError(f"{errors[0]} (no row of {name} is usable)")
