"""What a run read: the files behind its options, so that a resumed run can tell when
they changed.

A run folder is named by the run's identity (its resolved config less operational
options, cli.py). The same options can name different data after an edit (a caption
rewritten, an image replaced, a model re-exported to the same folder): continuing the
old run would mix records of the old inputs into the new summary. So every string option
under ``model`` and ``data`` that names an existing file or folder is *fingerprinted*
(each file's size and modification time, and for files up to 64 KiB, such as caption
tables and configs, also a SHA-256 of the content, which catches an edit that keeps both;
images and weights are only stat'ed, so a large data folder costs no reading at start-up),
saved as ``inputs.json`` beside the records, and compared when the run is continued.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

__all__ = ["INPUTS_FILE", "input_paths", "fingerprint", "changes", "check_inputs"]

#: The file in a run folder that holds the fingerprint of the run's inputs.
INPUTS_FILE = "inputs.json"
#: Files up to this size are hashed as well as stat'ed.
HASH_LIMIT = 1 << 16


def _strings(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _strings(v, f"{prefix}[{i}]")
    elif isinstance(value, str) and value:
        yield prefix, value


def input_paths(config: dict, sections: tuple[str, ...] = ("model", "data"),
                exclude: tuple[Path, ...] = ()) -> dict[str, Path]:
    """Option name -> path, for every string option under ``sections`` that names an
    existing file or folder (outside the ``exclude`` folders, e.g. the output root)."""
    out = {}
    excluded = [e.resolve() for e in exclude]
    for section in sections:
        for name, value in _strings(config.get(section) or {}, section):
            if "\n" in value or len(value) > 4096:
                continue
            path = Path(value)
            try:
                exists = path.exists()
            except OSError:
                continue
            if exists and not any(path.resolve() == e or e in path.resolve().parents for e in excluded):
                out[name] = path
    return out


def _file_entry(path: Path) -> list:
    st = path.stat()
    entry = [st.st_size, st.st_mtime_ns]
    if st.st_size <= HASH_LIMIT:
        entry.append(hashlib.sha256(path.read_bytes()).hexdigest())
    return entry


def fingerprint(paths: dict[str, Path]) -> dict[str, dict[str, list]]:
    """Option name -> {file relative to the option's path: [size, mtime_ns(, sha256)]}."""
    out = {}
    for name, path in paths.items():
        if path.is_file():
            out[name] = {path.name: _file_entry(path)}
            continue
        files = {}
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for f in sorted(filenames):
                p = Path(dirpath) / f
                files[p.relative_to(path).as_posix()] = _file_entry(p)
        out[name] = files
    return out


def changes(old: dict, new: dict, limit: int = 3) -> list[str]:
    """What differs between two fingerprints, one phrase per option."""
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None or b is None:
            out.append(f"{name} {'is new' if a is None else 'no longer names a file'}")
            continue
        def same(x, y):  # a copy with the same content but a new time still counts as the same
            return x[0] == y[0] and (x[2:] == y[2:] if len(x) > 2 and len(y) > 2 else x[1] == y[1])
        modified = [f for f in sorted(set(a) & set(b)) if not same(a[f], b[f])]
        added, removed = sorted(set(b) - set(a)), sorted(set(a) - set(b))
        parts = []
        for label, files in (("modified", modified), ("added", added), ("removed", removed)):
            if files:
                shown = ", ".join(files[:limit]) + (f" and {len(files) - limit} more" if len(files) > limit else "")
                parts.append(f"{len(files)} {label} ({shown})")
        if parts:
            out.append(f"{name}: " + "; ".join(parts))
    return out


def check_inputs(folder: Path, current: dict, write: bool = True) -> None:
    """Compare the fingerprint ``current`` of a run's inputs (:func:`fingerprint`) with the
    one saved in its ``folder``; raise a one-line ValueError naming what changed. A folder
    without a fingerprint (new, or from an older version) gets one when ``write``."""
    saved_file = folder / INPUTS_FILE
    if saved_file.is_file():
        try:
            saved = json.loads(saved_file.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{saved_file}: unreadable ({e}); rerun with --fresh true to start afresh") from None
        diff = changes(saved, current)
        if diff:
            raise ValueError(f"the inputs of the run in {folder} changed since it started: {'; '.join(diff)}. "
                             "Its records describe the old inputs: rerun with --fresh true to start afresh "
                             "(the old run is kept beside it)")
        return
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = saved_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, indent=1, sort_keys=True))
        os.replace(tmp, saved_file)
