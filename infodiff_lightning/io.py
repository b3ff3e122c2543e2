"""Result writing: run folders, summary JSON (atomic, rank zero only)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["run_dir", "write_json_atomic"]


def run_dir(trainer) -> Path:
    """The run folder of a trainer: the logger's versioned folder, else default_root_dir.

    ``trainer.log_dir`` is a broadcast under DDP: call this on every rank."""
    path = Path(trainer.log_dir or trainer.default_root_dir)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON through a temporary file and rename, so a killed job never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path
