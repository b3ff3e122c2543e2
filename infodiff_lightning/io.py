"""Result writing: run folders, summary JSON (atomic, rank zero only), logged scalars."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["run_dir", "strict_json", "json_line", "read_records", "write_json_atomic", "log_scalars"]


def run_dir(trainer) -> Path:
    """The run folder of a trainer: the logger's versioned folder, else default_root_dir.

    ``trainer.log_dir`` is a broadcast under DDP: call this on every rank."""
    path = Path(trainer.log_dir or trainer.default_root_dir)
    return path


def strict_json(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, inf: an undefined standard error, say)
    replaced by None, so that it serialises as standard JSON (null), which every reader
    accepts; Python's default writes bare NaN, which is not JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    return data


def json_line(record: Any) -> str:
    """One strict-JSON line (for JSONL records)."""
    return json.dumps(strict_json(record), allow_nan=False) + "\n"


def read_records(folder: Path, stem: str) -> list[dict]:
    """Every whole record of ``<stem>.rank*.jsonl`` in ``folder`` (a torn last line is skipped)."""
    rows = []
    for path in sorted(Path(folder).glob(f"{stem}.rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: its sample is measured again
    return rows


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write strict JSON through a temporary file and rename, so a killed job never leaves
    half a file. The file is readable by all (0644), like the job's other outputs
    (a temporary file is created 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(strict_json(data), f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def log_scalars(trainer, values: dict[str, float], step: int) -> None:
    """Write scalars to every logger of ``trainer``, on rank zero only.

    For values that are already reduced across processes (a torchmetric's compute()):
    ``LightningModule.log(..., sync_dist=True)`` would reduce them a second time."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        logger.log_metrics(dict(values), step=step)
