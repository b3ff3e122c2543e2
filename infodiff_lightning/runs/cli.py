"""What train.py and analyze.py share: a quiet console, a progress bar in optimizer
steps, run identities (resume), and one-line configuration errors.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from jsonargparse import Namespace
from lightning.pytorch.callbacks import Callback, ProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf
from lightning.pytorch.cli import LightningCLI

from .checkpoints import load_checkpoint
from ..io import write_json_atomic
from .run_inputs import check_inputs, fingerprint, input_paths
from .run_lock import check_free, lock_run_folder

__all__ = ["os_error_line", "quiet_console", "StepProgressBar", "run_identity", "root_cause", "config_error", "DEBUG_ENV",
           "EXIT_CONFIG_ERROR", "finish_distributed", "InfodiffCLI", "AnalyzeCLI", "OPERATIONAL_OPTIONS", "RemoveEmptyRunOnFailure"]

#: Set this environment variable to 1 to see full tracebacks of configuration errors.
DEBUG_ENV = "INFODIFF_DEBUG"
#: Exit status of a run stopped by a configuration mistake (before anything was computed).
EXIT_CONFIG_ERROR = 2

#: Console lines that teach nothing about this run (advertising, internal deprecations,
#: a frozen VAE / text encoder kept in eval mode on purpose, a rank without probe items).
_NOISY_MESSAGES = (
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r"Found \d+ module\(s\) in eval mode at the start of training.*",
    r"The ``compute`` method of metric \w+ was called before the ``update`` method.*",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless" not in record.getMessage()


def quiet_console() -> None:
    """Filter the warnings and log lines listed above (the entry points call it first)."""
    for pattern in _NOISY_MESSAGES:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTips())


class StepProgressBar(TQDMProgressBar):
    """Training progress in optimizer steps out of ``max_steps`` (with an ETA), not in
    batches of an epoch count that step-limited runs leave at -1; no ``v_num``."""

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        if trainer.max_steps > 0:
            self.train_progress_bar.reset(total=trainer.max_steps)
            self.train_progress_bar.initial = 0
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_description("Training step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.max_steps <= 0:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        bar = self.train_progress_bar
        if bar is not None and not bar.disable and self._should_update(trainer.global_step, convert_inf(bar.total)):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def run_identity(config: dict, operational: Iterable[str]) -> str:
    """A short hash of a resolved config without its purely operational options
    (dotted keys such as "trainer.devices"): two runs with the same identity compute the
    same numbers, so the second one may continue the first one's folder."""
    config = json.loads(json.dumps(config, default=str))
    for key in operational:
        *path, last = key.split(".")
        parent = config
        for part in path:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(last, None)
    text = json.dumps(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (jsonargparse wraps constructor errors in a
    "Does not validate against any of the Union subtypes" error)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def config_error(error: BaseException, what: str) -> int:
    """Print a configuration mistake as one line (the full chain with INFODIFF_DEBUG=1)
    and return the exit status."""
    if os.environ.get(DEBUG_ENV) == "1":
        raise error
    cause = root_cause(error)
    print(f"error: {what}: {cause}", file=sys.stderr)
    return EXIT_CONFIG_ERROR


def os_error_line(error: OSError) -> str:
    """An OS error in one line that names its path: "No space left on device: runs/x/y"."""
    what = error.strerror or str(error)
    path = error.filename if error.filename is not None else ""
    return f"{what}: {path}" if path else what


def finish_distributed() -> None:
    """End a finished multi-process run cleanly: wait for every rank, then destroy the
    process group.

    Lightning leaves the process group alive when ``fit``/``test`` return; the interpreter
    then tears it down at exit, racing gloo's worker threads, and a process can die of
    SIGABRT ("terminate called without an active exception") after its results are
    written. Called only on the success path: every rank gets here, so the barrier cannot
    hang.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- analyze.py

#: Options that change how a job runs, not what it computes: a run that differs from an
#: earlier one only in these continues the earlier one's folder.
OPERATIONAL_OPTIONS = (
    "config", "fresh", "seed_everything",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.precision",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.enable_checkpointing",
    "trainer.logger", "trainer.default_root_dir", "trainer.callbacks",
    "data.init_args.num_workers", "data.init_args.batch_size", "data.init_args.eval_batch_size",
    "model.init_args.microbatch", "model.init_args.batch_size", "model.init_args.log_images",
    "model.init_args.fail_fast",
)


class RemoveEmptyRunOnFailure(Callback):
    """A run that fails before its first optimizer step leaves nothing worth keeping but a
    folder (config.yaml, empty event files) that would shift the next run's version
    number: remove it, on rank zero, if it holds nothing else."""

    KEEP_IF_PRESENT = ("checkpoints", "diffusers", "per_image", "summary.json")
    #: What a folder may hold and still count as empty.
    EMPTY = ("config.yaml", "hparams.yaml", "inputs.json", ".lock")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero or trainer.global_step > 0 or not folder.is_dir() or \
                folder.resolve() == Path(trainer.default_root_dir).resolve():
            return
        names = [p.name for p in folder.iterdir()]
        if any(n.startswith(self.KEEP_IF_PRESENT) for n in names):
            return
        if all(n in self.EMPTY or n.startswith("events.out.tfevents") for n in names):
            shutil.rmtree(folder)


class InfodiffCLI(LightningCLI):
    """LightningCLI with the step progress bar (unless the config turns progress bars off
    or brings its own), no empty run folder left by a run that failed at start-up, and
    checkpoints loaded weights-only: ``--ckpt_path`` must be a local file that torch's
    weights-only unpickler accepts (checked right after parsing, before LightningCLI reads
    the checkpoint's hyperparameters; a URL or a file that would run code is refused in one
    line), and ``--weights_only false`` is refused."""

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        if "weights_only" in cfg:
            if cfg.weights_only is False:
                raise ValueError("--weights_only false is refused: a checkpoint loaded that way can run code")
            cfg.weights_only = True
        if cfg.get("ckpt_path"):
            load_checkpoint(cfg.ckpt_path, "--ckpt_path")

    def instantiate_trainer(self, **kwargs):
        trainer_cfg = self._get(self.config_init, "trainer", default={})  # under the subcommand for train.py
        callbacks = trainer_cfg.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        extra = [RemoveEmptyRunOnFailure()]
        if trainer_cfg.get("enable_progress_bar", True) is not False and \
                not any(isinstance(c, ProgressBar) for c in callbacks):
            extra.append(StepProgressBar())
        kwargs["callbacks"] = callbacks + extra
        return super().instantiate_trainer(**kwargs)


def _launching_process() -> bool:
    """Whether this is the process a user started (rank zero), not one Lightning launched
    for another rank of the same job (those have LOCAL_RANK / NODE_RANK set)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


class AnalyzeCLI(InfodiffCLI):
    """The analysis jobs' CLI: a run folder named by the run's identity (so the same
    command continues an interrupted run), ``--fresh`` to start afresh."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--fresh", type=bool, default=False,
                            help="start afresh: move an earlier run folder of the same identity aside "
                                 "(<folder>.superseded-<time>) instead of continuing it")

    #: The run folder (None without a versioned logger) and the folders the run writes to.
    run_folder: Path | None = None
    outputs: tuple[Path, ...] = ()
    _lock = None
    _inputs: dict | None = None

    def before_instantiate_classes(self) -> None:
        cfg = self.config
        logger = cfg.trainer.logger
        if not (isinstance(logger, Namespace) and "init_args" in logger and "version" in logger.init_args):
            return  # no versioned logger: the run folder is trainer.default_root_dir
        if logger.init_args.version is None:
            logger.init_args.version = "run-" + run_identity(cfg.as_dict(), OPERATIONAL_OPTIONS)
        args = logger.init_args
        folder = Path(args.save_dir) / (args.name or "") / str(args.version)
        self.run_folder = folder
        self.outputs = tuple(Path(p) for p in (args.save_dir, cfg.trainer.default_root_dir) if p)
        if not folder.exists() or not _launching_process():
            return  # a new run; or another rank of this job, launched by the process holding the lock
        check_free(folder)  # no other job in it, before it is continued or moved aside
        if cfg.fresh:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            folder.rename(folder.with_name(f"{folder.name}.superseded-{stamp}"))
        else:  # a continued run: the inputs it started with
            check_inputs(folder, self.input_fingerprint(), write=False)

    def input_fingerprint(self) -> dict:
        """The fingerprint of the files the model and data options name, taken once per
        process (the data folders are walked once, not at each check)."""
        if self._inputs is None:
            self._inputs = fingerprint(input_paths(self.config.as_dict(), exclude=self.outputs))
        return self._inputs

    def claim_run_folder(self) -> None:
        """Lock the run folder for this job and save the fingerprint of its inputs there
        (in the launching process only: the other ranks belong to the same job). Called
        once the job is known to be valid, so that a mistaken job leaves no folder."""
        if self.run_folder is None or not _launching_process():
            return
        self._lock = lock_run_folder(self.run_folder)  # held until released or the process ends
        check_inputs(self.run_folder, self.input_fingerprint(), write=True)

    def mark_stopped(self, error: BaseException) -> None:
        """Record in the run folder's status.json that the run stopped, and why (best
        effort: the disk may be the reason)."""
        if self.run_folder is None or not _launching_process() or not self.run_folder.is_dir():
            return
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else \
            (os_error_line(error) if isinstance(error, OSError) else f"{type(error).__name__}: {error}")
        try:
            write_json_atomic(self.run_folder / "status.json", {"status": "stopped", "reason": reason[:2000]})
        except OSError:
            pass

    def release_run_folder(self) -> None:
        """Release the run folder's lock (a no-op where none is held)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()
