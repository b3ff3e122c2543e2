"""One job at a time in a run folder.

Two identical commands started together would both measure every sample and append
duplicate records to the same files. A job therefore holds an advisory lock
(``fcntl.flock``) on ``<run folder>/.lock`` while it runs; a second job that finds it held
stops in one line. The operating system releases the lock when its process ends, however
it ends, so a job killed with SIGKILL leaves nothing that blocks the resume.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

__all__ = ["LOCK_FILE", "RunFolderBusy", "lock_run_folder", "check_free"]

LOCK_FILE = ".lock"


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock."""


def check_free(folder: Path) -> None:
    """Raise :class:`RunFolderBusy` when another process holds the lock of an existing run
    ``folder`` (checked early, before a model is loaded; creates nothing)."""
    if (folder / LOCK_FILE).is_file():
        lock_run_folder(folder).close()


def lock_run_folder(folder: Path) -> IO:
    """Take the lock of ``folder`` (created if missing) and return the open lock file,
    which holds the lock until it is closed or the process ends. Raises
    :class:`RunFolderBusy` naming the holder's pid when another process has it."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunFolderBusy(f"another job (pid {holder}) is running in {folder}; wait for it to finish, "
                            "then run the same command again to continue or check its results") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
